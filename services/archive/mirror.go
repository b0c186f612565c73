package archive

import (
	"maps"
	"slices"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/services/archive/internal/population"
)

// Mirror is one run's population folded outside the archive, for viewers such as the web
// UI. The fold is a pure function of RESULTS, so folding the same results in stream order
// gives the archive's own population (islands, grids, best, lineage) without asking the
// archive anything and without any write. A Mirror is not safe for concurrent use.
type Mirror struct {
	pop *population.Population
}

// NewMirror returns an empty mirror of run under cfg (the run's spec's config).
func NewMirror(run string, cfg *runconfig.Config) *Mirror {
	return &Mirror{pop: population.New(run, cfg)}
}

// Fold adds the result read at RESULTS sequence seq. It reports whether the result was new
// (not a duplicate or already covered) and whether its program became the best.
func (m *Mirror) Fold(r *protocol.Result, seq uint64) (folded, newBest bool) {
	out := m.pop.Fold(r, seq)
	return !out.Duplicate && !out.Covered, out.NewBest
}

// State returns the run's counters and best, as the archive writes them to <run>.state.
func (m *Mirror) State() protocol.RunState { return m.pop.State() }

// GridCell is one occupied MAP-Elites cell of an island: its coordinates by feature
// dimension and the program that holds it.
type GridCell struct {
	Coords    []int   `json:"coords"`
	ProgramID string  `json:"program"`
	Score     float64 `json:"score"`
}

// GridIsland is one island's grid and counters.
type GridIsland struct {
	Island      int        `json:"island"`
	Programs    int        `json:"programs"`
	BestID      string     `json:"best_id,omitempty"`
	Generations int64      `json:"generations"`
	Migrations  int64      `json:"migrations"`
	Cells       []GridCell `json:"cells"`
}

// GridDimension is one feature dimension: its name and number of bins.
type GridDimension struct {
	Name string `json:"name"`
	Bins int    `json:"bins"`
}

// Grid is every island's MAP-Elites grid.
type Grid struct {
	Dimensions []GridDimension `json:"dimensions"`
	Islands    []GridIsland    `json:"islands"`
}

// Grid returns the islands' grids: what the UI's heatmap shows. Its size is islands ×
// occupied cells, whatever the number of programs folded.
func (m *Mirror) Grid() Grid {
	v := m.pop.View()
	byID := make(map[string]*population.ViewProgram, len(v.Programs))
	for i := range v.Programs {
		byID[v.Programs[i].ID] = &v.Programs[i]
	}
	g := Grid{}
	for _, d := range v.Dimensions {
		g.Dimensions = append(g.Dimensions, GridDimension{Name: d.Name, Bins: d.Bins})
	}
	for i, isl := range v.Islands {
		gi := GridIsland{Island: i, Programs: len(isl.Members), BestID: isl.BestID, Generations: isl.Generations, Migrations: isl.Migrations, Cells: []GridCell{}}
		for _, id := range sortedValues(isl.Cells) {
			p, ok := byID[id]
			if !ok {
				continue
			}
			gi.Cells = append(gi.Cells, GridCell{Coords: p.Program.Features, ProgramID: id, Score: p.Score})
		}
		g.Islands = append(g.Islands, gi)
	}
	return g
}

// Ancestor is one program of a lineage: what the archive keeps of every program, evicted or
// not.
type Ancestor = population.Lineage

// Ancestry returns id's lineage back to its seed: id first, then its parent, and so on.
// Evicted programs are in it too: the archive keeps every program's lineage.
func (m *Mirror) Ancestry(id string) []Ancestor {
	return m.pop.Ancestry(id)
}

// sortedValues returns the map's values in the order of their keys, so a grid reads the
// same however often it is taken.
func sortedValues(cells map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(cells)) {
		out = append(out, cells[k])
	}
	return out
}
