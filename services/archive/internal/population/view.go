package population

import (
	"github.com/shoal-run/shoal/pkg/protocol"
)

// View is a population laid out for people and other tools (the checkpoint export): plain
// values in a fixed order.
type View struct {
	Iterations int64
	LastSeq    uint64
	BestID     string
	// Programs in filing order, with their raw feature values by dimension name.
	Programs []ViewProgram
	Islands  []ViewIsland
	// Elites is the elite archive, best first.
	Elites     []string
	Dimensions []ViewDimension
	// Ancestry is the best program's lineage, the best first.
	Ancestry []Lineage
}

// ViewProgram is one program with what the grid saw of it.
type ViewProgram struct {
	protocol.Program
	Features map[string]float64
	CopyOf   string
	Elite    bool
	HasCell  bool
}

// ViewIsland is one island: its members in order, its grid and counters.
type ViewIsland struct {
	Members     []string
	Cells       map[string]string // cell key ("3-7") → program id
	BestID      string
	Generations int64
	Migrations  int64
}

// ViewDimension is one feature dimension with the range seen so far.
type ViewDimension struct {
	Name     string
	Bins     int
	Min, Max float64
}

// View returns the population as a View.
func (p *Population) View() View {
	v := View{Iterations: p.state.Iterations, LastSeq: p.state.LastSeq, BestID: p.state.BestID}
	for _, m := range p.byOrder() {
		f := make(map[string]float64, len(p.axes))
		for i, a := range p.axes {
			f[a.name] = m.raw[i]
		}
		v.Programs = append(v.Programs, ViewProgram{Program: m.Program, Features: f, CopyOf: m.copyOf, Elite: m.elite, HasCell: m.cell != ""})
	}
	for _, isl := range p.islands {
		vi := ViewIsland{Cells: map[string]string{}, Generations: isl.generations, Migrations: isl.migrations}
		for _, m := range isl.members {
			vi.Members = append(vi.Members, m.ID)
		}
		for key, m := range isl.grid {
			vi.Cells[key] = m.ID
		}
		if isl.best != nil {
			vi.BestID = isl.best.ID
		}
		v.Islands = append(v.Islands, vi)
	}
	for _, e := range p.elites {
		v.Elites = append(v.Elites, e.ID)
	}
	for _, a := range p.axes {
		v.Dimensions = append(v.Dimensions, ViewDimension{Name: a.name, Bins: a.bins, Min: a.min, Max: a.max})
	}
	v.Ancestry = p.Ancestry(v.BestID)
	return v
}
