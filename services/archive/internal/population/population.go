// Package population is the archive's fold: it turns the RESULTS of one run, in stream order,
// into islands of programs, each a MAP-Elites grid, with an elite archive, migration along a
// ring of islands, lineage and a best program, and draws parents and inspirations from it.
//
// The fold is a pure function of the results it is given: no wall clock, no map order, no
// randomness. Replaying the stream, or restoring a snapshot and replaying what follows it,
// rebuilds the same population byte for byte (see Snapshot).
package population

import (
	"maps"
	"math"
	"slices"
	"strconv"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// Population is one run's programs. It is not safe for concurrent use; the archive guards it.
type Population struct {
	run      string
	cfg      *runconfig.Config
	programs map[string]*member
	next     uint64 // filing counter: ties are broken by age, never by map order
	// lineage holds every candidate ever folded (kept or not) and every copy: it is the set
	// that folds a candidate at most once, and the ancestry of any program.
	lineage map[string]Lineage
	state   protocol.RunState
	best    *member
	islands []*island
	axes    []axis
	// elites is the elite archive, best first, at most archive_size originals.
	elites []*member
	// free holds the programs without a cell, held those with one, each worst first: the
	// eviction order without sorting the population.
	free, held evictHeap
	// bestMetric is early_stopping_metric's best value, for RunState.LastImprovement.
	bestMetric float64
	haveMetric bool
}

// member is a program in the population.
type member struct {
	protocol.Program
	order  uint64
	raw    []float64 // feature values, one per axis, before binning
	sketch *sketch
	// copyOf is the original's id for a seed copied to another island or a migrant.
	copyOf  string
	cell    string // key of the grid cell the member holds; "" when it holds none
	elite   bool
	heapIdx int
}

// Lineage is what is kept of every program, evicted or not, to walk any program's ancestry.
type Lineage struct {
	ID         string          `json:"id"`
	ParentID   string          `json:"parent_id,omitempty"`
	Copy       bool            `json:"copy,omitempty"` // a seed or migrant copied from ParentID
	Generation int             `json:"generation"`
	Island     int             `json:"island"`
	Iteration  int64           `json:"iteration,omitempty"`
	Status     protocol.Status `json:"status"`
	Score      float64         `json:"score"`
}

// Outcome says what folding one result changed, for the archive's events.
type Outcome struct {
	// Duplicate: this candidate was folded before; nothing changed.
	Duplicate bool
	// Covered: the result's sequence is at or below the last one folded (a snapshot holds
	// it); nothing changed.
	Covered bool
	// NewBest: the result's program is the new best.
	NewBest bool
	// NewCell: the result's program is the first in its MAP-Elites cell of its island;
	// Elite: it holds its cell (a new one, or one it took from a weaker program).
	NewCell, Elite bool
	// Migrations lists the migrations this result's island generation triggered.
	Migrations []Migration
}

// Migration is one island copying its best programs to its ring neighbours.
type Migration struct {
	From     int
	To       []int
	Programs int // copies made; duplicates and earlier migrants are skipped
}

// New returns an empty population for run under cfg.
func New(run string, cfg *runconfig.Config) *Population {
	p := &Population{
		run:      run,
		cfg:      cfg,
		programs: map[string]*member{},
		lineage:  map[string]Lineage{},
		state:    protocol.RunState{Meta: protocol.Meta{Run: run}, ByModel: map[string]int64{}},
		axes:     newAxes(cfg.Database),
	}
	for i := range max(cfg.Database.NumIslands, 1) {
		p.islands = append(p.islands, newIsland(i))
	}
	return p
}

// Fold adds one result, read at stream sequence seq. Each candidate is counted at most once,
// however often its result appears, and a result at or below the last sequence folded is
// skipped, so a population restored from a snapshot ignores what it already holds.
func (p *Population) Fold(r *protocol.Result, seq uint64) Outcome {
	if seq != 0 && seq <= p.state.LastSeq {
		return Outcome{Covered: true}
	}
	p.state.LastSeq = max(p.state.LastSeq, seq)
	c := &r.Candidate
	if _, dup := p.lineage[c.ID]; dup {
		return Outcome{Duplicate: true}
	}
	isl := p.islands[p.islandIndex(c.Island)]
	score := finite(r.Score)
	if r.Status != protocol.StatusOK {
		score = 0
	}
	p.lineage[c.ID] = Lineage{
		ID: c.ID, ParentID: c.ParentID, Generation: c.Generation, Island: isl.id,
		Iteration: c.Iteration, Status: r.Status, Score: score,
	}
	seed := c.IsSeed()
	if seed {
		p.state.Seeds++
		noteSeed(&p.state, r)
	} else {
		p.state.Iterations++
		p.state.ByModel[c.Model]++
		isl.generations++
	}
	if r.Status != protocol.StatusOK {
		p.state.Failed++
	}
	if !seed {
		isl.remember(attempt(r, isl.id, score), p.recentCap())
		p.account(r, score)
	}
	if r.Status != protocol.StatusRejected {
		if seed { // a seed is on every island
			for _, t := range p.islands {
				p.noteSeen(t, c.Code)
			}
		} else {
			p.noteSeen(isl, c.Code)
		}
	}
	p.trackImprovement(r, score)

	var out Outcome
	// A failed program is kept only while nothing better exists, so a run whose seed fails
	// still has a parent for the model to repair.
	keep := r.Status != protocol.StatusRejected && c.Code != "" &&
		(r.Status == protocol.StatusOK || seed || p.best == nil)
	if keep {
		m := &member{
			Program: protocol.Program{
				ID: c.ID, ParentID: c.ParentID, Code: c.Code, Score: score,
				Metrics: r.Metrics, Artifacts: r.Artifacts, Status: r.Status,
				Generation: c.Generation, Iteration: c.Iteration, Changes: c.Changes, Reason: r.Reason,
			},
			sketch: newSketch(c.Code),
		}
		m.raw = p.featureValues(m)
		for i := range p.axes {
			p.axes[i].observe(m.raw[i])
		}
		out.NewCell = p.file(isl, m)
		out.Elite = m.cell != ""
		if seed && p.state.Seeds == 1 {
			p.state.SeedScore = score
		}
		if p.best == nil || rankScore(m) > rankScore(p.best) {
			p.best, out.NewBest = m, true
			p.state.BestID, p.state.BestScore = m.ID, m.Score
		}
		p.addElite(m)
		if seed { // seeds go into every island
			for _, t := range p.islands {
				if t != isl {
					p.fileCopy(m, t)
				}
			}
		}
	}
	if db := p.cfg.Database; !seed && len(p.islands) > 1 && db.MigrationInterval > 0 && db.MigrationRate > 0 &&
		isl.generations%int64(db.MigrationInterval) == 0 {
		out.Migrations = append(out.Migrations, p.migrate(isl))
	}
	p.evict()
	p.state.Population = len(p.programs)
	return out
}

func (p *Population) islandIndex(i int) int {
	n := len(p.islands)
	return ((i % n) + n) % n
}

// featureValues measures a program on every axis. Diversity is the mean distance to the
// elite archive's head, which is what a new program should differ from.
func (p *Population) featureValues(m *member) []float64 {
	raw := make([]float64, len(p.axes))
	for i, a := range p.axes {
		switch a.name {
		case dimComplexity:
			raw[i] = float64(len(m.Code))
		case dimDiversity:
			n := min(len(p.elites), diversityRefs)
			var d float64
			for _, e := range p.elites[:n] {
				d += m.sketch.distance(e.sketch)
			}
			if n > 0 {
				raw[i] = d / float64(n)
			}
		case dimScore:
			raw[i] = m.Score
		default:
			raw[i] = finite(m.Metrics[a.name])
		}
	}
	return raw
}

// file places m on island isl: in the program set, the island, and its grid cell if it is
// fitter than the cell's holder.
func (p *Population) file(isl *island, m *member) (newCell bool) {
	m.order = p.next
	p.next++
	m.Island = isl.id
	coords := make([]int, len(p.axes))
	for i := range p.axes {
		coords[i] = p.axes[i].bin(m.raw[i])
	}
	m.Features = coords
	p.programs[m.ID] = m
	isl.add(m)
	key := cellKey(coords)
	if holder := isl.grid[key]; holder == nil || rankScore(m) > rankScore(holder) {
		newCell = holder == nil
		if holder != nil {
			holder.cell = ""
			p.held.remove(holder)
			p.free.push(holder)
		}
		isl.grid[key] = m
		m.cell = key
		p.held.push(m)
	} else {
		p.free.push(m)
	}
	if isl.best == nil || rankScore(m) > rankScore(isl.best) {
		isl.best = m
	}
	return newCell
}

// copyID names the copy of program id on island t.
func copyID(id string, t int) string { return id + "~i" + strconv.Itoa(t) }

// fileCopy puts a copy of the original m on island t, unless that island already holds the
// same code. It reports whether a copy was made.
func (p *Population) fileCopy(m *member, t *island) bool {
	id := copyID(m.ID, t.id)
	if t.codes[m.Code] > 0 {
		return false
	}
	if _, taken := p.lineage[id]; taken {
		return false
	}
	c := &member{Program: m.Program, raw: m.raw, sketch: m.sketch, copyOf: m.ID}
	c.ID, c.ParentID = id, m.ID
	p.lineage[id] = Lineage{ID: id, ParentID: m.ID, Copy: true, Generation: m.Generation, Island: t.id,
		Iteration: m.Iteration, Status: m.Status, Score: m.Score}
	p.file(t, c)
	return true
}

// migrate copies the island's top migration_rate programs to its two ring neighbours,
// skipping programs that arrived by migration and code the neighbour already holds.
func (p *Population) migrate(src *island) Migration {
	n := len(p.islands)
	mig := Migration{From: src.id, To: []int{(src.id + 1) % n}}
	if left := (src.id + n - 1) % n; left != mig.To[0] {
		mig.To = append(mig.To, left)
	}
	k := max(1, int(float64(len(src.members))*p.cfg.Database.MigrationRate))
	for _, m := range slices.Clone(src.ranked[:min(k, len(src.ranked))]) {
		if m.copyOf != "" {
			continue
		}
		for _, t := range mig.To {
			if p.fileCopy(m, p.islands[t]) {
				mig.Programs++
			}
		}
	}
	src.migrations++
	return mig
}

// addElite keeps m in the elite archive if it is among the archive_size best originals.
func (p *Population) addElite(m *member) {
	if m.Status != protocol.StatusOK || m.copyOf != "" {
		return
	}
	limit := max(p.cfg.Database.ArchiveSize, 1)
	i := len(p.elites)
	for i > 0 && worse(p.elites[i-1], m) {
		i--
	}
	if i >= limit {
		return
	}
	if len(p.elites) == limit {
		p.elites[limit-1].elite = false
		p.elites = p.elites[:limit-1]
	}
	p.elites = append(p.elites, nil)
	copy(p.elites[i+1:], p.elites[i:])
	p.elites[i] = m
	m.elite = true
}

// trackImprovement moves LastImprovement when early_stopping_metric (the score when the
// evaluator does not return it) beats its best by more than convergence_threshold.
func (p *Population) trackImprovement(r *protocol.Result, score float64) {
	if r.Status != protocol.StatusOK {
		return
	}
	v, ok := r.Metrics[p.cfg.EarlyStoppingMetric]
	if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
		v = score
	}
	if !p.haveMetric {
		p.bestMetric, p.haveMetric = v, true
		p.state.LastImprovement = p.state.Iterations
		return
	}
	if v-p.bestMetric > p.cfg.ConvergenceThreshold {
		p.bestMetric = v
		p.state.LastImprovement = p.state.Iterations
	}
}

// recentCap is how many attempts an island remembers for prompts.
func (p *Population) recentCap() int {
	return max(16, p.cfg.Prompt.NumTopPrograms+p.cfg.Prompt.NumDiversePrograms)
}

// attempt is what a prompt is told of an earlier attempt: its outcome, not its code.
func attempt(r *protocol.Result, island int, score float64) protocol.Program {
	c := &r.Candidate
	return protocol.Program{
		ID: c.ID, ParentID: c.ParentID, Score: score, Metrics: r.Metrics, Status: r.Status,
		Generation: c.Generation, Island: island, Iteration: c.Iteration, Changes: c.Changes, Reason: r.Reason,
		Artifacts: r.Artifacts, // the planner shows a failed attempt's output (capped by prompt.max_artifact_bytes)
	}
}

// evict drops programs beyond population_size: the worst of those holding no cell first,
// then the worst cell holders, never the best program nor an island's best.
func (p *Population) evict() {
	limit := p.cfg.Database.PopulationSize
	if limit <= 0 {
		return
	}
	var kept []*member
	for len(p.programs) > limit {
		m := p.worstUnprotected(&kept)
		if m == nil {
			break
		}
		p.remove(m)
	}
	for _, m := range kept {
		if m.cell != "" {
			p.held.push(m)
		} else {
			p.free.push(m)
		}
	}
}

func (p *Population) worstUnprotected(kept *[]*member) *member {
	for _, h := range []*evictHeap{&p.free, &p.held} {
		for h.Len() > 0 {
			m := h.pop()
			if m == p.best || m == p.islands[m.Island].best {
				*kept = append(*kept, m)
				continue
			}
			return m
		}
	}
	return nil
}

// remove takes m out of the population (it is already out of its heap).
func (p *Population) remove(m *member) {
	delete(p.programs, m.ID)
	p.islands[m.Island].remove(m)
	if m.elite {
		for i, e := range p.elites {
			if e == m {
				p.elites = append(p.elites[:i], p.elites[i+1:]...)
				break
			}
		}
		m.elite = false
	}
}

// rankScore orders programs by fitness: a failed program is below every working one.
func rankScore(m *member) float64 {
	if m.Status != protocol.StatusOK {
		return math.Inf(-1)
	}
	return m.Score
}

// worse reports whether a ranks below b: lower fitness, or equal fitness and newer.
func worse(a, b *member) bool {
	if ra, rb := rankScore(a), rankScore(b); ra != rb {
		return ra < rb
	}
	return a.order > b.order
}

// State returns the run's counters, best and island summary.
func (p *Population) State() protocol.RunState {
	s := p.state
	s.ByModel = maps.Clone(p.state.ByModel)
	s.Models = maps.Clone(p.state.Models)
	s.Islands = make([]protocol.IslandState, len(p.islands))
	for i, isl := range p.islands {
		is := protocol.IslandState{Island: i, Programs: len(isl.members), Cells: len(isl.grid), Migrations: isl.migrations}
		if isl.best != nil {
			is.BestID, is.BestScore = isl.best.ID, isl.best.Score
		}
		s.Islands[i] = is
	}
	return s
}

// Best returns the best program, or false when nothing has been folded.
func (p *Population) Best() (protocol.Program, bool) {
	if p.best == nil {
		return protocol.Program{}, false
	}
	return p.best.Program, true
}

// Len is the number of programs held, copies included.
func (p *Population) Len() int { return len(p.programs) }

// Ancestry walks id's lineage back to its seed: id first, then its parent, and so on. Copies
// (seeds on other islands, migrants) appear as the step from the copy to its original.
func (p *Population) Ancestry(id string) []Lineage {
	var out []Lineage
	for id != "" && len(out) <= len(p.lineage) {
		l, ok := p.lineage[id]
		if !ok {
			break
		}
		out = append(out, l)
		id = l.ParentID
	}
	return out
}

// CheckpointInterval is how many folded results the archive lets pass between snapshots of
// the run (checkpoint_interval).
func (p *Population) CheckpointInterval() int { return max(p.cfg.CheckpointInterval, 1) }
