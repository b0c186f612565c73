package main

import (
	"slices"
	"testing"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/protocol"
)

func result(task string, status protocol.Status) protocol.Result {
	var c *protocol.Candidate
	if task == "" {
		c = (&protocol.Seed{Meta: protocol.Meta{ID: "s1", Run: run}}).Candidate("python", "initial_program.py", "")
	} else {
		c = (&protocol.Task{Meta: protocol.Meta{ID: task, Run: run}}).Candidate("")
	}
	r := c.Result("")
	r.Status = status
	return *r
}

func TestAuditResultsFindsLostDuplicateAndStrayResults(t *testing.T) {
	results := []protocol.Result{
		result("", protocol.StatusOK),
		result("chaos.t1", protocol.StatusOK),
		result("chaos.t2", protocol.StatusFailed),
		result("chaos.t2", protocol.StatusFailed), // redelivered evaluation that reached the stream twice
		result("chaos.t4", protocol.StatusRejected),
		result("chaos.t9", protocol.StatusOK),  // past what the planner recorded
		result("other.t3", protocol.StatusOK),  // another run's task id
		result("chaos.t03", protocol.StatusOK), // not a canonical task number
	}
	got := auditResults(run, 5, results)
	if got.Messages != 8 || got.Results != 7 || got.Duplicates != 1 {
		t.Errorf("messages/results/duplicates = %d/%d/%d, want 8/7/1", got.Messages, got.Results, got.Duplicates)
	}
	if !slices.Equal(got.Lost, []int64{3, 5}) {
		t.Errorf("lost = %v, want [3 5]", got.Lost)
	}
	if got.Stray != 3 || got.Seeds != 1 || got.Generated != 6 {
		t.Errorf("stray/seeds/generated = %d/%d/%d, want 3/1/6", got.Stray, got.Seeds, got.Generated)
	}
}

func TestAuditResultsCleanRun(t *testing.T) {
	results := []protocol.Result{result("", protocol.StatusOK)}
	for _, id := range []string{"chaos.t1", "chaos.t2", "chaos.t3"} {
		results = append(results, result(id, protocol.StatusOK))
	}
	got := auditResults(run, 3, results)
	s := summary{Kills: map[string]int{"archive": 50}, RunStatus: protocol.RunDone, Issued: 3, MaxIteration: 3,
		Iterations: 3, Tally: got, GracefulOK: 2, GracefulAll: 2}
	if f := s.failures(50); len(f) != 0 {
		t.Errorf("failures of a clean run = %v", f)
	}
	s.Iterations = 4 // the archive counted one result twice
	if f := s.failures(50); len(f) != 1 {
		t.Errorf("failures with a double count = %v, want one", f)
	}
}

func TestStaleLeasesAreThoseOfDeadHolders(t *testing.T) {
	allocs := []gpu.Allocation{
		{Holder: "generator-box-101/standin/ab12"},
		{Holder: "generator-box-102/standin/cd34"},
	}
	alive := map[string]bool{"101": true}
	stale := staleLeases(allocs, func(h string) bool { return alive[holderPID(h)] })
	if len(stale) != 1 || stale[0].Holder != "generator-box-102/standin/cd34" {
		t.Errorf("stale = %+v, want the lease of pid 102", stale)
	}
}
