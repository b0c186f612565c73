package planner

import (
	"math"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

func banditConfig(weights ...float64) *runconfig.Config {
	cfg := runconfig.Default()
	cfg.LLM.ModelSelection = runconfig.ModelSelectionBandit
	cfg.LLM.Models = nil
	for i, w := range weights {
		cfg.LLM.Models = append(cfg.LLM.Models, runconfig.Model{Name: string(rune('a' + i)), Weight: w, Concurrency: 4})
	}
	return cfg
}

func shares(cfg *runconfig.Config, stats map[string]protocol.ModelStats) map[string]float64 {
	const n = 20000
	counts := map[string]float64{}
	for i := range uint64(n) {
		counts[banditModel(cfg, stats, 42, i)]++
	}
	for k := range counts {
		counts[k] /= n
	}
	return counts
}

// TestBanditSharesFollowRewards: before any result the weights decide; once one model's
// candidates improve on their parents and the other's do not, the improving model takes
// nearly every task, and the floor keeps the other at its weighted share of it.
func TestBanditSharesFollowRewards(t *testing.T) {
	cfg := banditConfig(1, 1)
	got := shares(cfg, nil)
	if math.Abs(got["a"]-0.5) > 0.02 {
		t.Errorf("equal weights, no results: a gets %.3f of tasks, want 0.5", got["a"])
	}
	if got := shares(banditConfig(3, 1), nil); got["a"] < 0.6 {
		t.Errorf("weights 3:1, no results: a gets %.3f of tasks, want the larger share", got["a"])
	}
	// 200 discounted results each: a's earned rewards, b's none.
	stats := map[string]protocol.ModelStats{"a": {Reward: 30, Pulls: 200}, "b": {Reward: 0, Pulls: 200}}
	got = shares(cfg, stats)
	if got["a"] < 0.93 {
		t.Errorf("a improves, b does not: a gets %.3f of tasks, want nearly all", got["a"])
	}
	if floor := cfg.LLM.BanditFloor / 2; got["b"] < floor*0.8 {
		t.Errorf("b gets %.3f of tasks, want at least the floor's %.3f", got["b"], floor)
	}
	// The gain's size counts: equal improvement counts, but a's gains are larger.
	stats = map[string]protocol.ModelStats{"a": {Reward: 60, Pulls: 200}, "b": {Reward: 20, Pulls: 200}}
	if got := shares(cfg, stats); got["a"] < 0.9 {
		t.Errorf("a earns three times b's reward: a gets %.3f of tasks, want nearly all", got["a"])
	}
	// A single model takes every task.
	if m := banditModel(banditConfig(1), nil, 1, 1); m != "a" {
		t.Errorf("one model: picked %q", m)
	}
}

// TestPickerKeepsEachModelToItsTarget: a model never gets more than its own target in
// flight; with bandit, a plan ends when the draw picks a model with no room.
func TestPickerKeepsEachModelToItsTarget(t *testing.T) {
	now := time.Now()
	pst := &protocol.PlannerState{IssuedByModel: map[string]int64{"a": 6, "b": 0}}
	st := &protocol.RunState{ByModel: map[string]int64{}, Models: map[string]protocol.ModelStats{
		"a": {Reward: 30, Pulls: 200}, "b": {Pulls: 200}}}
	// Targets: 6 each (concurrency 4 × 1.5); a, the model that improves, is full.
	for _, sel := range []string{runconfig.ModelSelectionWeights, runconfig.ModelSelectionBandit} {
		cfg := banditConfig(1, 1)
		cfg.LLM.ModelSelection = sel
		issued := map[string]int{}
		p := newPicker(cfg, nil, pst, st, 0.5, now)
		for n := uint64(1); ; n++ {
			m, ok := p.next(42, n)
			if !ok {
				break
			}
			issued[m]++
		}
		if issued["a"] != 0 {
			t.Errorf("%s: %d tasks to a, which has its target in flight", sel, issued["a"])
		}
		if sel == runconfig.ModelSelectionWeights && issued["b"] != 6 {
			t.Errorf("weights: %d tasks to b, want its 6", issued["b"])
		}
		if sel == runconfig.ModelSelectionBandit && issued["b"] > 2 {
			t.Errorf("bandit: %d tasks to b, whose candidates never improve; want the plan to wait for a's slots", issued["b"])
		}
	}
}
