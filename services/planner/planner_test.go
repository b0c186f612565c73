package planner

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

func TestStopReason(t *testing.T) {
	target := 0.9
	tests := []struct {
		name    string
		cfg     func(*runconfig.Config)
		issued  int64
		best    float64
		started time.Duration // ago
		want    bool
	}{
		{"budget left", func(c *runconfig.Config) { c.MaxIterations = 10 }, 9, 0.5, 0, false},
		{"max_iterations issued", func(c *runconfig.Config) { c.MaxIterations = 10 }, 10, 0.5, 0, true},
		{"no limit", func(c *runconfig.Config) { c.MaxIterations = 0 }, 1 << 40, 0.5, 0, false},
		{"target reached", func(c *runconfig.Config) { c.TargetScore = &target }, 1, 0.95, 0, true},
		{"target not reached", func(c *runconfig.Config) { c.TargetScore = &target }, 1, 0.85, 0, false},
		{"wall time spent", func(c *runconfig.Config) { c.MaxWallTime = time.Minute }, 1, 0, 2 * time.Minute, true},
		{"wall time left", func(c *runconfig.Config) { c.MaxWallTime = time.Hour }, 1, 0, time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := runconfig.Default()
			tt.cfg(cfg)
			now := time.Now()
			pst := &protocol.PlannerState{Status: protocol.RunRunning, Issued: tt.issued, RunningSince: now.Add(-tt.started)}
			st := &protocol.RunState{BestID: "b", BestScore: tt.best}
			if got := stopReason(cfg, &protocol.RunControl{}, pst, st, now); (got != "") != tt.want {
				t.Errorf("stopReason = %q, want stop=%v", got, tt.want)
			}
		})
	}
}

func TestPickModelFollowsWeights(t *testing.T) {
	cfg := runconfig.Default()
	cfg.LLM.Models = []runconfig.Model{{Name: "big", Weight: 0.8}, {Name: "small", Weight: 0.2}}
	deficit := map[string]int64{"big": 1, "small": 1}
	counts := map[string]int{}
	const n = 20000
	for i := range uint64(n) {
		counts[pickModel(cfg, deficit, 42, i)]++
	}
	if share := float64(counts["big"]) / n; math.Abs(share-0.8) > 0.02 {
		t.Errorf("big model got %.3f of tasks, want 0.8 ± 0.02", share)
	}
	// A model with no room is never picked, whatever its weight.
	delete(deficit, "big")
	for i := range uint64(100) {
		if m := pickModel(cfg, deficit, 42, i); m != "small" {
			t.Fatalf("picked %s, which has no room for tasks", m)
		}
	}
}

func TestPlateauStop(t *testing.T) {
	tests := []struct {
		name                              string
		patience                          int
		iterations, lastImprovement, from int64 // from: ResumedAt
		want                              bool
	}{
		{"off", 0, 500, 0, 0, false},
		{"improving", 10, 50, 45, 0, false},
		{"one short of patience", 10, 59, 50, 0, false},
		{"patience spent", 10, 60, 50, 0, true},
		{"never improved past the seed", 10, 10, 0, 0, true},
		{"an extension restarts the clock", 10, 65, 50, 60, false},
		{"and that window runs out too", 10, 70, 50, 60, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := runconfig.Default()
			cfg.MaxIterations = 0
			cfg.EarlyStoppingPatience = tt.patience
			pst := &protocol.PlannerState{Status: protocol.RunRunning, Issued: tt.iterations, ResumedAt: tt.from}
			st := &protocol.RunState{Iterations: tt.iterations, LastImprovement: tt.lastImprovement}
			got := stopReason(cfg, &protocol.RunControl{}, pst, st, time.Now())
			if (got != "") != tt.want {
				t.Fatalf("stopReason = %q, want stop=%v", got, tt.want)
			}
			if tt.want && !strings.Contains(got, "plateau") {
				t.Errorf("reason %q does not say plateau", got)
			}
		})
	}
}

func TestIslandOf(t *testing.T) {
	tests := []struct {
		n       int64
		islands int
		want    int
	}{
		{1, 5, 0}, {2, 5, 1}, {5, 5, 4}, {6, 5, 0}, {12, 5, 1}, {7, 1, 0}, {7, 0, 0}, {3, 2, 0}, {4, 2, 1},
	}
	for _, tt := range tests {
		if got := islandOf(tt.n, tt.islands); got != tt.want {
			t.Errorf("islandOf(%d, %d) = %d, want %d", tt.n, tt.islands, got, tt.want)
		}
	}
}

func TestInFlightTarget(t *testing.T) {
	now := time.Now()
	live, stale := now.Add(-2*time.Second), now.Add(-time.Minute)
	gen := func(id string, conc int, at time.Time, models ...string) protocol.Generator {
		return protocol.Generator{Meta: protocol.Meta{ID: id}, Concurrency: conc, UpdatedAt: at, Models: models}
	}
	big := runconfig.Model{Name: "big", Concurrency: 8}
	tests := []struct {
		name string
		gens []protocol.Generator
		want int64
	}{
		{"no generator: the config's concurrency", nil, 12},
		{"one replica bounded by the model's concurrency", []protocol.Generator{gen("a", 16, live)}, 12},
		{"replicas add up", []protocol.Generator{gen("a", 4, live, "big"), gen("b", 4, live, "big"), gen("c", 2, live)}, 15},
		{"a replica of another model does not count", []protocol.Generator{gen("a", 4, live, "big"), gen("b", 6, live, "small")}, 6},
		{"a stale replica does not count", []protocol.Generator{gen("a", 4, live, "big"), gen("b", 6, stale, "big")}, 6},
		{"only stale replicas: the config's concurrency", []protocol.Generator{gen("b", 2, stale, "big")}, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := inFlightTarget(big, tt.gens, 0.5, now); got != tt.want {
				t.Errorf("inFlightTarget = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestStep walks a run through pause, resume, stop, extension and done as the planner sees
// them tick by tick.
func TestStep(t *testing.T) {
	cfg := runconfig.Default()
	cfg.MaxIterations = 10
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	pst := &protocol.PlannerState{Status: protocol.RunRunning, StartedAt: t0, RunningSince: t0, IssuedByModel: map[string]int64{}}
	st := &protocol.RunState{}
	ctl := &protocol.RunControl{}
	type want struct {
		status protocol.RunStatus
		msg    string // substring of the event; "" = no change
	}
	check := func(what string, now time.Time, w want) {
		t.Helper()
		msg := step(cfg, pst, st, ctl, now)
		if pst.Status != w.status || (w.msg == "") != (msg == "") || !strings.Contains(msg, w.msg) {
			t.Fatalf("%s: status %s, event %q; want %s, %q", what, pst.Status, msg, w.status, w.msg)
		}
	}
	check("fresh run", t0, want{protocol.RunRunning, ""})

	pst.Issued, st.Iterations = 4, 2
	ctl.Paused = true
	check("pause", t0.Add(time.Minute), want{protocol.RunPaused, "paused"})
	st.Iterations = 4 // in-flight work finishes while paused
	check("paused, work done", t0.Add(time.Hour), want{protocol.RunPaused, ""})
	ctl.Paused = false
	check("resume", t0.Add(2*time.Hour), want{protocol.RunRunning, "resumed"})
	if got := ranFor(pst, t0.Add(2*time.Hour+time.Minute)); got != 2*time.Minute {
		t.Errorf("running time %s, want 2m: the hour paused does not count against max_wall_time", got)
	}

	pst.Issued = 10
	check("budget issued", t0.Add(3*time.Hour), want{protocol.RunStopping, "max_iterations (10) reached"})
	st.Iterations = 10
	check("last result folded", t0.Add(3*time.Hour), want{protocol.RunDone, "done"})

	ctl.ExtraIterations, ctl.Extensions = 5, 1
	check("extend a done run", t0.Add(4*time.Hour), want{protocol.RunRunning, "extended to 15 iterations: running again"})
	if pst.StopReason != "" || pst.ResumedAt != 10 {
		t.Errorf("after extension: stop reason %q, resumed at %d; want none and 10", pst.StopReason, pst.ResumedAt)
	}
	check("extension seen once", t0.Add(4*time.Hour), want{protocol.RunRunning, ""})

	pst.Issued, st.Iterations = 15, 15
	check("extended budget spent", t0.Add(5*time.Hour), want{protocol.RunDone, "max_iterations (15) reached"})

	target := 0.5
	cfg.TargetScore = &target
	st.BestID, st.BestScore = "b", 0.9
	ctl.ExtraIterations, ctl.Extensions = 10, 2
	check("extension cannot undo a reached target", t0.Add(6*time.Hour), want{protocol.RunDone, "but target_score 0.5 reached"})
}
