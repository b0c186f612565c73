package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// tally is what the RESULTS stream says about a run, checked against what the planner issued
// and what the archive counted.
type tally struct {
	// Messages is the run's messages in RESULTS; Results the distinct result ids among them.
	Messages, Results int
	// Duplicates counts messages beyond the first for one result id: a redelivered
	// evaluation that reached the stream twice.
	Duplicates int
	// Lost lists the tasks (1..issued) with no result at all.
	Lost []int64
	// Stray counts results of generated candidates whose task number is past what the
	// planner says it issued.
	Stray int
	// Seeds counts seed results.
	Seeds int
	// Generated counts distinct results of generated candidates: what the archive must
	// report as the run's iterations.
	Generated int64
	// ByStatus counts distinct results by status.
	ByStatus map[protocol.Status]int
}

// auditResults checks a run's RESULTS against the issued task count: every task 1..issued has
// exactly one result.
func auditResults(run string, issued int64, results []protocol.Result) tally {
	t := tally{Messages: len(results), ByStatus: map[protocol.Status]int{}}
	seen := map[string]bool{}
	tasks := map[int64]bool{}
	for _, r := range results {
		if seen[r.ID] {
			t.Duplicates++
			continue
		}
		seen[r.ID] = true
		t.Results++
		t.ByStatus[r.Status]++
		if r.Candidate.IsSeed() {
			t.Seeds++
			continue
		}
		t.Generated++
		n, ok := taskNumber(run, r.Candidate.TaskID)
		if !ok || n > issued {
			t.Stray++
			continue
		}
		tasks[n] = true
	}
	for n := int64(1); n <= issued; n++ {
		if !tasks[n] {
			t.Lost = append(t.Lost, n)
		}
	}
	return t
}

// taskNumber reads n from a task id "<run>.t<n>".
func taskNumber(run, id string) (int64, bool) {
	rest, ok := strings.CutPrefix(id, run+".t")
	if !ok {
		return 0, false
	}
	var n int64
	if _, err := fmt.Sscanf(rest, "%d", &n); err != nil || fmt.Sprint(n) != rest {
		return 0, false
	}
	return n, true
}

// staleLeases returns the live ledger entries whose holder is not a running generator: a
// killed generator's lease that was never freed.
func staleLeases(allocs []gpu.Allocation, running func(holder string) bool) []gpu.Allocation {
	var stale []gpu.Allocation
	for _, a := range allocs {
		if !running(a.Holder) {
			stale = append(stale, a)
		}
	}
	slices.SortFunc(stale, func(a, b gpu.Allocation) int { return strings.Compare(a.Holder, b.Holder) })
	return stale
}

// summary is the figures the harness prints and docs/reliability.md records.
type summary struct {
	Kills        map[string]int
	Restarts     int
	Crashes      int // exits the harness did not cause
	Wall         time.Duration
	Issued       int64
	Iterations   int64 // the archive's count
	Tally        tally
	DeadLetters  int
	LeaseHolders int // distinct killed generator replicas seen holding a lease
	StaleLeases  int
	GracefulOK   int
	GracefulAll  int
	RunStatus    protocol.RunStatus
	BestScore    float64
	MaxIteration int64
}

func (s summary) totalKills() int {
	n := 0
	for _, k := range s.Kills {
		n += k
	}
	return n
}

// failures lists every check that did not hold.
func (s summary) failures(wantKills int) []string {
	var out []string
	if k := s.totalKills(); k < wantKills {
		out = append(out, fmt.Sprintf("only %d kills (want ≥ %d): raise -iterations so the run outlasts the kills", k, wantKills))
	}
	if s.RunStatus != protocol.RunDone {
		out = append(out, fmt.Sprintf("run status %q, want done", s.RunStatus))
	}
	if s.Issued < s.MaxIteration {
		out = append(out, fmt.Sprintf("planner issued %d tasks, budget %d", s.Issued, s.MaxIteration))
	}
	if n := len(s.Tally.Lost); n > 0 {
		out = append(out, fmt.Sprintf("lost = %d (tasks without a result, first %v)", n, s.Tally.Lost[:min(n, 10)]))
	}
	if s.Tally.Duplicates > 0 {
		out = append(out, fmt.Sprintf("duplicates = %d result messages repeated in RESULTS", s.Tally.Duplicates))
	}
	if s.Tally.Stray > 0 {
		out = append(out, fmt.Sprintf("%d results for tasks the planner never recorded", s.Tally.Stray))
	}
	if s.Iterations != s.Tally.Generated {
		out = append(out, fmt.Sprintf("archive counted %d iterations, RESULTS holds %d distinct generated results", s.Iterations, s.Tally.Generated))
	}
	if s.StaleLeases > 0 {
		out = append(out, fmt.Sprintf("%d GPU leases still held by dead generators", s.StaleLeases))
	}
	if s.GracefulOK < s.GracefulAll {
		out = append(out, fmt.Sprintf("%d of %d replicas did not stop cleanly on SIGTERM", s.GracefulAll-s.GracefulOK, s.GracefulAll))
	}
	return out
}
