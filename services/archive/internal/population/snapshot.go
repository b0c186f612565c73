package population

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// snapshotVersion is the layout of an encoded snapshot; Restore rejects any other.
const snapshotVersion = 1

// ErrSnapshot: a snapshot could not be read back.
var ErrSnapshot = errors.New("bad population snapshot")

// snapshot is a population as bytes: every slice in a fixed order and maps only where
// encoding/json sorts their keys, so equal populations encode to equal bytes.
type snapshot struct {
	V        int               `json:"v"`
	Run      string            `json:"run"`
	Next     uint64            `json:"next"`
	State    protocol.RunState `json:"state"`
	Programs []snapMember      `json:"programs"` // filing order
	Islands  []snapIsland      `json:"islands"`
	Elites   []string          `json:"elites"`
	Axes     []snapAxis        `json:"axes"`
	Lineage  []Lineage         `json:"lineage"` // sorted by id
	BestID   string            `json:"best_id,omitempty"`
	Metric   *float64          `json:"best_metric,omitempty"`
}

type snapMember struct {
	protocol.Program
	Order  uint64    `json:"order"`
	Raw    []float64 `json:"raw"`
	CopyOf string    `json:"copy_of,omitempty"`
	Cell   string    `json:"cell,omitempty"`
}

type snapIsland struct {
	Members     []string           `json:"members"`
	BestID      string             `json:"best_id,omitempty"`
	Generations int64              `json:"generations"`
	Migrations  int64              `json:"migrations"`
	Recent      []protocol.Program `json:"recent,omitempty"`
	Seen        []string           `json:"seen,omitempty"`
}

type snapAxis struct {
	Name string  `json:"name"`
	Bins int     `json:"bins"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	Seen bool    `json:"seen"`
}

// byOrder returns the programs in the order they were filed, so that encodings do not depend
// on map order.
func (p *Population) byOrder() []*member {
	ms := make([]*member, 0, len(p.programs))
	for _, m := range p.programs {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b *member) int { return compareOrder(a.order, b.order) })
	return ms
}

// Snapshot encodes the whole population. Two populations folded from the same results, one
// of them restored from a snapshot part way, encode to the same bytes.
func (p *Population) Snapshot() ([]byte, error) {
	s := snapshot{V: snapshotVersion, Run: p.run, Next: p.next, State: p.state}
	s.State.Islands, s.State.UpdatedAt = nil, s.State.UpdatedAt.UTC()
	for _, m := range p.byOrder() {
		s.Programs = append(s.Programs, snapMember{Program: m.Program, Order: m.order, Raw: m.raw, CopyOf: m.copyOf, Cell: m.cell})
	}
	for _, isl := range p.islands {
		si := snapIsland{Members: make([]string, len(isl.members)), Generations: isl.generations, Migrations: isl.migrations, Recent: isl.recent, Seen: isl.seen}
		for i, m := range isl.members {
			si.Members[i] = m.ID
		}
		if isl.best != nil {
			si.BestID = isl.best.ID
		}
		s.Islands = append(s.Islands, si)
	}
	for _, e := range p.elites {
		s.Elites = append(s.Elites, e.ID)
	}
	for _, a := range p.axes {
		s.Axes = append(s.Axes, snapAxis{Name: a.name, Bins: a.bins, Min: a.min, Max: a.max, Seen: a.seen})
	}
	s.Lineage = make([]Lineage, 0, len(p.lineage))
	for _, l := range p.lineage {
		s.Lineage = append(s.Lineage, l)
	}
	slices.SortFunc(s.Lineage, func(a, b Lineage) int { return strings.Compare(a.ID, b.ID) })
	if p.best != nil {
		s.BestID = p.best.ID
	}
	if p.haveMetric {
		v := p.bestMetric
		s.Metric = &v
	}
	data, err := json.Marshal(&s)
	if err != nil {
		return nil, fmt.Errorf("encode snapshot of run %s: %w", p.run, err)
	}
	return data, nil
}

func compareOrder(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Restore rebuilds a population from Snapshot's bytes under the run's config.
func Restore(run string, cfg *runconfig.Config, data []byte) (*Population, error) {
	var s snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	if s.V != snapshotVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrSnapshot, s.V, snapshotVersion)
	}
	if s.Run != run {
		return nil, fmt.Errorf("%w: it holds run %q, not %q", ErrSnapshot, s.Run, run)
	}
	p := New(run, cfg)
	if len(s.Islands) != len(p.islands) || len(s.Axes) != len(p.axes) {
		return nil, fmt.Errorf("%w: %d islands and %d feature dimensions, the run's config has %d and %d",
			ErrSnapshot, len(s.Islands), len(s.Axes), len(p.islands), len(p.axes))
	}
	p.next, p.state = s.Next, s.State
	if p.state.ByModel == nil {
		p.state.ByModel = map[string]int64{}
	}
	for i, a := range s.Axes {
		if a.Name != p.axes[i].name || a.Bins != p.axes[i].bins {
			return nil, fmt.Errorf("%w: feature dimension %d is %s/%d bins, the run's config says %s/%d",
				ErrSnapshot, i, a.Name, a.Bins, p.axes[i].name, p.axes[i].bins)
		}
		p.axes[i].min, p.axes[i].max, p.axes[i].seen = a.Min, a.Max, a.Seen
	}
	sketches := map[string]*sketch{}
	for _, sm := range s.Programs {
		m := &member{Program: sm.Program, order: sm.Order, raw: sm.Raw, copyOf: sm.CopyOf, cell: sm.Cell}
		if len(m.raw) != len(p.axes) || m.Island < 0 || m.Island >= len(p.islands) {
			return nil, fmt.Errorf("%w: program %s does not fit the run's islands and dimensions", ErrSnapshot, m.ID)
		}
		if sk, ok := sketches[m.Code]; ok {
			m.sketch = sk
		} else {
			m.sketch = newSketch(m.Code)
			sketches[m.Code] = m.sketch
		}
		p.programs[m.ID] = m
		if m.cell != "" {
			p.islands[m.Island].grid[m.cell] = m
			p.held.push(m)
		} else {
			p.free.push(m)
		}
	}
	find := func(id string) (*member, error) {
		m, ok := p.programs[id]
		if !ok {
			return nil, fmt.Errorf("%w: it names program %s but does not hold it", ErrSnapshot, id)
		}
		return m, nil
	}
	for i, si := range s.Islands {
		isl := p.islands[i]
		isl.generations, isl.migrations, isl.recent, isl.seen = si.Generations, si.Migrations, si.Recent, si.Seen
		for _, id := range si.Members {
			m, err := find(id)
			if err != nil {
				return nil, err
			}
			isl.add(m)
		}
		if si.BestID != "" {
			if isl.best, _ = find(si.BestID); isl.best == nil {
				return nil, fmt.Errorf("%w: island %d's best %s is missing", ErrSnapshot, i, si.BestID)
			}
		}
	}
	for _, id := range s.Elites {
		m, err := find(id)
		if err != nil {
			return nil, err
		}
		m.elite = true
		p.elites = append(p.elites, m)
	}
	for _, l := range s.Lineage {
		p.lineage[l.ID] = l
	}
	if s.BestID != "" {
		var err error
		if p.best, err = find(s.BestID); err != nil {
			return nil, err
		}
	}
	if s.Metric != nil {
		p.bestMetric, p.haveMetric = *s.Metric, true
	}
	return p, nil
}
