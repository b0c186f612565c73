package generator_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/services/generator"
	"github.com/shoal-run/shoal/services/generator/internal/launch/launchtest"
)

// TestQueuedReplicaHandsTasksBack: on a host with room for one server of the model, a second
// replica's claim waits in the lease queue for as long as the first server lives. Tasks that
// reach the second replica must not wait with it: they go back to the queue and the replica
// whose server is up serves them. `make chaos` once found eight tasks held this way for
// minutes, which stalled a run.
func TestQueuedReplicaHandsTasksBack(t *testing.T) {
	launchtest.NoLeaks(t)
	dir := t.TempDir()
	launchtest.KillGroups(t, dir)
	// Each reply takes a while, so the first replica is still busy when tasks reach the second.
	server := launchtest.Recorded(dir, "python3 "+launchtest.Standin(t)+" --port {port} --reply-delay 0.4")
	ps := launchtest.Profiles(t, launchtest.Profile("standin", server, `
    health_path: /health
    startup_timeout: 60
    variants:
      - {name: only, need_gib: 16, group_sizes: [1]}
`))
	cfg := launchConfig(launchModel("coder", "standin"))
	e := start(t, generator.Config{ID: "gen-a", GPUs: "1x24GiB", Host: testHost, Concurrency: 1, Profiles: ps}, map[string]string{"r1": cfg})
	e.publish(t, promptTask("r1", "r1.t0", "coder"))
	if c := e.candidates(t, 1)[0]; c.Rejected != "" {
		t.Fatalf("first candidate rejected: %s", c.Rejected)
	}

	e.startReplica(t, generator.Config{ID: "gen-b", GPUs: "1x24GiB", Host: testHost, Concurrency: 2, Profiles: ps})
	gens, err := e.JS.KeyValue(e.ctx, e.Names.GeneratorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	launchtest.WaitFor(t, 10*time.Second, "gen-b registered", func() bool {
		_, err := gens.Get(e.ctx, "gen-b")
		return err == nil
	})
	time.Sleep(300 * time.Millisecond) // its consumer pulls from now on

	const n = 8
	for i := 1; i <= n; i++ {
		e.publish(t, promptTask("r1", fmt.Sprintf("r1.t%d", i), "coder"))
	}
	seen := map[string]bool{}
	for _, c := range e.candidates(t, n+1) {
		if c.Rejected != "" {
			t.Errorf("candidate %s rejected: %s", c.ID, c.Rejected)
		}
		seen[c.TaskID] = true
	}
	if len(seen) != n+1 {
		t.Errorf("candidates for %d distinct tasks, want %d", len(seen), n+1)
	}
	led, err := lease.Read(e.ctx, leasesKV(t, e), testHost)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range led.Live(time.Now()) {
		if a.State == gpu.LeaseReady && !strings.HasPrefix(a.Holder, "gen-a/") {
			t.Errorf("unexpected ready lease %+v: the card had room for one server", a)
		}
	}
}
