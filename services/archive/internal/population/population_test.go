package population

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"slices"
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

// child is a generated OK result on island with metric x, for tests that place programs in
// cells by hand (feature_dimensions: [x]).
func child(id, parent string, island int, score, x float64) *protocol.Result {
	r := result(id, false, protocol.StatusOK, score)
	r.Candidate.ParentID, r.Candidate.Island = parent, island
	r.Metrics = map[string]float64{"x": x}
	return r
}

func foldAll(cfg *runconfig.Config, rs []*protocol.Result) *Population {
	p := New("r", cfg)
	for i, r := range rs {
		p.Fold(r, uint64(i+1))
	}
	return p
}

func encode(t *testing.T, p *Population) []byte {
	t.Helper()
	data, err := p.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestFoldCountsEachCandidateOnce(t *testing.T) {
	rs := synthetic(300, 5)
	p := foldAll(runconfig.Default(), rs)
	st := p.State()
	var failed int64
	ids := map[string]bool{}
	for _, r := range rs {
		if !ids[r.Candidate.ID] && r.Status != protocol.StatusOK {
			failed++
		}
		ids[r.Candidate.ID] = true
	}
	if st.Seeds != 1 || st.Iterations != 300 || st.ByModel["m"] != 300 {
		t.Fatalf("seeds %d iterations %d by model %v; want 1, 300, m:300 (redeliveries must not count)", st.Seeds, st.Iterations, st.ByModel)
	}
	if st.Failed != failed {
		t.Errorf("failed = %d, want %d", st.Failed, failed)
	}
	if st.LastSeq != uint64(len(rs)) {
		t.Errorf("last seq = %d, want %d", st.LastSeq, len(rs))
	}
	// Folding the stream again (a replay without a snapshot) changes nothing.
	before := encode(t, p)
	for i, r := range rs {
		if out := p.Fold(r, uint64(i+1)); !out.Covered {
			t.Fatalf("result at seq %d folded twice", i+1)
		}
	}
	if !bytes.Equal(before, encode(t, p)) {
		t.Error("refolding covered results changed the population")
	}
}

// TestSnapshotThenReplayIsBitForBit is the restart guarantee: a population restored from a
// snapshot taken anywhere in the stream, fed the rest of the stream (and, as after a restart,
// some results it already holds), is the population of one fold of the whole stream.
func TestSnapshotThenReplayIsBitForBit(t *testing.T) {
	cfg := runconfig.Default()
	cfg.Database.NumIslands = 4
	cfg.Database.PopulationSize = 400
	cfg.Database.ArchiveSize = 40
	cfg.Database.MigrationInterval = 25
	cfg.Database.FeatureDimensions = []string{"complexity", "diversity", "speed"}
	cfg.Database.FeatureBinsByDimension = map[string]int{"speed": 4}
	rs := synthetic(3000, 4)
	whole := foldAll(cfg, rs)
	want := encode(t, whole)
	if st := whole.State(); st.Population != 400 || st.Islands[3].Migrations == 0 {
		t.Fatalf("fixture too small to matter: population %d, island 3 migrations %d", st.Population, st.Islands[3].Migrations)
	}

	for _, cut := range []int{1, 77, 1000, 2345, len(rs)} {
		t.Run(fmt.Sprint("cut=", cut), func(t *testing.T) {
			first := foldAll(cfg, rs[:cut])
			restored, err := Restore("r", cfg, encode(t, first))
			if err != nil {
				t.Fatal(err)
			}
			from := max(cut-50, 0) // replay starts before the snapshot's end
			for i := from; i < len(rs); i++ {
				restored.Fold(rs[i], uint64(i+1))
			}
			if got := encode(t, restored); !bytes.Equal(got, want) {
				t.Fatalf("snapshot at %d + replay differs from one fold (%d vs %d bytes)", cut, len(got), len(want))
			}
			if !reflect.DeepEqual(restored.State(), whole.State()) {
				t.Fatalf("state differs:\n%+v\n%+v", restored.State(), whole.State())
			}
			for seed := range int64(50) {
				a, _ := whole.Sample(int(seed), 3, seed)
				b, _ := restored.Sample(int(seed), 3, seed)
				if !reflect.DeepEqual(a, b) {
					t.Fatalf("sample(%d) differs after restore", seed)
				}
			}
		})
	}
}

func TestRestoreRejectsAnotherConfig(t *testing.T) {
	p := foldAll(runconfig.Default(), synthetic(50, 5))
	data := encode(t, p)
	other := runconfig.Default()
	other.Database.NumIslands = 3
	if _, err := Restore("r", other, data); err == nil {
		t.Error("a snapshot of 5 islands restored under a 3-island config")
	}
	if _, err := Restore("other-run", runconfig.Default(), data); err == nil {
		t.Error("a snapshot restored under another run's name")
	}
	if _, err := Restore("r", runconfig.Default(), data[:len(data)/2]); err == nil {
		t.Error("a truncated snapshot restored")
	}
}

func TestBestSeedScoreAndFailures(t *testing.T) {
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
	if _, kept := p.programs["c"]; kept {
		t.Error("a failed program was kept although working ones exist")
	}
}

func TestFailedSeedIsStillAParent(t *testing.T) {
	p := New("r", runconfig.Default())
	p.Fold(result("seed", true, protocol.StatusFailed, 0), 1)
	s, ok := p.Sample(3, 0, 1)
	if !ok || (s.Parent.ID != "seed" && s.Parent.ID != copyID("seed", 3)) {
		t.Fatalf("sample = %q, %v; want the failed seed so the model can repair it", s.Parent.ID, ok)
	}
}

func TestSeedsGoIntoEveryIsland(t *testing.T) {
	p := New("r", runconfig.Default())
	seed := result("seed", true, protocol.StatusOK, 0.3)
	seed.Candidate.Island = 0
	p.Fold(seed, 1)
	st := p.State()
	if len(st.Islands) != 5 {
		t.Fatalf("islands = %d, want 5", len(st.Islands))
	}
	for i, is := range st.Islands {
		if is.Programs != 1 || is.Cells != 1 {
			t.Errorf("island %d holds %d programs in %d cells; want the seed in one", i, is.Programs, is.Cells)
		}
		s, _ := p.Sample(i, 0, 1)
		if s.Island != i || s.Parent.Code != seed.Candidate.Code {
			t.Errorf("island %d sampled island %d parent %q; want its seed", i, s.Island, s.Parent.ID)
		}
	}
	if st.Seeds != 1 || st.Iterations != 0 {
		t.Errorf("seeds %d iterations %d; copies must not count", st.Seeds, st.Iterations)
	}
}

func TestEmptyIslandSamplesAnother(t *testing.T) {
	p := New("r", runconfig.Default())
	p.Fold(child("a", "", 2, 0.5, 0), 1)
	s, ok := p.Sample(0, 0, 1)
	if !ok || s.Parent.ID != "a" || s.Island != 2 {
		t.Fatalf("sample of an empty island = %q from island %d, %v; want a from island 2", s.Parent.ID, s.Island, ok)
	}
}

// gridConfig is one island whose grid has one axis, the metric x, in 10 bins.
func gridConfig(size int) *runconfig.Config {
	cfg := runconfig.Default()
	cfg.Database.NumIslands = 1
	cfg.Database.PopulationSize = size
	cfg.Database.FeatureDimensions = []string{"x"}
	return cfg
}

func TestCellGoesToTheFitter(t *testing.T) {
	p := New("r", gridConfig(100))
	p.Fold(child("lo", "", 0, 0.1, 0), 1)  // alone: the middle bin
	p.Fold(child("hi", "", 0, 0.9, 9), 2)  // x range 0..9: bin 9
	p.Fold(child("mid", "", 0, 0.5, 9), 3) // bin 9, less fit than hi: no cell
	p.Fold(child("top", "", 0, 0.95, 9), 4)
	cells := map[string]string{}
	for key, m := range p.islands[0].grid {
		cells[key] = m.ID
	}
	if want := map[string]string{"5": "lo", "9": "top"}; !reflect.DeepEqual(cells, want) {
		t.Errorf("grid = %v, want %v", cells, want)
	}
	if f := p.programs["mid"].Features; !slices.Equal(f, []int{9}) {
		t.Errorf("mid's features = %v, want [9]", f)
	}
	if st := p.State(); st.Islands[0].Cells != 2 || st.Islands[0].Programs != 4 {
		t.Errorf("island state %+v; want 4 programs in 2 cells", st.Islands[0])
	}
}

func TestEvictionTakesCelllessWorstFirstAndNeverTheBest(t *testing.T) {
	p := New("r", gridConfig(3))
	p.Fold(child("a", "", 0, 0.1, 0), 1) // bin 5, holds it
	p.Fold(child("b", "", 0, 0.9, 9), 2) // bin 9, the best
	p.Fold(child("c", "", 0, 0.5, 9), 3) // bin 9 is b's: no cell
	p.Fold(child("d", "", 0, 0.3, 3), 4) // bin 3: over the limit
	if _, ok := p.programs["c"]; ok || p.Len() != 3 {
		t.Fatalf("population %v; want c (no cell) evicted before a (a cell, lower score)", ids(p))
	}
	p.Fold(child("e", "", 0, 0.2, 0), 5) // bin 0, a new cell; a (0.1) is now the worst
	if _, ok := p.programs["a"]; ok {
		t.Fatalf("population %v; with every program holding a cell the worst (a) goes", ids(p))
	}
	for i := range 20 {
		p.Fold(child(fmt.Sprint("w", i), "", 0, 0.01, float64(i%10)), uint64(6+i))
	}
	if b, _ := p.Best(); b.ID != "b" || p.programs["b"] == nil {
		t.Errorf("best = %s, population %v; the best is never evicted", b.ID, ids(p))
	}
	if p.Len() != 3 {
		t.Errorf("population = %d, want 3", p.Len())
	}
}

func ids(p *Population) []string {
	var out []string
	for id := range p.programs {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func TestMigrationAlongTheRing(t *testing.T) {
	cfg := runconfig.Default()
	cfg.Database.NumIslands = 4
	cfg.Database.MigrationInterval = 5
	cfg.Database.MigrationRate = 0.4
	p := New("r", cfg)
	var migrations []Migration
	for i := range 10 {
		out := p.Fold(child(fmt.Sprint("p", i), "", 1, float64(i)/10, 0), uint64(i+1))
		if len(out.Migrations) > 0 && (i+1)%5 != 0 {
			t.Fatalf("migration after %d generations of island 1, interval 5", i+1)
		}
		migrations = append(migrations, out.Migrations...)
	}
	if len(migrations) != 2 {
		t.Fatalf("migrations = %+v; want 2 (after generations 5 and 10)", migrations)
	}
	// Generation 5: island 1 holds p0..p4, top 40% = p4, p3 to islands 2 and 0.
	if m := migrations[0]; m.From != 1 || !slices.Equal(m.To, []int{2, 0}) || m.Programs != 4 {
		t.Errorf("first migration %+v; want from 1 to [2 0], 4 copies", m)
	}
	// Generation 10: top 4 = p9, p8, p7, p6, none copied before.
	if m := migrations[1]; m.Programs != 8 {
		t.Errorf("second migration %+v; want 8 copies", m)
	}
	for _, id := range []string{"p4~i2", "p4~i0", "p3~i0", "p9~i2", "p6~i0"} {
		m := p.programs[id]
		if m == nil || m.copyOf == "" || m.ParentID != id[:2] {
			t.Errorf("migrant %s missing or not marked as a copy of %s", id, id[:2])
		}
	}
	if n := p.State().Islands[3].Programs; n != 0 {
		t.Errorf("island 3 (not a neighbour of 1) holds %d programs", n)
	}
	// Island 2 now migrates: its programs are all migrants, so nothing moves on to island 3.
	for i := range 5 {
		p.Fold(child(fmt.Sprint("q", i), "", 2, 0, 0), uint64(20+i))
	}
	for id := range p.programs {
		if p.programs[id].Island == 3 && p.programs[id].copyOf != "" && p.programs[id].copyOf[0] == 'p' {
			t.Errorf("migrant %s migrated again", id)
		}
	}
	if got := p.State().Islands[1].Migrations; got != 2 {
		t.Errorf("island 1 migrations = %d, want 2", got)
	}
}

func TestMigrationSkipsDuplicateCode(t *testing.T) {
	cfg := runconfig.Default()
	cfg.Database.NumIslands = 3
	cfg.Database.MigrationInterval = 2
	cfg.Database.MigrationRate = 1
	p := New("r", cfg)
	a := child("a", "", 0, 0.9, 0)
	twin := child("twin", "", 1, 0.1, 0)
	twin.Candidate.Code = a.Candidate.Code // island 1 already holds a's code
	p.Fold(twin, 1)
	p.Fold(a, 2)
	out := p.Fold(child("b", "", 0, 0.5, 0), 3)
	if len(out.Migrations) != 1 || out.Migrations[0].Programs != 3 {
		t.Fatalf("migrations %+v; want 1 with 3 copies (a to island 2, b to 1 and 2; a's code is on 1)", out.Migrations)
	}
	if p.programs["a~i1"] != nil {
		t.Error("a was copied onto an island that holds its code")
	}
}

func TestSelectionRatios(t *testing.T) {
	const n = 10000
	rs := synthetic(600, 1)
	for _, tc := range []struct{ explore, exploit float64 }{{0.2, 0.7}, {0.5, 0.3}, {0, 1}, {1, 0}, {0, 0}} {
		t.Run(fmt.Sprintf("explore=%.1f,exploit=%.1f", tc.explore, tc.exploit), func(t *testing.T) {
			cfg := runconfig.Default()
			cfg.Database.NumIslands = 1
			cfg.Database.ArchiveSize = 10
			cfg.Database.ExplorationRatio, cfg.Database.ExploitationRatio = tc.explore, tc.exploit
			p := foldAll(cfg, rs)
			elite := map[string]bool{}
			for _, e := range p.elites {
				elite[e.ID] = true
			}
			count := map[Mode]int{}
			var weightedScore, exploreScore float64
			for seed := range int64(n) {
				s, ok := p.Sample(0, 0, seed)
				if !ok {
					t.Fatal("no sample")
				}
				count[s.Mode]++
				switch s.Mode {
				case Exploitation:
					if !elite[s.Parent.ID] {
						t.Fatalf("exploitation drew %s, not in the elite archive", s.Parent.ID)
					}
				case Weighted:
					weightedScore += s.Parent.Score
				case Exploration:
					exploreScore += s.Parent.Score
				}
			}
			for mode, want := range map[Mode]float64{Exploration: tc.explore, Exploitation: tc.exploit, Weighted: 1 - tc.explore - tc.exploit} {
				// 5 standard deviations of a binomial proportion over n draws is below 0.025.
				if got := float64(count[mode]) / n; math.Abs(got-want) > 0.025 {
					t.Errorf("%s chosen %.3f of the time, want %.3f", mode, got, want)
				}
			}
			if count[Weighted] > 1000 && count[Exploration] > 1000 {
				if w, e := weightedScore/float64(count[Weighted]), exploreScore/float64(count[Exploration]); w <= e*1.1 {
					t.Errorf("fitness-weighted parents score %.3f on average, uniform ones %.3f; weighting should favour the fit", w, e)
				}
			}
		})
	}
}

// TestExploitationFavoursTheBestElites: an exploitation draw picks from the elite archive by
// rank, so the best elite is drawn several times as often as the last. A uniform draw gives
// the archive's 20th program the share of its 1st; with tasks in flight, whose parents were
// drawn before the latest improvements folded, that left a search driven by small edits
// (issue 16's numeric stand-in) improving its best program too rarely to keep climbing.
func TestExploitationFavoursTheBestElites(t *testing.T) {
	const n = 20000
	cfg := runconfig.Default()
	cfg.Database.NumIslands = 1
	cfg.Database.ArchiveSize = 10
	cfg.Database.ExplorationRatio, cfg.Database.ExploitationRatio = 0, 1
	p := New("r", cfg)
	p.Fold(result("seed", true, protocol.StatusOK, 0), 1)
	for i := range 10 {
		p.Fold(child(fmt.Sprintf("c%d", i), "seed", 0, 1+float64(i)/100, 0), uint64(i+2))
	}
	if len(p.elites) != 10 {
		t.Fatalf("%d elites, want 10", len(p.elites))
	}
	best, last := p.elites[0].ID, p.elites[9].ID
	count := map[string]int{}
	for seed := range int64(n) {
		s, _ := p.Sample(0, 0, seed)
		if s.Mode != Exploitation {
			t.Fatalf("mode %s, want exploitation", s.Mode)
		}
		count[s.Parent.ID]++
	}
	if len(count) != 10 {
		t.Errorf("exploitation drew %d distinct elites, want all 10", len(count))
	}
	// By rank, weight 1/(rank+1): the best is drawn 10 times as often as the 10th.
	if got := float64(count[best]) / float64(count[last]); got < 5 {
		t.Errorf("best elite drawn %d times, the 10th %d (ratio %.2f); want the best several times as often", count[best], count[last], got)
	}
}

func TestSampleInspirationsAndTop(t *testing.T) {
	cfg := runconfig.Default()
	cfg.Prompt.NumTopPrograms, cfg.Prompt.NumDiversePrograms = 3, 4
	p := foldAll(cfg, synthetic(500, 5))
	for seed := range int64(300) {
		island := int(seed % 5)
		s, _ := p.Sample(island, 0, seed)
		if len(s.Top) != 3 || len(s.Inspirations) != 4 {
			t.Fatalf("top %d inspirations %d; want 3 and 4", len(s.Top), len(s.Inspirations))
		}
		seen := map[string]bool{s.Parent.ID: true}
		for _, q := range append(slices.Clone(s.Top), s.Inspirations...) {
			if seen[q.ID] {
				t.Fatalf("%s shown twice (parent %s)", q.ID, s.Parent.ID)
			}
			seen[q.ID] = true
			if q.Island != island || s.Parent.Island != island {
				t.Fatalf("island %d sample holds %s from island %d", island, q.ID, q.Island)
			}
		}
		for i := 1; i < len(s.Top); i++ {
			if s.Top[i].Score > s.Top[i-1].Score {
				t.Fatalf("top not best first: %v", s.Top)
			}
		}
		if s8, _ := p.Sample(island, 8, seed); len(s8.Inspirations) != 8 {
			t.Fatalf("num_inspirations 8 gave %d", len(s8.Inspirations))
		}
	}
}

func TestPreviousAttemptsNewestFirstWithOutcomes(t *testing.T) {
	p := New("r", runconfig.Default())
	p.Fold(result("seed", true, protocol.StatusOK, 0.1), 1)
	ok := child("ok", "seed", 2, 0.4, 0)
	bad := result("bad", false, protocol.StatusFailed, 0)
	bad.Candidate.Island, bad.Reason = 2, "stage 1: ZeroDivisionError"
	rej := result("rej", false, protocol.StatusRejected, 0)
	rej.Candidate.Island, rej.Reason = 2, "SEARCH block 1 does not match"
	other := child("other", "seed", 3, 0.9, 0)
	for i, r := range []*protocol.Result{ok, bad, rej, other} {
		p.Fold(r, uint64(i+2))
	}
	s, _ := p.Sample(2, 2, 1)
	if len(s.Previous) != 2 || s.Previous[0].ID != "rej" || s.Previous[1].ID != "bad" {
		t.Fatalf("previous = %+v; want rej, bad (newest first, at most 2)", s.Previous)
	}
	if p0 := s.Previous[0]; p0.Status != protocol.StatusRejected || p0.Reason != rej.Reason || p0.Code != "" {
		t.Errorf("previous attempt %+v; want its status and reason, no code", p0)
	}
	if s, _ := p.Sample(2, 0, 1); len(s.Previous) != 3 {
		t.Errorf("previous with num_top_programs 3 = %d attempts, want 3", len(s.Previous))
	}
}

func TestAncestryOfTheBest(t *testing.T) {
	cfg := runconfig.Default()
	cfg.Database.PopulationSize = 6 // ancestors are evicted, their lineage stays
	p := New("r", cfg)
	p.Fold(result("seed", true, protocol.StatusOK, 0.1), 1)
	parent := "seed~i1"
	for i := range 5 {
		id := fmt.Sprint("g", i)
		r := child(id, parent, 1, 0.2+float64(i)/10, 0)
		r.Candidate.Generation, r.Candidate.Iteration = i+1, int64(i+1)
		p.Fold(r, uint64(i+2))
		parent = id
	}
	for i := range 10 {
		p.Fold(child(fmt.Sprint("x", i), "seed", 0, 0.15, 0), uint64(10+i))
	}
	var got []string
	for _, l := range p.Ancestry(p.State().BestID) {
		got = append(got, l.ID)
	}
	if want := []string{"g4", "g3", "g2", "g1", "g0", "seed~i1", "seed"}; !slices.Equal(got, want) {
		t.Errorf("ancestry of the best = %v, want %v", got, want)
	}
}

func TestLastImprovement(t *testing.T) {
	cfg := runconfig.Default()
	cfg.ConvergenceThreshold = 0.05
	p := New("r", cfg)
	steps := []struct {
		r    *protocol.Result
		want int64
	}{
		{result("seed", true, protocol.StatusOK, 0.1), 0},
		{result("a", false, protocol.StatusOK, 0.12), 0},  // within the threshold
		{result("b", false, protocol.StatusOK, 0.2), 2},   // a real improvement at iteration 2
		{result("c", false, protocol.StatusFailed, 9), 2}, // failures never count
		{result("d", false, protocol.StatusOK, 0.24), 2},  // 0.04 over 0.2
		{result("e", false, protocol.StatusOK, 0.3), 5},
	}
	for i, s := range steps {
		s.r.Metrics = map[string]float64{"combined_score": s.r.Score}
		p.Fold(s.r, uint64(i+1))
		if got := p.State().LastImprovement; got != s.want {
			t.Errorf("after %s last improvement = %d, want %d", s.r.Candidate.ID, got, s.want)
		}
	}
}
