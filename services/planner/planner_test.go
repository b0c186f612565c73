package planner

import (
	"math"
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
			pst := &protocol.PlannerState{Issued: tt.issued, StartedAt: time.Now().Add(-tt.started)}
			st := &protocol.RunState{BestID: "b", BestScore: tt.best}
			if got := stopReason(cfg, pst, st); (got != "") != tt.want {
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
