package archive_test

import (
	"context"
	"testing"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/services/archive"
)

// TestMirrorHoldsTheArchivesPopulation: a mirror folding RESULTS as read back from the
// server, duplicates included, holds what the running archive writes to the runs bucket
// (counters, best, each island's programs and occupied cells, best score per island), and
// its grid and the best's lineage agree with that state.
func TestMirrorHoldsTheArchivesPopulation(t *testing.T) {
	e, store, cfg := env(t)
	start(t, e)
	rs := results(0, 40)
	publish(t, e, rs)
	republish(t, e, rs[7]) // a redelivered evaluation: folded once by both
	st := waitState(t, store, 40)

	ctx := context.Background()
	stream, err := e.JS.Stream(ctx, e.Names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	m := archive.NewMirror(run, cfg)
	var folded int
	for seq := uint64(1); seq <= stream.CachedInfo().State.LastSeq; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var r protocol.Result
		if err := protocol.Decode(msg.Data, &r); err != nil {
			t.Fatal(err)
		}
		if ok, _ := m.Fold(&r, seq); ok {
			folded++
		}
	}
	if folded != len(rs) {
		t.Errorf("mirror folded %d results; want %d (the duplicate once)", folded, len(rs))
	}
	got := m.State()
	if got.Iterations != st.Iterations || got.Failed != st.Failed || got.Population != st.Population ||
		got.BestID != st.BestID || got.BestScore != st.BestScore || len(got.Islands) != len(st.Islands) {
		t.Fatalf("mirror state %+v; the archive wrote %+v", got, st)
	}
	g := m.Grid()
	if len(g.Dimensions) != 3 || g.Dimensions[2].Name != "speed" || g.Dimensions[2].Bins != 3 {
		t.Errorf("grid dimensions %+v; want complexity, diversity and speed (3 bins)", g.Dimensions)
	}
	for i, isl := range g.Islands {
		want := st.Islands[i]
		if isl.Programs != want.Programs || len(isl.Cells) != want.Cells || isl.BestID != want.BestID || isl.Migrations != want.Migrations {
			t.Errorf("island %d: mirror %d programs, %d cells, best %s, %d migrations; archive %+v",
				i, isl.Programs, len(isl.Cells), isl.BestID, isl.Migrations, want)
		}
		top := 0.0
		for _, c := range isl.Cells {
			if len(c.Coords) != 3 {
				t.Errorf("island %d cell %+v: want 3 coordinates", i, c)
			}
			top = max(top, c.Score)
		}
		if len(isl.Cells) > 0 && top > want.BestScore {
			t.Errorf("island %d: a cell scores %g, above the island's best %g", i, top, want.BestScore)
		}
	}
	lin := m.Ancestry(st.BestID)
	if len(lin) == 0 || lin[0].ID != st.BestID || lin[len(lin)-1].Generation != 0 {
		t.Errorf("lineage of the best %+v; want the best first and a seed last", lin)
	}
}
