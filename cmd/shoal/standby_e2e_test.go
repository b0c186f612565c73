package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/leader"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// owner names the replica holding an ownership key, waiting until one does.
func (s *stack) owner(key string) string {
	s.t.Helper()
	kv, err := s.env.JS.KeyValue(context.Background(), s.env.Names.OwnersBucket())
	if err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rec, _, err := leader.Owner(context.Background(), kv, key)
		if err == nil && rec.Holder != "" {
			return rec.Holder
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("nobody owns %s: %v", key, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStandbysTakeOverFromCrashedOwners runs two planners and two archives, kills (without
// any release) whichever replica of each owns the run while the run is going, and checks that
// the standbys finish it: every task has exactly one result and the archive counted each once.
func TestStandbysTakeOverFromCrashedOwners(t *testing.T) {
	s := startStack(t)
	s.start("planner#b")
	s.start("archive#b")
	const run, budget = "standby", 60
	s.seed(run, exampleDir(t), fmt.Sprintf(mutateConfig, budget))
	s.waitFor(run, "progress", time.Minute, func(pst *protocol.PlannerState, st *protocol.RunState) bool {
		return st.Iterations >= 15
	})
	// The replicas named b were started second; the first ones carry the default names.
	stackName := func(service, holder string) string {
		if holder == "b" {
			return service + "#b"
		}
		return service
	}
	plannerOwner := s.owner(leader.Key("planner", run))
	archiveOwner := s.owner(leader.Key("archive", "all-runs"))
	crashed := time.Now()
	s.crash(stackName("planner", plannerOwner))
	s.crash(stackName("archive", archiveOwner))

	st := s.waitDone(run, 2*time.Minute)
	t.Logf("run done %s after the owners crashed", time.Since(crashed).Round(100*time.Millisecond))
	if p, a := s.owner(leader.Key("planner", run)), s.owner(leader.Key("archive", "all-runs")); p == plannerOwner || a == archiveOwner {
		t.Errorf("owners after the crash: planner %q (was %q), archive %q (was %q); want the standbys", p, plannerOwner, a, archiveOwner)
	}
	if st.Iterations != budget {
		t.Errorf("archive counted %d iterations, want %d", st.Iterations, budget)
	}
	seen := map[string]int{}
	for _, r := range s.results(run) {
		if !r.Candidate.IsSeed() {
			seen[r.Candidate.TaskID]++
		}
	}
	if len(seen) != budget {
		t.Errorf("RESULTS holds results of %d distinct tasks, want %d", len(seen), budget)
	}
	for id, n := range seen {
		if n > 1 || !strings.HasPrefix(id, run+".t") {
			t.Errorf("task %s: %d results", id, n)
		}
	}
}
