package population

import (
	"github.com/shoal-run/shoal/pkg/novelty"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// seenCap is how many sketches of its latest evaluated programs an island keeps for novelty
// rejection (database.novelty_threshold): 64 × 96 bytes ride in every task of the island.
const seenCap = 64

// account keeps RunState.Models for the planner's bandit model choice (llm.model_selection:
// bandit). A result's reward weighs the size of its gain: 0 when the child did not beat its
// parent, else gain / (gain + scale), where scale is the run's running mean of positive gains
// (GainScale): an average improvement earns 0.5, a much larger one nearly 1, a tiny one
// nearly 0, on any problem's scale of scores. Every model's discounted sums fade by
// llm.bandit_discount at each result, so a model that stops helping loses its share.
//
// It runs inside Fold, which folds each candidate at most once (the lineage is the set of
// folded ids, and it is in the snapshot), so a redelivered result counts nothing twice and a
// restored archive holds the same sums.
func (p *Population) account(r *protocol.Result, score float64) {
	c := &r.Candidate
	if p.state.Models == nil {
		p.state.Models = map[string]protocol.ModelStats{}
	}
	if c.Novelty {
		p.state.NoveltyRejected++
	}
	gain := 0.0
	if parent, ok := p.lineage[c.ParentID]; ok && r.Status == protocol.StatusOK && parent.Status == protocol.StatusOK {
		gain = max(score-parent.Score, 0)
	}
	reward := 0.0
	if gain > 0 {
		scale := p.state.GainScale
		if scale <= 0 {
			scale = gain
		}
		reward = gain / (gain + scale)
		p.state.GainScale = scale + 0.1*(gain-scale)
	}
	if d := p.cfg.LLM.BanditDiscount; d > 0 && d < 1 {
		for name, st := range p.state.Models {
			st.Reward *= d
			st.Pulls *= d
			p.state.Models[name] = st
		}
	}
	st := p.state.Models[c.Model]
	if gain > 0 {
		st.Improvements++
	}
	st.Reward += reward
	st.Pulls++
	p.state.Models[c.Model] = st
}

// noteSeen keeps the novelty sketch of an evaluated program on its island, newest first.
func (p *Population) noteSeen(isl *island, code string) {
	if p.cfg.Database.NoveltyThreshold <= 0 || code == "" {
		return
	}
	isl.seen = append([]string{novelty.Of(code)}, isl.seen[:min(len(isl.seen), seenCap-1)]...)
}
