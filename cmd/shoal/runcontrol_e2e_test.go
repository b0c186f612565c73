package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// shoal runs the CLI against the stack's server and returns what it printed.
func (s *stack) shoal(args ...string) string {
	s.t.Helper()
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetArgs(append([]string{"--nats-url", s.env.Server.URL(),
		"--user", "admin", "--password-file", natsauth.PasswordFile(s.env.CredentialsDir, natsauth.Admin)}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		s.t.Fatalf("shoal %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// waitFor polls the run's planner and archive state until ok holds.
func (s *stack) waitFor(run, what string, limit time.Duration, ok func(*protocol.PlannerState, *protocol.RunState) bool) (*protocol.PlannerState, *protocol.RunState) {
	s.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(limit)
	for {
		pst, perr := s.client.runs.Planner(ctx, run)
		st, serr := s.client.runs.State(ctx, run)
		if perr == nil && serr == nil && ok(pst, st) {
			return pst, st
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: not after %s: planner %+v state %+v", what, limit, pst, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestPauseResumeExtend(t *testing.T) {
	// The budget leaves the pause time to land: 20 iterations of mutate once ran to the end
	// (in under a second) between the 4th result and the pause, on base code too.
	const budget = 60
	s := startStack(t)
	s.seed("ctl", exampleDir(t), fmt.Sprintf(mutateConfig, budget))
	s.waitFor("ctl", "progress", time.Minute, func(_ *protocol.PlannerState, st *protocol.RunState) bool { return st.Iterations >= 4 })

	if out := s.shoal("run", "pause", "ctl"); !strings.Contains(out, fmt.Sprintf("run ctl paused; budget: %d iterations (paused)", budget)) {
		t.Errorf("pause printed %q", out)
	}
	// Paused: the tasks in flight finish, and no new one is issued.
	pst, st := s.waitFor("ctl", "pause", 30*time.Second, func(pst *protocol.PlannerState, st *protocol.RunState) bool {
		return pst.Status == protocol.RunPaused && st.Iterations == pst.Issued
	})
	time.Sleep(time.Second)
	if pst2, st2 := s.waitFor("ctl", "re-read", time.Second, func(*protocol.PlannerState, *protocol.RunState) bool { return true }); pst2.Issued != pst.Issued || st2.Iterations != st.Iterations {
		t.Fatalf("paused run went on: issued %d→%d, iterations %d→%d", pst.Issued, pst2.Issued, st.Iterations, st2.Iterations)
	}
	if pst.Issued >= budget {
		t.Fatalf("the run spent its budget (%d) before the pause took effect; the test needs a longer run", pst.Issued)
	}
	if out := s.shoal("status", "--run", "ctl"); !strings.Contains(out, "paused") || !strings.Contains(out, fmt.Sprintf("%d/%d", st.Iterations, budget)) {
		t.Errorf("status does not show the pause:\n%s", out)
	}

	s.shoal("run", "resume", "ctl")
	st = s.waitDone("ctl", time.Minute)
	if st.Iterations != budget {
		t.Fatalf("resumed run ended at %d iterations, want %d", st.Iterations, budget)
	}

	// A finished run goes on with the larger budget.
	if out := s.shoal("run", "extend", "ctl", "--iterations", "10"); !strings.Contains(out, fmt.Sprintf("budget: %d iterations", budget+10)) {
		t.Errorf("extend printed %q", out)
	}
	s.waitFor("ctl", "extension", 30*time.Second, func(pst *protocol.PlannerState, _ *protocol.RunState) bool {
		return pst.Extensions == 1
	})
	st = s.waitDone("ctl", time.Minute)
	pst, _ = s.client.runs.Planner(context.Background(), "ctl")
	want := budget + 10
	if st.Iterations != int64(want) || pst.Issued != int64(want) || !strings.Contains(pst.StopReason, fmt.Sprintf("max_iterations (%d)", want)) {
		t.Errorf("extended run: %d iterations, %d issued, stop reason %q; want %d, %d, max_iterations (%d)", st.Iterations, pst.Issued, pst.StopReason, want, want, want)
	}
	if out := s.shoal("status", "--run", "ctl"); !strings.Contains(out, fmt.Sprintf("%d/%d", want, want)) || !strings.Contains(out, "done") {
		t.Errorf("status after the extension:\n%s", out)
	}
	if got := len(s.results("ctl")); got != want+1 {
		t.Errorf("RESULTS holds %d results, want %d (seed + %d)", got, want+1, want)
	}
}

// TestPlannerRestartIssuesNoTaskTwice stops the planner mid-run and starts a new one: it
// takes up the count from the runs bucket, publishes its last recorded task again (which
// JetStream drops as a duplicate), and the run completes with every iteration once.
func TestPlannerRestartIssuesNoTaskTwice(t *testing.T) {
	s := startStack(t)
	s.seed("replan", exampleDir(t), fmt.Sprintf(mutateConfig, 40))
	for _, at := range []int64{8, 20} {
		before, _ := s.waitFor("replan", "progress", time.Minute, func(pst *protocol.PlannerState, st *protocol.RunState) bool {
			return st.Iterations >= at && pst.Issued < 40
		})
		s.stop("planner")
		time.Sleep(300 * time.Millisecond) // the generators drain what was issued
		s.start("planner")
		if before.Issued == 0 {
			t.Fatal("nothing was issued before the restart")
		}
	}
	st := s.waitDone("replan", 2*time.Minute)
	if st.Iterations != 40 {
		t.Errorf("iterations %d, want 40", st.Iterations)
	}
	seen := map[string]int{}
	for _, r := range s.results("replan") {
		if !r.Candidate.IsSeed() {
			seen[r.Candidate.TaskID]++
		}
	}
	if len(seen) != 40 {
		t.Errorf("RESULTS holds results of %d distinct tasks, want 40", len(seen))
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("task %s has %d results", id, n)
		}
	}
	info, err := s.env.JS.Stream(context.Background(), s.env.Names.TasksStream())
	if err != nil {
		t.Fatal(err)
	}
	// TASKS is a work queue, but its sequence numbers count every task ever stored: a task
	// published twice and not dropped as a duplicate would show as a 41st.
	if state := info.CachedInfo().State; state.LastSeq != 40 || state.Msgs != 0 {
		t.Errorf("TASKS stored %d tasks and holds %d; want 40 stored, none left", state.LastSeq, state.Msgs)
	}
}
