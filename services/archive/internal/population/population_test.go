package population

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

func result(id string, seed bool, status protocol.Status, score float64) *protocol.Result {
	c := protocol.Candidate{Meta: protocol.Meta{ID: id, Run: "r"}, Code: "code " + id, Model: "m"}
	if !seed {
		c.TaskID = "t-" + id
	}
	if status == protocol.StatusRejected {
		c.Code = ""
	}
	return &protocol.Result{Meta: protocol.Meta{ID: protocol.ResultID(id), Run: "r"}, Candidate: c, Status: status, Score: score}
}

// stream is a fixed sequence of results with duplicates, failures and rejections.
func stream() []*protocol.Result {
	rs := []*protocol.Result{result("seed", true, protocol.StatusOK, 0.1)}
	for i := range 60 {
		id := fmt.Sprintf("c%d", i)
		switch i % 7 {
		case 3:
			rs = append(rs, result(id, false, protocol.StatusFailed, 0))
		case 5:
			rs = append(rs, result(id, false, protocol.StatusRejected, 0))
		default:
			rs = append(rs, result(id, false, protocol.StatusOK, float64((i*37)%50)/50))
		}
		if i%10 == 0 {
			rs = append(rs, rs[len(rs)-1]) // a redelivered result
		}
	}
	return rs
}

func foldAll(cfg *runconfig.Config, rs []*protocol.Result) *Population {
	p := New("r", cfg)
	for i, r := range rs {
		p.Fold(r, uint64(i+1))
	}
	return p
}

func TestFoldCountsEachCandidateOnce(t *testing.T) {
	rs := stream()
	p := foldAll(runconfig.Default(), rs)
	st := p.State()
	if st.Seeds != 1 || st.Iterations != 60 {
		t.Fatalf("seeds, iterations = %d, %d; want 1, 60 (duplicates must not count)", st.Seeds, st.Iterations)
	}
	var failed int64
	for i := range 60 {
		if i%7 == 3 || i%7 == 5 {
			failed++
		}
	}
	if st.Failed != failed {
		t.Errorf("failed = %d, want %d", st.Failed, failed)
	}
	if st.ByModel["m"] != 60 {
		t.Errorf("by model = %v, want m:60", st.ByModel)
	}
	if st.LastSeq != uint64(len(rs)) {
		t.Errorf("last seq = %d, want %d", st.LastSeq, len(rs))
	}
}

func TestFoldIsDeterministic(t *testing.T) {
	rs := stream()
	a, b := foldAll(runconfig.Default(), rs), foldAll(runconfig.Default(), rs)
	if !reflect.DeepEqual(a.State(), b.State()) {
		t.Fatalf("two folds of one stream differ:\n%+v\n%+v", a.State(), b.State())
	}
	for seed := range int64(20) {
		pa, ta, ia, _ := a.Sample(seed)
		pb, tb, ib, _ := b.Sample(seed)
		if !reflect.DeepEqual(pa, pb) || !reflect.DeepEqual(ta, tb) || !reflect.DeepEqual(ia, ib) {
			t.Fatalf("sample(%d) differs between equal folds", seed)
		}
	}
}

func TestReplayAfterRestartMatchesOneFold(t *testing.T) {
	rs := stream()
	whole := foldAll(runconfig.Default(), rs)
	// A restarted archive folds the stream again from the start; one that crashed mid-fold
	// and replays sees the first part twice.
	again := New("r", runconfig.Default())
	for i, r := range rs[:30] {
		again.Fold(r, uint64(i+1))
	}
	for i, r := range rs {
		again.Fold(r, uint64(i+1))
	}
	if got, want := again.State(), whole.State(); got.Iterations != want.Iterations || got.BestID != want.BestID || got.Failed != want.Failed {
		t.Fatalf("refolded state %+v, want %+v", got, want)
	}
}

func TestBestAndSeedScore(t *testing.T) {
	p := New("r", runconfig.Default())
	p.Fold(result("seed", true, protocol.StatusOK, 0.2), 1)
	if out := p.Fold(result("a", false, protocol.StatusOK, 0.5), 2); !out.NewBest {
		t.Error("a better program is not the new best")
	}
	if out := p.Fold(result("b", false, protocol.StatusOK, 0.5), 3); out.NewBest {
		t.Error("an equal score replaced the best; the older program should stay")
	}
	p.Fold(result("c", false, protocol.StatusFailed, 0.9), 4)
	st := p.State()
	if st.BestID != "a" || st.BestScore != 0.5 || st.SeedScore != 0.2 {
		t.Errorf("best %s %.2f seed %.2f; want a 0.50 seed 0.20", st.BestID, st.BestScore, st.SeedScore)
	}
}

func TestFailedSeedIsStillAParent(t *testing.T) {
	p := New("r", runconfig.Default())
	p.Fold(result("seed", true, protocol.StatusFailed, 0), 1)
	parent, _, _, ok := p.Sample(1)
	if !ok || parent.ID != "seed" {
		t.Fatalf("sample = %q, %v; want the failed seed so the model can repair it", parent.ID, ok)
	}
}

func TestPopulationSizeEvictsWorstButKeepsBest(t *testing.T) {
	cfg := runconfig.Default()
	cfg.Database.PopulationSize = 5
	p := New("r", cfg)
	for i := range 20 {
		p.Fold(result(fmt.Sprint(i), i == 0, protocol.StatusOK, float64(i%10)), uint64(i+1))
	}
	if p.Len() != 5 {
		t.Fatalf("population = %d, want 5", p.Len())
	}
	if b, _ := p.Best(); b.Score != 9 || b.ID != "9" {
		t.Errorf("best = %s (%.0f), want 9 (9): the oldest of the best scores", b.ID, b.Score)
	}
}

func TestSampleRatios(t *testing.T) {
	cfg := runconfig.Default()
	cfg.Database.ExplorationRatio, cfg.Database.ExploitationRatio, cfg.Database.ArchiveSize = 0, 1, 3
	p := New("r", cfg)
	for i := range 30 {
		p.Fold(result(fmt.Sprint(i), i == 0, protocol.StatusOK, float64(i)), uint64(i+1))
	}
	for seed := range int64(200) {
		parent, top, insp, _ := p.Sample(seed)
		if parent.Score < 27 {
			t.Fatalf("exploitation-only sample drew %s (score %.0f), outside the top 3 elites", parent.ID, parent.Score)
		}
		if len(top) != cfg.Prompt.NumTopPrograms || len(insp) != cfg.Prompt.NumDiversePrograms {
			t.Fatalf("top %d inspirations %d; want %d and %d", len(top), len(insp), cfg.Prompt.NumTopPrograms, cfg.Prompt.NumDiversePrograms)
		}
		for _, q := range append(top, insp...) {
			if q.ID == parent.ID {
				t.Fatal("the parent is among its own inspirations")
			}
		}
	}
}
