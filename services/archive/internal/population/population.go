// Package population is the archive's fold: it turns the RESULTS of one run, in stream order,
// into a population with elites and a best program, and draws parents and inspirations from
// it. The fold is a pure function of the results it is given, so replaying the stream after a
// restart rebuilds the same population and counters.
package population

import (
	"cmp"
	"maps"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// Population is one run's programs. It is not safe for concurrent use; the archive guards it.
type Population struct {
	run      string
	cfg      *runconfig.Config
	programs map[string]*member
	next     uint64 // insertion counter: ties are broken by age, never by map order
	folded   map[string]struct{}
	state    protocol.RunState
	best     *member
}

type member struct {
	protocol.Program
	order uint64
}

// Outcome says what folding one result changed, for the archive's events.
type Outcome struct {
	// Duplicate: this candidate was folded before; nothing changed.
	Duplicate bool
	// NewBest: the result's program is the new best.
	NewBest bool
}

// New returns an empty population for run under cfg.
func New(run string, cfg *runconfig.Config) *Population {
	return &Population{
		run:      run,
		cfg:      cfg,
		programs: map[string]*member{},
		folded:   map[string]struct{}{},
		state:    protocol.RunState{Meta: protocol.Meta{Run: run}, ByModel: map[string]int64{}},
	}
}

// Fold adds one result, read at stream sequence seq. Each candidate is counted at most once,
// however often its result appears.
func (p *Population) Fold(r *protocol.Result, seq uint64) Outcome {
	p.state.LastSeq = max(p.state.LastSeq, seq)
	c := &r.Candidate
	if _, dup := p.folded[c.ID]; dup {
		return Outcome{Duplicate: true}
	}
	p.folded[c.ID] = struct{}{}

	if c.IsSeed() {
		p.state.Seeds++
	} else {
		p.state.Iterations++
		p.state.ByModel[c.Model]++
	}
	if r.Status != protocol.StatusOK {
		p.state.Failed++
	}
	if r.Status == protocol.StatusRejected || c.Code == "" {
		return Outcome{}
	}
	// A failed program is kept only while nothing better exists, so a run whose seed fails
	// still has a parent for the model to repair.
	if r.Status != protocol.StatusOK && !c.IsSeed() && p.best != nil {
		return Outcome{}
	}
	score := r.Score
	if r.Status != protocol.StatusOK || math.IsNaN(score) || math.IsInf(score, 0) {
		score = 0
	}
	m := &member{
		Program: protocol.Program{
			ID: c.ID, ParentID: c.ParentID, Code: c.Code, Score: score,
			Metrics: r.Metrics, Artifacts: r.Artifacts, Status: r.Status,
			Generation: c.Generation, Island: c.Island,
		},
		order: p.next,
	}
	p.next++
	p.programs[m.ID] = m
	if c.IsSeed() && p.state.Seeds == 1 {
		p.state.SeedScore = score
	}
	var out Outcome
	if p.best == nil || (r.Status == protocol.StatusOK && (p.best.Status != protocol.StatusOK || score > p.best.Score)) {
		p.best, out.NewBest = m, true
		p.state.BestID, p.state.BestScore = m.ID, m.Score
	}
	p.evict()
	p.state.Population = len(p.programs)
	return out
}

// evict drops the weakest programs beyond population_size, never the best.
func (p *Population) evict() {
	limit := p.cfg.Database.PopulationSize
	if limit <= 0 || len(p.programs) <= limit {
		return
	}
	ranked := p.ranked()
	for _, m := range ranked[limit:] {
		if m != p.best {
			delete(p.programs, m.ID)
		}
	}
}

// ranked returns members best first; equal scores rank the older program first.
func (p *Population) ranked() []*member {
	out := make([]*member, 0, len(p.programs))
	for _, m := range p.programs {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *member) int {
		if c := cmp.Compare(rankScore(b), rankScore(a)); c != 0 {
			return c
		}
		return cmp.Compare(a.order, b.order)
	})
	return out
}

func rankScore(m *member) float64 {
	if m.Status != protocol.StatusOK {
		return math.Inf(-1)
	}
	return m.Score
}

// State returns the run's counters and best.
func (p *Population) State() protocol.RunState {
	s := p.state
	s.ByModel = maps.Clone(p.state.ByModel)
	return s
}

// Best returns the best program, or false when nothing has been folded.
func (p *Population) Best() (protocol.Program, bool) {
	if p.best == nil {
		return protocol.Program{}, false
	}
	return p.best.Program, true
}

// Len is the number of programs held.
func (p *Population) Len() int { return len(p.programs) }

// Sample draws a parent and inspirations, the randomness fixed by seed. The parent is, with
// exploration_ratio, any program; with exploitation_ratio, one of the elites (the top
// archive_size); otherwise the winner of a fitness tournament. Top holds the best
// num_top_programs other than the parent; Inspirations adds num_diverse_programs others.
func (p *Population) Sample(seed int64) (parent protocol.Program, top, inspirations []protocol.Program, ok bool) {
	ranked := p.ranked()
	if len(ranked) == 0 {
		return protocol.Program{}, nil, nil, false
	}
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x5eed))
	db := p.cfg.Database
	var chosen *member
	switch r := rng.Float64(); {
	case r < db.ExplorationRatio:
		chosen = ranked[rng.IntN(len(ranked))]
	case r < db.ExplorationRatio+db.ExploitationRatio:
		elites := min(max(db.ArchiveSize, 1), len(ranked))
		chosen = ranked[rng.IntN(elites)]
	default:
		chosen = ranked[rng.IntN(len(ranked))]
		for range 2 {
			if c := ranked[rng.IntN(len(ranked))]; rankScore(c) > rankScore(chosen) {
				chosen = c
			}
		}
	}
	others := make([]*member, 0, len(ranked)-1)
	for _, m := range ranked {
		if m != chosen {
			others = append(others, m)
		}
	}
	nTop := min(p.cfg.Prompt.NumTopPrograms, len(others))
	for _, m := range others[:nTop] {
		top = append(top, m.Program)
	}
	rest := others[nTop:]
	for _, i := range rng.Perm(len(rest))[:min(p.cfg.Prompt.NumDiversePrograms, len(rest))] {
		inspirations = append(inspirations, rest[i].Program)
	}
	return chosen.Program, top, inspirations, true
}
