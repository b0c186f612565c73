package population

import (
	"bytes"
	"testing"

	"github.com/shoal-run/shoal/pkg/novelty"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// modelChild is a generated result of model, child of parent, scoring score.
func modelChild(id, parent, model string, score float64) *protocol.Result {
	r := result(id, false, protocol.StatusOK, score)
	r.Candidate.ParentID, r.Candidate.Model = parent, model
	return r
}

// TestModelAccountingWeighsGainsAndCountsOnce: each model's results, improvements and
// discounted reward; a larger gain earns a larger reward, a child below its parent none; a
// redelivered result changes nothing, and a population restored from a snapshot holds the
// same sums as one that folded everything.
func TestModelAccountingWeighsGainsAndCountsOnce(t *testing.T) {
	cfg := runconfig.Default()
	cfg.LLM.BanditDiscount = 0.9
	rs := []*protocol.Result{
		result("s", true, protocol.StatusOK, 0.5),
		modelChild("a", "s", "good", 0.6), // gain 0.1: the first gain sets the scale, reward 0.5
		modelChild("b", "s", "bad", 0.2),  // below its parent: no reward
		modelChild("c", "a", "good", 1.6), // gain 1.0, ten times the scale: reward near 1
		modelChild("d", "a", "good", 0.61),
		modelChild("e", "s", "bad", 0.4),
	}
	p := foldAll(cfg, rs)
	st := p.State()
	good, bad := st.Models["good"], st.Models["bad"]
	if st.ByModel["good"] != 3 || good.Improvements != 3 || st.ByModel["bad"] != 2 || bad.Improvements != 0 {
		t.Fatalf("good %d results %+v, bad %d results %+v; want 3 results and 3 improvements, 2 and 0", st.ByModel["good"], good, st.ByModel["bad"], bad)
	}
	if bad.Reward != 0 || good.Reward <= 0 {
		t.Errorf("rewards: good %.3f, bad %.3f; want good above 0, bad 0", good.Reward, bad.Reward)
	}
	// Pulls are discounted: bad's two results, one and four folds ago, weigh 0.9³ + 1.
	if want := 0.9*0.9*0.9 + 1; bad.Pulls < want-1e-9 || bad.Pulls > want+1e-9 {
		t.Errorf("bad's discounted results = %.6f, want %.6f", bad.Pulls, want)
	}

	// The size of a gain counts: one big improvement earns more than one small one.
	big := foldAll(cfg, []*protocol.Result{rs[0], rs[1], modelChild("x", "a", "m", 1.6)}).State().Models["m"].Reward
	small := foldAll(cfg, []*protocol.Result{rs[0], rs[1], modelChild("x", "a", "m", 0.61)}).State().Models["m"].Reward
	if big <= 2*small {
		t.Errorf("reward for a gain of 1.0 is %.3f, for 0.01 %.3f; want the big gain worth far more", big, small)
	}

	// A redelivered result (same candidate, later in the stream) counts nothing twice.
	if out := p.Fold(modelChild("c", "a", "good", 1.6), uint64(len(rs)+1)); !out.Duplicate {
		t.Fatal("a redelivered result was folded again")
	}
	if got := p.State().Models["good"]; got != good {
		t.Errorf("after a redelivery: good %+v, want %+v", got, good)
	}
	// Restored from a snapshot part way, then the rest folded: the same sums, bit for bit.
	half := foldAll(cfg, rs[:3])
	q, err := Restore("r", cfg, encode(t, half))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rs[3:] {
		q.Fold(r, uint64(4+i))
	}
	p2 := foldAll(cfg, rs)
	if !bytes.Equal(encode(t, q), encode(t, p2)) {
		t.Error("a restored population's accounting differs from one that folded every result")
	}
}

// TestNoveltySketchesRideInSamples: with database.novelty_threshold set, a sample carries the
// sketches of its island's evaluated programs, newest first (the seed on every island), and
// a candidate the generator skipped is counted, not sketched.
func TestNoveltySketchesRideInSamples(t *testing.T) {
	cfg := runconfig.Default()
	cfg.Database.NumIslands = 2
	cfg.Database.NoveltyThreshold = 1
	skipped := result("n", false, protocol.StatusRejected, 0)
	skipped.Candidate.Novelty, skipped.Candidate.ParentID = true, "s"
	kid := modelChild("a", "s", "m", 0.7)
	p := foldAll(cfg, []*protocol.Result{result("s", true, protocol.StatusOK, 0.5), kid, skipped})
	if got := p.State().NoveltyRejected; got != 1 {
		t.Errorf("novelty_rejected = %d, want 1", got)
	}
	smp, ok := p.Sample(0, 2, 1)
	if !ok {
		t.Fatal("no sample")
	}
	want := []string{novelty.Of(kid.Candidate.Code), novelty.Of("code s")}
	if len(smp.Seen) != 2 || smp.Seen[0] != want[0] || smp.Seen[1] != want[1] {
		t.Errorf("island 0's sketches = %d, want the child's then the seed's", len(smp.Seen))
	}
	if smp, _ := p.Sample(1, 2, 1); len(smp.Seen) != 1 || smp.Seen[0] != want[1] {
		t.Errorf("island 1's sketches = %d, want the seed's alone", len(smp.Seen))
	}
	// Off (the default): nothing is sketched, so tasks carry nothing.
	off := foldAll(runconfig.Default(), []*protocol.Result{result("s", true, protocol.StatusOK, 0.5), kid})
	if smp, _ := off.Sample(0, 2, 1); len(smp.Seen) != 0 {
		t.Errorf("with novelty off a sample carries %d sketches", len(smp.Seen))
	}
}
