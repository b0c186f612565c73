package ui

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/services/archive"
)

// Caps on what one run's aggregate keeps of its failures, so that a run whose candidates all
// fail differently still costs a bounded amount of memory and of page.
const (
	maxFailureGroups = 50
	maxArtifactBytes = 4 << 10
	maxArtifacts     = 6
)

// runAgg is one run's aggregate of RESULTS: the archive's population (folded here too, so
// the grid and lineage are the archive's own), the best score's steps over evaluations and
// time, failures by reason and throughput by generator and model. Each section has a
// version, so an event stream sends only what moved since it last sent.
type runAgg struct {
	run    string
	mirror *archive.Mirror
	code   map[string]string // program id → code, for the best's diff against its parent

	evaluations int64 // results folded, seeds and failures included
	points      []scorePoint
	best        float64
	haveBest    bool
	bestID      string
	bestVer     uint64
	gridVer     uint64
	grid        *archive.Grid // cached at gridVer
	gridAt      uint64
	failures    map[string]*failureGroup
	failVer     uint64
	byGenerator map[string]*rate
	byModel     map[string]*rate
	first, last time.Time
}

// scorePoint is the best score after N evaluations, at T (unix milliseconds).
type scorePoint struct {
	N    int64   `json:"n"`
	T    int64   `json:"t"`
	Best float64 `json:"best"`
}

// failureGroup is the failures that share a status and the first line of their reason.
type failureGroup struct {
	Status    string            `json:"status"`
	Reason    string            `json:"reason"`
	Count     int64             `json:"count"`
	Example   string            `json:"example"` // a candidate id
	Detail    string            `json:"detail,omitempty"`
	Artifacts map[string]string `json:"artifacts,omitempty"`
}

// rate is one generator's or model's output.
type rate struct {
	Name       string  `json:"name"`
	Results    int64   `json:"results"`
	OK         int64   `json:"ok"`
	PerMinute  float64 `json:"per_minute"`
	GenerateMS float64 `json:"generate_ms"` // mean
	EvalMS     float64 `json:"eval_ms"`     // mean
	first      time.Time
	last       time.Time
	genSum     int64
	evalSum    int64
}

func newRunAgg(run string, cfg *runconfig.Config) *runAgg {
	return &runAgg{
		run: run, mirror: archive.NewMirror(run, cfg), code: map[string]string{},
		failures: map[string]*failureGroup{}, byGenerator: map[string]*rate{}, byModel: map[string]*rate{},
	}
}

// fold adds one result; it reports whether anything changed.
func (a *runAgg) fold(r *protocol.Result, seq uint64) bool {
	folded, _ := a.mirror.Fold(r, seq)
	if !folded {
		return false
	}
	a.evaluations++
	a.gridVer++
	c := &r.Candidate
	a.code[c.ID] = c.Code
	at := r.CreatedAt
	if at.IsZero() {
		at = c.CreatedAt
	}
	if a.first.IsZero() || at.Before(a.first) {
		a.first = at
	}
	if at.After(a.last) {
		a.last = at
	}
	st := a.mirror.State()
	if st.BestID != "" && (st.BestID != a.bestID || !a.haveBest) {
		a.bestID, a.best, a.haveBest = st.BestID, st.BestScore, true
		a.bestVer++
		a.points = append(a.points, scorePoint{N: a.evaluations, T: at.UnixMilli(), Best: st.BestScore})
	}
	if r.Status != protocol.StatusOK {
		a.failed(r)
	}
	if !c.IsSeed() {
		gen := c.Generator
		if gen == "" {
			gen = "(unnamed)"
		}
		model := c.Model
		if model == "" {
			model = "(none)"
		}
		for _, rt := range []*rate{a.rateOf(a.byGenerator, gen), a.rateOf(a.byModel, model)} {
			rt.add(r, at)
		}
	}
	return true
}

func (a *runAgg) rateOf(m map[string]*rate, name string) *rate {
	rt := m[name]
	if rt == nil {
		rt = &rate{Name: name}
		m[name] = rt
	}
	return rt
}

func (rt *rate) add(r *protocol.Result, at time.Time) {
	rt.Results++
	if r.Status == protocol.StatusOK {
		rt.OK++
	}
	if rt.first.IsZero() || at.Before(rt.first) {
		rt.first = at
	}
	if at.After(rt.last) {
		rt.last = at
	}
	rt.genSum += r.Candidate.GenerateMS
	rt.evalSum += r.EvalMS
	rt.GenerateMS = float64(rt.genSum) / float64(rt.Results)
	rt.EvalMS = float64(rt.evalSum) / float64(rt.Results)
	if span := rt.last.Sub(rt.first); span > time.Second {
		rt.PerMinute = float64(rt.Results-1) / span.Minutes()
	}
}

// failed files a failed result under its status and the first line of its reason.
func (a *runAgg) failed(r *protocol.Result) {
	reason := r.Reason
	for _, alt := range []string{r.Candidate.Rejected, r.Candidate.Abandoned} {
		if reason == "" {
			reason = alt
		}
	}
	first, _, _ := strings.Cut(strings.TrimSpace(reason), "\n")
	first = clip(first, 160)
	key := string(r.Status) + "\x00" + first
	g := a.failures[key]
	if g == nil {
		if len(a.failures) >= maxFailureGroups {
			key = string(r.Status) + "\x00(other reasons)"
			if g = a.failures[key]; g == nil {
				g = &failureGroup{Status: string(r.Status), Reason: "(other reasons)"}
				a.failures[key] = g
			}
		} else {
			g = &failureGroup{Status: string(r.Status), Reason: first}
			a.failures[key] = g
		}
	}
	if g.Count == 0 {
		g.Example = r.Candidate.ID
		g.Detail = clip(reason, maxArtifactBytes)
		for _, k := range slices.Sorted(maps.Keys(r.Artifacts)) {
			if len(g.Artifacts) >= maxArtifacts {
				break
			}
			if g.Artifacts == nil {
				g.Artifacts = map[string]string{}
			}
			g.Artifacts[k] = clip(r.Artifacts[k], maxArtifactBytes)
		}
	}
	g.Count++
	a.failVer++
}

// gridNow returns the islands' grids, computed at most once per fold.
func (a *runAgg) gridNow() archive.Grid {
	if a.grid == nil || a.gridAt != a.gridVer {
		g := a.mirror.Grid()
		a.grid, a.gridAt = &g, a.gridVer
	}
	return *a.grid
}

// bestProgram is the best program with its diff against its parent and its lineage.
type bestProgram struct {
	ID         string             `json:"id"`
	ParentID   string             `json:"parent_id,omitempty"`
	Score      float64            `json:"score"`
	Metrics    map[string]float64 `json:"metrics,omitempty"`
	Generation int                `json:"generation"`
	Island     int                `json:"island"`
	Iteration  int64              `json:"iteration"`
	Code       string             `json:"code"`
	Diff       []diffLine         `json:"diff,omitempty"`
	Lineage    []archive.Ancestor `json:"lineage"`
}

// bestNow returns the best program, or nil before the first result.
func (a *runAgg) bestNow() *bestProgram {
	if !a.haveBest {
		return nil
	}
	lineage := a.mirror.Ancestry(a.bestID)
	b := &bestProgram{ID: a.bestID, Score: a.best, Code: a.codeOf(a.bestID), Lineage: lineage}
	if len(lineage) > 0 {
		self := lineage[0]
		b.Generation, b.Island, b.Iteration = self.Generation, self.Island, self.Iteration
	}
	// The parent whose code the best changed: past copies (migrants, seeds on other
	// islands), which carry their original's code unchanged.
	for _, l := range lineage[min(1, len(lineage)):] {
		if l.Copy {
			continue
		}
		b.ParentID = l.ID
		break
	}
	if b.ParentID != "" {
		b.Diff = diffLines(a.codeOf(b.ParentID), b.Code)
	}
	return b
}

// codeOf returns a program's code; a copy ("<id>~i<island>") has its original's.
func (a *runAgg) codeOf(id string) string {
	if c, ok := a.code[id]; ok {
		return c
	}
	if orig, _, ok := strings.Cut(id, "~i"); ok {
		return a.code[orig]
	}
	return ""
}

// failuresNow returns the failure groups, most frequent first.
func (a *runAgg) failuresNow() []failureGroup {
	out := []failureGroup{}
	for _, g := range a.failures {
		out = append(out, *g)
	}
	slices.SortFunc(out, func(x, y failureGroup) int {
		if x.Count != y.Count {
			return int(y.Count - x.Count)
		}
		return strings.Compare(x.Status+x.Reason, y.Status+y.Reason)
	})
	return out
}

// throughput is the run's output by generator replica and by model.
type throughput struct {
	ByGenerator []rate `json:"by_generator"`
	ByModel     []rate `json:"by_model"`
}

func (a *runAgg) throughputNow() throughput {
	list := func(m map[string]*rate) []rate {
		out := []rate{}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			out = append(out, *m[k])
		}
		return out
	}
	return throughput{ByGenerator: list(a.byGenerator), ByModel: list(a.byModel)}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// specConfig returns the run's config, or the default one when the spec cannot be read, as
// the archive folds.
func (f *feed) specConfig(ctx context.Context, run string) *runconfig.Config {
	if spec, err := f.store.Spec(ctx, run); err == nil {
		return spec.Config
	}
	return runconfig.Default()
}

// maxIterations is the config's max_iterations, 0 when it has none or does not parse.
func maxIterations(config string) int64 {
	cfg, _, err := runconfig.Parse([]byte(config))
	if err != nil {
		return 0
	}
	return int64(cfg.MaxIterations)
}
