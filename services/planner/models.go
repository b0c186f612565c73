package planner

import (
	"math/rand/v2"
	"time"

	"gonum.org/v1/gonum/stat/distuv"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// picker shares one plan's tasks among the run's models (llm.model_selection). Each model
// keeps at most its own target in flight (inFlightTarget: its live generators' concurrency
// times 1 + slack), so no model's tasks queue at its generators and go stale there.
//
// With weights, a task goes to a model short of its target, drawn by weight: every model is
// kept busy to its concurrency. With bandit, each task goes to the model a discounted Thompson
// draw over the archive's RunState.Models picks (banditModel); when that model has no room,
// the plan ends there and the slot waits for the next plan, rather than going to a model the
// draw did not want. The tasks follow the improvements each model makes: a model that helps
// runs at its capacity, one that does not gets the floor's share and otherwise idles.
type picker struct {
	cfg     *runconfig.Config
	stats   map[string]protocol.ModelStats
	bandit  bool
	folded  uint64           // the run's folded results: each plan's bandit draws differ
	deficit map[string]int64 // tasks each model is short of its target
	stopped bool
}

func newPicker(cfg *runconfig.Config, gens []protocol.Generator, pst *protocol.PlannerState, st *protocol.RunState, slack float64, now time.Time) *picker {
	p := &picker{cfg: cfg, stats: st.Models, bandit: cfg.LLM.ModelSelection == runconfig.ModelSelectionBandit,
		folded: uint64(st.Iterations), deficit: map[string]int64{}}
	for _, m := range cfg.LLM.Models {
		w := inFlightTarget(m, gens, slack, now)
		f := max(pst.IssuedByModel[m.Name]-st.ByModel[m.Name], 0)
		if d := w - f; d > 0 {
			p.deficit[m.Name] = d
		}
	}
	return p
}

// next chooses task n's model, or reports that this plan issues no more tasks.
func (p *picker) next(seed, n uint64) (string, bool) {
	if p.stopped || len(p.deficit) == 0 {
		return "", false
	}
	model := ""
	if p.bandit {
		// The draw for task n depends on what was folded, so a slot the draw left waiting
		// is drawn afresh once another result lands.
		if model = banditModel(p.cfg, p.stats, seed^p.folded*0x9e3779b97f4a7c15, n); p.deficit[model] <= 0 {
			p.stopped = true
			return "", false
		}
	} else {
		model = pickModel(p.cfg, p.deficit, seed, n)
	}
	if p.deficit[model]--; p.deficit[model] <= 0 {
		delete(p.deficit, model)
	}
	return model, true
}

// priorPulls is how many results the weights are worth in the bandit's prior.
const priorPulls = 2

// banditModel draws task n's model by Thompson sampling over the discounted rewards the
// archive keeps (protocol.ModelStats): each model's expected reward has a Beta posterior whose
// prior puts priorPulls pseudo-results at a mean of its weight over the largest weight, half
// a reward each; the model with the highest draw takes the task. With probability
// llm.bandit_floor the task is drawn by weight instead, so no model starves and one that
// starts to help is noticed.
func banditModel(cfg *runconfig.Config, stats map[string]protocol.ModelStats, seed, n uint64) string {
	rng := rand.New(rand.NewPCG(seed^0xba4d17, n))
	models := cfg.LLM.Models
	if len(models) == 1 {
		return models[0].Name
	}
	var top float64
	all := map[string]int64{}
	for _, m := range models {
		top = max(top, m.Weight)
		all[m.Name] = 1
	}
	if rng.Float64() < cfg.LLM.BanditFloor || top <= 0 {
		return pickModel(cfg, all, seed, n)
	}
	best, pick := -1.0, models[0].Name
	for _, m := range models {
		st := stats[m.Name]
		prior := 0.5 * m.Weight / top
		a := 1 + priorPulls*prior + max(st.Reward, 0)
		b := 1 + priorPulls*(1-prior) + max(st.Pulls-st.Reward, 0)
		if v := (distuv.Beta{Alpha: a, Beta: b, Src: rng}).Rand(); v > best {
			best, pick = v, m.Name
		}
	}
	return pick
}
