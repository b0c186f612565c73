package placement

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/gpu"
)

// Test helpers are prefixed pt: other files of this package have their own tests.

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// fleet is a declared host with the usual 512 MiB reserve per card.
func fleet(t testing.TB, spec string) gpu.Inventory {
	t.Helper()
	inv, err := gpu.ParseDeclared("h", spec)
	if err != nil {
		t.Fatalf("ParseDeclared(%q): %v", spec, err)
	}
	inv.ReserveMiB = 512
	return inv
}

// twoSockets makes GPUs 0-3 and 4-7 of an nvlink-pairs host sit on different CPUs.
func twoSockets(inv gpu.Inventory) gpu.Inventory {
	for i := range inv.Links {
		for j := range inv.Links[i] {
			if i/4 != j/4 {
				inv.Links[i][j] = gpu.LinkCrossCPU
			}
		}
	}
	return inv
}

func alloc(inv gpu.Inventory, holder, model string, mib gpu.MiB, state gpu.LeaseState, expires time.Time, gpus ...int) gpu.Allocation {
	a := gpu.Allocation{Holder: holder, Model: model, Variant: "v", State: state, Expires: expires}
	for _, i := range gpus {
		a.Shares = append(a.Shares, gpu.Share{UUID: inv.GPUs[i].UUID, MiB: mib})
	}
	return a
}

// gpuIndices turns shares back into GPU indices.
func gpuIndices(inv gpu.Inventory, shares []gpu.Share) []int {
	var out []int
	for _, s := range shares {
		out = append(out, indexOf(&inv, s.UUID))
	}
	return out
}

func gib(g float64) gpu.MiB { return gpu.MiB(g * float64(gpu.GiB)) }

// Model variants of the failures and of the fleets below (NeedMiB = weights + KV).
var (
	m12BQ8  = gpu.Variant{Name: "q8", NeedMiB: gib(12.5), PerGPUOverheadMiB: 512} // 2×6.8 GiB on 2 cards
	m12BQ4  = gpu.Variant{Name: "q4", NeedMiB: 7 * gpu.GiB, PerGPUOverheadMiB: 512}
	m27BQ4  = gpu.Variant{Name: "q4", NeedMiB: 17 * gpu.GiB, PerGPUOverheadMiB: 512}
	m4B     = gpu.Variant{Name: "q8", NeedMiB: gib(3.5), PerGPUOverheadMiB: 512}
	m70BQ4  = gpu.Variant{Name: "q4", NeedMiB: 40 * gpu.GiB, PerGPUOverheadMiB: 512}
	m13BQ8  = gpu.Variant{Name: "q8", NeedMiB: 13 * gpu.GiB, PerGPUOverheadMiB: 512}
	m13BQ4  = gpu.Variant{Name: "q4", NeedMiB: gib(7.5), PerGPUOverheadMiB: 512}
	m7BQ4   = gpu.Variant{Name: "q4", NeedMiB: gib(4.5), PerGPUOverheadMiB: 512}
	m3B     = gpu.Variant{Name: "q8", NeedMiB: 2 * gpu.GiB, PerGPUOverheadMiB: 512}
	m1B     = gpu.Variant{Name: "q8", NeedMiB: gib(1.2), PerGPUOverheadMiB: 512}
	m8B     = gpu.Variant{Name: "q8", NeedMiB: 8 * gpu.GiB, PerGPUOverheadMiB: 512}
	m30BQ4  = gpu.Variant{Name: "q4", NeedMiB: 18 * gpu.GiB, PerGPUOverheadMiB: 512}
	m70B16  = gpu.Variant{Name: "bf16", NeedMiB: 140 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
	m8B16   = gpu.Variant{Name: "bf16", NeedMiB: 16 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
	m30G    = gpu.Variant{Name: "fp8", NeedMiB: 30 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
	m50G    = gpu.Variant{Name: "fp8", NeedMiB: 50 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
	m235B   = gpu.Variant{Name: "fp8", NeedMiB: 240 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
	m405B16 = gpu.Variant{Name: "bf16", NeedMiB: 810 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
)

type step struct {
	holder, model string
	variants      []gpu.Variant
	replicas      int    // workers of this model (ChooseVariant); 0 means 1
	wantVar       string // variant name ChooseVariant must pick; "" skips the check
	want          []int  // GPU indices Fit must grant; nil means refused
	reason        string // refused: a substring of the reason
}

type scenario struct {
	name  string
	inv   gpu.Inventory
	live  []gpu.Allocation // the ledger before the steps
	steps []step
}

// play plays the steps as the lease client would: ChooseVariant against the other models'
// leases, then Fit against the whole ledger; a grant joins the ledger as ready.
func play(t *testing.T, c scenario) {
	t.Helper()
	live := slices.Clone(c.live)
	for k, st := range c.steps {
		var others []gpu.Allocation
		for _, a := range live {
			if a.Model != st.model {
				others = append(others, a)
			}
		}
		vi, _ := ChooseVariant(c.inv, others, st.variants, max(st.replicas, 1), t0)
		v := st.variants[0]
		if vi >= 0 {
			v = st.variants[vi]
		}
		if st.wantVar != "" && v.Name != st.wantVar {
			t.Errorf("step %d (%s): variant got %s (index %d), want %s", k, st.holder, v.Name, vi, st.wantVar)
		}
		shares, reason, ok := Fit(c.inv, live, v, t0)
		got := gpuIndices(c.inv, shares)
		switch {
		case st.want == nil && ok:
			t.Errorf("step %d (%s, %s): got GPUs %v, want refused (%q)", k, st.holder, v.Name, got, st.reason)
		case st.want != nil && !ok:
			t.Errorf("step %d (%s, %s): got refused (%s), want GPUs %v", k, st.holder, v.Name, reason, st.want)
		case st.want != nil && !slices.Equal(got, st.want):
			t.Errorf("step %d (%s, %s): got GPUs %v, want %v", k, st.holder, v.Name, got, st.want)
		case st.want == nil && !strings.Contains(reason, st.reason):
			t.Errorf("step %d (%s, %s): got reason %q, want it to contain %q", k, st.holder, v.Name, reason, st.reason)
		}
		if ok {
			live = append(live, gpu.Allocation{Holder: st.holder, Model: st.model, Variant: v.Name,
				Shares: shares, State: gpu.LeaseReady, Expires: t0.Add(time.Hour)})
		}
		if over := Over(c.inv, live, t0); len(over) > 0 {
			t.Errorf("step %d: ledger broken: %v", k, over)
		}
	}
}

func TestPlacementFailures(t *testing.T) {
	q := []gpu.Variant{m12BQ8, m12BQ4}
	cases := []scenario{
		{name: "a/12.5GiB Q8 on 4x11GiB, 2 workers: 2 cards each", inv: fleet(t, "4x11GiB"),
			steps: []step{
				{holder: "w1", model: "12b", variants: q, replicas: 2, wantVar: "q8", want: []int{0, 1}},
				{holder: "w2", model: "12b", variants: q, replicas: 2, wantVar: "q8", want: []int{2, 3}},
			}},
		{name: "a/12.5GiB Q8 on 4x11GiB, 4 workers: Q4 on 1 card each", inv: fleet(t, "4x11GiB"),
			steps: []step{
				{holder: "w1", model: "12b", variants: q, replicas: 4, wantVar: "q4", want: []int{0}},
				{holder: "w2", model: "12b", variants: q, replicas: 4, wantVar: "q4", want: []int{1}},
				{holder: "w3", model: "12b", variants: q, replicas: 4, wantVar: "q4", want: []int{2}},
				{holder: "w4", model: "12b", variants: q, replicas: 4, wantVar: "q4", want: []int{3}},
			}},
		{name: "b/2x24GiB, 27B first then 4B: separate cards", inv: fleet(t, "2x24GiB"),
			steps: []step{
				{holder: "big", model: "27b", variants: []gpu.Variant{m27BQ4}, want: []int{0}},
				{holder: "small", model: "4b", variants: []gpu.Variant{m4B}, want: []int{1}},
			}},
		{name: "b/2x24GiB, 4B first then 27B: separate cards", inv: fleet(t, "2x24GiB"),
			steps: []step{
				{holder: "small", model: "4b", variants: []gpu.Variant{m4B}, want: []int{0}},
				{holder: "big", model: "27b", variants: []gpu.Variant{m27BQ4}, want: []int{1}},
			}},
		{name: "c/3x24GiB, 4B models share a card, the pair stays whole", inv: fleet(t, "3x24GiB"),
			steps: []step{
				{holder: "s1", model: "4b-a", variants: []gpu.Variant{m4B}, want: []int{0}},
				{holder: "s2", model: "4b-b", variants: []gpu.Variant{m4B}, want: []int{0}},
				{holder: "s3", model: "4b-c", variants: []gpu.Variant{m4B}, want: []int{0}},
				{holder: "big", model: "70b", variants: []gpu.Variant{m70BQ4}, want: []int{1, 2}},
			}},
		{name: "c/3x24GiB, interleaved arrivals", inv: fleet(t, "3x24GiB"),
			steps: []step{
				{holder: "s1", model: "4b-a", variants: []gpu.Variant{m4B}, want: []int{0}},
				{holder: "big", model: "70b", variants: []gpu.Variant{m70BQ4}, want: []int{1, 2}},
				{holder: "s2", model: "4b-b", variants: []gpu.Variant{m4B}, want: []int{0}},
				{holder: "s3", model: "4b-c", variants: []gpu.Variant{m4B}, want: []int{0}},
			}},
		{name: "c/3x24GiB, large first", inv: fleet(t, "3x24GiB"),
			steps: []step{
				{holder: "big", model: "70b", variants: []gpu.Variant{m70BQ4}, want: []int{0, 1}},
				{holder: "s1", model: "4b-a", variants: []gpu.Variant{m4B}, want: []int{2}},
				{holder: "s2", model: "4b-b", variants: []gpu.Variant{m4B}, want: []int{2}},
				{holder: "s3", model: "4b-c", variants: []gpu.Variant{m4B}, want: []int{2}},
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { play(t, c) })
	}
}

func TestPlacementFleets(t *testing.T) {
	fresh := t0.Add(time.Hour)
	nv := fleet(t, "8x80GiB:nvlink-pairs")
	sockets := twoSockets(fleet(t, "8x80GiB:nvlink-pairs"))
	one80 := fleet(t, "1x80GiB")
	var pack []step
	for k := range 14 {
		pack = append(pack, step{holder: fmt.Sprintf("s%d", k), model: fmt.Sprintf("4b-%d", k),
			variants: []gpu.Variant{m4B}, want: []int{0}})
	}
	pack = append(pack,
		step{holder: "m1", model: "8b-a", variants: []gpu.Variant{m8B16}, want: []int{0}},
		step{holder: "m2", model: "8b-b", variants: []gpu.Variant{m8B16}, reason: "needs 17 GiB on one card: most free is 6.5 GiB (GPU 0)"})
	reserve := fleet(t, "1x24GiB")
	reserve.ReserveMiB = 2 * gpu.GiB
	two24 := fleet(t, "2x24GiB")
	one24 := fleet(t, "1x24GiB")

	cases := []scenario{
		{name: "1x11GiB: small models share the card, the next is refused", inv: fleet(t, "1x11GiB"),
			steps: []step{
				{holder: "a", model: "7b", variants: []gpu.Variant{m7BQ4}, want: []int{0}},
				{holder: "b", model: "3b", variants: []gpu.Variant{m3B}, want: []int{0}},
				{holder: "c", model: "1b", variants: []gpu.Variant{m1B}, want: []int{0}},
				{holder: "d", model: "7b-b", variants: []gpu.Variant{m7BQ4}, reason: "needs 5 GiB on one card: most free is 1.3 GiB (GPU 0)"},
			}},
		{name: "2x24GiB: a 40GiB model spans both, a 4B is then refused", inv: two24,
			steps: []step{
				{holder: "big", model: "70b", variants: []gpu.Variant{m70BQ4}, want: []int{0, 1}},
				{holder: "s", model: "4b", variants: []gpu.Variant{m4B}, reason: "needs 4 GiB on one card: most free is 3 GiB"},
			}},
		{name: "2x24GiB: three 13B workers fall back to Q4, two share a card", inv: two24,
			steps: []step{
				{holder: "w1", model: "13b", variants: []gpu.Variant{m13BQ8, m13BQ4}, replicas: 3, wantVar: "q4", want: []int{0}},
				{holder: "w2", model: "13b", variants: []gpu.Variant{m13BQ8, m13BQ4}, replicas: 3, wantVar: "q4", want: []int{0}},
				{holder: "w3", model: "13b", variants: []gpu.Variant{m13BQ8, m13BQ4}, replicas: 3, wantVar: "q4", want: []int{1}},
			}},
		{name: "2x24GiB: two 13B workers keep Q8, one card each", inv: two24,
			steps: []step{
				{holder: "w1", model: "13b", variants: []gpu.Variant{m13BQ8, m13BQ4}, replicas: 2, wantVar: "q8", want: []int{0}},
				{holder: "w2", model: "13b", variants: []gpu.Variant{m13BQ8, m13BQ4}, replicas: 2, wantVar: "q8", want: []int{1}},
			}},
		{name: "4x11GiB: 4B models pack two a card, Q8 12B takes the free pair", inv: fleet(t, "4x11GiB"),
			steps: []step{
				{holder: "s1", model: "4b-a", variants: []gpu.Variant{m4B}, want: []int{0}},
				{holder: "s2", model: "4b-b", variants: []gpu.Variant{m4B}, want: []int{0}},
				{holder: "s3", model: "4b-c", variants: []gpu.Variant{m4B}, want: []int{1}},
				{holder: "w", model: "12b", variants: []gpu.Variant{m12BQ8, m12BQ4}, wantVar: "q8", want: []int{2, 3}},
				{holder: "w2", model: "12b-b", variants: []gpu.Variant{m12BQ8, m12BQ4}, wantVar: "q8",
					reason: "needs 2×6.8 GiB on wholly free cards; no free card large enough"},
			}},
		{name: "4x24GiB+1x11GiB: the 11GiB card takes what it fits, groups avoid it", inv: fleet(t, "4x24GiB,1x11GiB"),
			steps: []step{
				{holder: "m8", model: "8b", variants: []gpu.Variant{m8B}, want: []int{4}},
				{holder: "m30", model: "30b", variants: []gpu.Variant{m30BQ4}, want: []int{0}},
				{holder: "m4", model: "4b", variants: []gpu.Variant{m4B}, want: []int{1}},
				{holder: "m70", model: "70b", variants: []gpu.Variant{m70BQ4}, want: []int{2, 3}},
				{holder: "m4b", model: "4b-b", variants: []gpu.Variant{m4B}, want: []int{1}},
			}},
		{name: "8x80GiB nvlink pairs: 2-GPU models take whole NVLink pairs", inv: nv,
			live: []gpu.Allocation{alloc(nv, "x", "8b-x", 17*gpu.GiB, gpu.LeaseReady, fresh, 0)},
			steps: []step{
				{holder: "a", model: "70b-a", variants: []gpu.Variant{m70B16}, want: []int{2, 3}},
				{holder: "b", model: "70b-b", variants: []gpu.Variant{m70B16}, want: []int{4, 5}},
				{holder: "c", model: "8b-c", variants: []gpu.Variant{m8B16}, want: []int{0}},
			}},
		{name: "8x80GiB nvlink pairs: a 1-GPU model takes the orphan, not an empty pair", inv: nv,
			live: []gpu.Allocation{alloc(nv, "x", "60g", 60*gpu.GiB, gpu.LeaseReady, fresh, 2)},
			steps: []step{
				{holder: "a", model: "30g", variants: []gpu.Variant{m30G}, want: []int{3}},
				{holder: "b", model: "50g", variants: []gpu.Variant{m50G}, want: []int{0}},
				{holder: "c", model: "70b", variants: []gpu.Variant{m70B16}, want: []int{4, 5}},
			}},
		{name: "8x80GiB nvlink pairs: a 1-GPU model shares a half-used card", inv: nv,
			live: []gpu.Allocation{
				alloc(nv, "x", "60g", 60*gpu.GiB, gpu.LeaseReady, fresh, 2),
				alloc(nv, "y", "20g", 20*gpu.GiB, gpu.LeaseReady, fresh, 5)},
			steps: []step{
				{holder: "a", model: "30g", variants: []gpu.Variant{m30G}, want: []int{5}},
				{holder: "b", model: "50g", variants: []gpu.Variant{m50G}, want: []int{3}},
			}},
		{name: "8x80GiB two sockets: a 4-GPU model takes a connected quad", inv: sockets,
			live: []gpu.Allocation{alloc(sockets, "x", "8b", 17*gpu.GiB, gpu.LeaseReady, fresh, 1)},
			steps: []step{
				{holder: "a", model: "235b", variants: []gpu.Variant{m235B}, want: []int{4, 5, 6, 7}},
				{holder: "b", model: "70b", variants: []gpu.Variant{m70B16}, want: []int{2, 3}},
				{holder: "c", model: "235b-b", variants: []gpu.Variant{m235B}, reason: "needs 4×61 GiB on wholly free cards; 1 free card of 79.5 GiB"},
			}},
		{name: "8x80GiB two sockets: empty host, the quad is one socket", inv: sockets,
			steps: []step{
				{holder: "a", model: "235b", variants: []gpu.Variant{m235B}, want: []int{0, 1, 2, 3}},
				{holder: "b", model: "235b-b", variants: []gpu.Variant{m235B}, want: []int{4, 5, 6, 7}},
			}},
		{name: "1x80GiB: many small models pack onto the one card", inv: one80, steps: pack},
		{name: "4x24GiB: a model too big for the whole host is refused with the reason", inv: fleet(t, "4x24GiB"),
			steps: []step{
				{holder: "a", model: "405b", variants: []gpu.Variant{m405B16},
					reason: "never fits this host: needs 1×811 GiB or 2×406 GiB or 4×203.5 GiB; cards have 4×23.5 GiB usable"},
			}},
		{name: "2x24GiB: a card with a LOADING lease takes no second load", inv: two24,
			live: []gpu.Allocation{alloc(two24, "x", "4b-x", 4*gpu.GiB, gpu.LeaseLoading, fresh, 0)},
			steps: []step{
				{holder: "a", model: "4b", variants: []gpu.Variant{m4B}, want: []int{1}},
				{holder: "b", model: "70b", variants: []gpu.Variant{m70BQ4}, reason: "needs 2×20.5 GiB on wholly free cards"},
			}},
		{name: "2x24GiB: the same card once READY is shared", inv: two24,
			live: []gpu.Allocation{alloc(two24, "x", "4b-x", 4*gpu.GiB, gpu.LeaseReady, fresh, 0)},
			steps: []step{
				{holder: "a", model: "4b", variants: []gpu.Variant{m4B}, want: []int{0}},
			}},
		{name: "1x24GiB: a LOADING card is named in the reason", inv: one24,
			live: []gpu.Allocation{alloc(one24, "x", "4b-x", 4*gpu.GiB, gpu.LeaseLoading, fresh, 0)},
			steps: []step{
				{holder: "a", model: "4b", variants: []gpu.Variant{m4B}, reason: "GPU 0 loading a model"},
			}},
		{name: "1x24GiB: an expired lease frees its memory", inv: one24,
			live: []gpu.Allocation{alloc(one24, "gone", "20g", 20*gpu.GiB, gpu.LeaseReady, t0.Add(-time.Second), 0)},
			steps: []step{
				{holder: "a", model: "27b", variants: []gpu.Variant{m27BQ4}, want: []int{0}},
			}},
		{name: "1x24GiB: a lease expiring exactly now is free", inv: one24,
			live: []gpu.Allocation{alloc(one24, "gone", "20g", 20*gpu.GiB, gpu.LeaseReady, t0, 0)},
			steps: []step{
				{holder: "a", model: "27b", variants: []gpu.Variant{m27BQ4}, want: []int{0}},
			}},
		{name: "1x24GiB: a live lease does not", inv: one24,
			live: []gpu.Allocation{alloc(one24, "here", "20g", 20*gpu.GiB, gpu.LeaseReady, t0.Add(time.Second), 0)},
			steps: []step{
				{holder: "a", model: "27b", variants: []gpu.Variant{m27BQ4}, reason: "needs 17.5 GiB on one card: most free is 3.5 GiB (GPU 0)"},
			}},
		{name: "1x24GiB reserve 2GiB: exactly the usable memory fits, 1 MiB more does not", inv: reserve,
			steps: []step{
				{holder: "b", model: "too", variants: []gpu.Variant{{Name: "x", NeedMiB: 22*gpu.GiB + 1}},
					reason: "never fits this host: needs 1×22 GiB"},
				{holder: "a", model: "fits", variants: []gpu.Variant{{Name: "x", NeedMiB: 22 * gpu.GiB}}, want: []int{0}},
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { play(t, c) })
	}
}

func TestPlacementChooseVariant(t *testing.T) {
	inv := fleet(t, "4x11GiB")
	q := []gpu.Variant{m12BQ8, m12BQ4}
	huge := gpu.Variant{Name: "huge", NeedMiB: 100 * gpu.GiB}
	cases := []struct {
		name     string
		others   []gpu.Allocation
		variants []gpu.Variant
		replicas int
		want     int
		wantOK   bool
	}{
		{"1 worker: Q8", nil, q, 1, 0, true},
		{"2 workers: Q8", nil, q, 2, 0, true},
		{"3 workers: Q4", nil, q, 3, 1, true},
		{"4 workers: Q4", nil, q, 4, 1, true},
		{"5 workers: Q4 places the most", nil, q, 5, 1, false},
		{"2 workers, a peer holds a card: Q4", []gpu.Allocation{alloc(inv, "p", "4b", 4*gpu.GiB, gpu.LeaseReady, t0.Add(time.Hour), 3)}, q, 2, 1, true},
		{"2 workers, a peer LOADING on a card: still Q4 (capacity, not timing)", []gpu.Allocation{alloc(inv, "p", "4b", 4*gpu.GiB, gpu.LeaseLoading, t0.Add(time.Hour), 3)}, q, 2, 1, true},
		{"nothing ever fits", nil, []gpu.Variant{huge}, 1, -1, false},
		{"host full now: the preferred variant that fits an empty host", []gpu.Allocation{
			alloc(inv, "p", "x", 10*gpu.GiB, gpu.LeaseReady, t0.Add(time.Hour), 0),
			alloc(inv, "q", "x", 10*gpu.GiB, gpu.LeaseReady, t0.Add(time.Hour), 1),
			alloc(inv, "r", "x", 10*gpu.GiB, gpu.LeaseReady, t0.Add(time.Hour), 2),
			alloc(inv, "s", "x", 10*gpu.GiB, gpu.LeaseReady, t0.Add(time.Hour), 3)}, []gpu.Variant{huge, m12BQ8, m12BQ4}, 1, 1, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := ChooseVariant(inv, c.others, c.variants, c.replicas, t0)
			if got != c.want || ok != c.wantOK {
				t.Errorf("got (%d, %v), want (%d, %v)", got, ok, c.want, c.wantOK)
			}
		})
	}
}

// queueSim plays a host over ticks of one second: at every tick the leases past expiry end,
// then every waiter retries in queue order, then (while the stream lasts) a new small claim
// arrives, tries Admit as the last, and joins the queue if refused. It returns the tick at
// which `watch` was granted (-1: never) and how many small claims were granted before it.
func queueSim(inv gpu.Inventory, live []gpu.Allocation, queue []Waiter, watch string, small gpu.Variant,
	stream, smallLife, ticks int, useQueue bool) (granted, backfilled int) {
	granted = -1
	life := time.Duration(smallLife) * time.Second
	grant := func(w Waiter, shares []gpu.Share, now time.Time, ttl time.Duration) {
		live = append(live, gpu.Allocation{Holder: w.Holder, Model: w.Model, Variant: w.Variant.Name,
			Shares: shares, State: gpu.LeaseReady, Expires: now.Add(ttl)})
	}
	for tick := 1; tick <= ticks; tick++ {
		now := t0.Add(time.Duration(tick) * time.Second)
		// Waiters retry in order.
		for k := 0; k < len(queue); {
			w := queue[k]
			var shares []gpu.Share
			var ok bool
			if useQueue {
				shares, _, ok = Admit(inv, live, queue, w.Holder, w.Variant, now)
			} else {
				shares, _, ok = Fit(inv, live, w.Variant, now)
			}
			if !ok {
				k++
				continue
			}
			ttl := life
			if w.Holder == watch {
				ttl = time.Hour
				granted = tick
			} else if granted < 0 {
				backfilled++
			}
			grant(w, shares, now, ttl)
			queue = slices.Delete(queue, k, k+1)
		}
		if tick <= stream {
			w := Waiter{Holder: fmt.Sprintf("small-%d", tick), Model: "4b", Variant: small, Since: now}
			var shares []gpu.Share
			var ok bool
			if useQueue {
				shares, _, ok = Admit(inv, live, queue, w.Holder, small, now)
			} else {
				shares, _, ok = Fit(inv, live, small, now)
			}
			if ok {
				grant(w, shares, now, life)
				if granted < 0 {
					backfilled++
				}
			} else {
				queue = append(queue, w)
			}
		}
		if over := Over(inv, live, now); len(over) > 0 {
			panic(fmt.Sprint("ledger broken: ", over))
		}
		if granted >= 0 && tick > stream {
			break
		}
	}
	return granted, backfilled
}

func TestPlacementQueueNoStarvation(t *testing.T) {
	inv := fleet(t, "4x24GiB")
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	// Cards 0 and 1 empty at ticks 10 and 20; cards 2 and 3 stay busy.
	live := []gpu.Allocation{
		alloc(inv, "A", "m", 14*gpu.GiB, gpu.LeaseReady, at(10), 0),
		alloc(inv, "B", "m", 14*gpu.GiB, gpu.LeaseReady, at(20), 1),
		alloc(inv, "C", "m", 18*gpu.GiB, gpu.LeaseReady, at(1000), 2),
		alloc(inv, "D", "m", 18*gpu.GiB, gpu.LeaseReady, at(1000), 3),
	}
	large := Waiter{Holder: "large", Model: "70b", Variant: m70BQ4, Since: t0}
	small := gpu.Variant{Name: "q4", NeedMiB: 3 * gpu.GiB}

	// As soon as possible: the first tick at which the large claim fits the original ledger.
	asap := -1
	for tick := 1; tick < 100 && asap < 0; tick++ {
		if _, _, ok := Fit(inv, live, m70BQ4, at(tick)); ok {
			asap = tick
		}
	}
	if asap != 20 {
		t.Fatalf("scenario: large fits the original ledger at tick %d, want 20", asap)
	}

	got, backfilled := queueSim(inv, slices.Clone(live), []Waiter{large}, "large", small, 50, 15, 200, true)
	if got != asap {
		t.Errorf("with the queue: large granted at tick %d, want %d (as soon as possible)", got, asap)
	}
	if backfilled == 0 {
		t.Errorf("with the queue: got %d small claims granted while large waited, want some (backfill)", backfilled)
	}
	// The same stream without the queue starves the large claim past the end of its reservation.
	naive, _ := queueSim(inv, slices.Clone(live), []Waiter{large}, "large", small, 50, 15, 200, false)
	if naive >= 0 && naive <= asap {
		t.Errorf("without the queue: large granted at tick %d, want later than %d (the scenario must bite)", naive, asap)
	}
	t.Logf("large granted at tick %d with the queue (%d small claims backfilled), %d without", got, backfilled, naive)
}

func TestPlacementAdmit(t *testing.T) {
	inv := fleet(t, "4x24GiB")
	fresh := t0.Add(time.Hour)
	busy := []gpu.Allocation{
		alloc(inv, "A", "m", 14*gpu.GiB, gpu.LeaseReady, fresh, 0),
		alloc(inv, "B", "m", 14*gpu.GiB, gpu.LeaseReady, fresh, 1),
		alloc(inv, "C", "m", 14*gpu.GiB, gpu.LeaseReady, fresh, 2),
	}
	head := Waiter{Holder: "large", Model: "70b", Variant: m70BQ4, Since: t0.Add(-time.Minute)}
	two := fleet(t, "2x24GiB")
	huge := Waiter{Holder: "huge", Model: "405b", Variant: m405B16, Since: t0.Add(-time.Minute)}
	small := Waiter{Holder: "s", Model: "4b", Variant: m4B, Since: t0.Add(-time.Second)}
	cases := []struct {
		name   string
		inv    gpu.Inventory
		live   []gpu.Allocation
		queue  []Waiter
		holder string
		v      gpu.Variant
		want   []int
		reason string
	}{
		{name: "empty queue: as Fit", inv: inv, live: busy, holder: "s", v: m4B, want: []int{3}},
		{name: "backfill beside a waiting head: off its reserved cards", inv: inv, live: busy,
			queue: []Waiter{head}, holder: "s", v: m4B, want: []int{1}},
		{name: "refused where only the head's reserved card fits", inv: inv, live: busy,
			queue: []Waiter{head}, holder: "m", v: m27BQ4, reason: "fits only on GPU 0,3, held for large"},
		{name: "refused when it would take the room a head fits in now", inv: two,
			queue: []Waiter{head}, holder: "s", v: m4B, reason: "would leave no room for large"},
		{name: "the head itself is granted", inv: two,
			queue: []Waiter{head, small}, holder: "large", v: m70BQ4, want: []int{0, 1}},
		{name: "a waiter that never fits this host blocks nobody", inv: two,
			queue: []Waiter{huge}, holder: "s", v: m4B, want: []int{0}},
		{name: "waiters behind the claimant do not count", inv: two,
			queue: []Waiter{small, head}, holder: "s", v: m4B, want: []int{0}},
		{name: "a small waiter ahead that still fits after: granted", inv: two,
			queue: []Waiter{small}, holder: "t", v: m4B, want: []int{0}},
		{name: "does not fit at all: Fit's reason", inv: two, live: []gpu.Allocation{alloc(two, "A", "m", 22*gpu.GiB, gpu.LeaseReady, fresh, 0, 1)},
			holder: "s", v: m4B, reason: "needs 4 GiB on one card: most free is 1.5 GiB"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			shares, reason, ok := Admit(c.inv, c.live, c.queue, c.holder, c.v, t0)
			got := gpuIndices(c.inv, shares)
			switch {
			case c.want == nil && ok:
				t.Errorf("got GPUs %v, want refused (%q)", got, c.reason)
			case c.want != nil && !ok:
				t.Errorf("got refused (%s), want GPUs %v", reason, c.want)
			case c.want != nil && !slices.Equal(got, c.want):
				t.Errorf("got GPUs %v, want %v", got, c.want)
			case c.want == nil && !strings.Contains(reason, c.reason):
				t.Errorf("got reason %q, want it to contain %q", reason, c.reason)
			}
		})
	}
}

func TestPlacementOver(t *testing.T) {
	inv := fleet(t, "2x24GiB")
	fresh := t0.Add(time.Hour)
	cases := []struct {
		name string
		live []gpu.Allocation
		want []string
	}{
		{"sound", []gpu.Allocation{alloc(inv, "a", "m", 20*gpu.GiB, gpu.LeaseReady, fresh, 0, 1)}, nil},
		{"exactly full is sound", []gpu.Allocation{alloc(inv, "a", "m", 24*gpu.GiB-512, gpu.LeaseReady, fresh, 0)}, nil},
		{"expired leases do not count", []gpu.Allocation{
			alloc(inv, "a", "m", 20*gpu.GiB, gpu.LeaseReady, t0, 0),
			alloc(inv, "b", "m", 20*gpu.GiB, gpu.LeaseReady, fresh, 0)}, nil},
		{"over-committed card", []gpu.Allocation{
			alloc(inv, "a", "m", 20*gpu.GiB, gpu.LeaseReady, fresh, 0),
			alloc(inv, "b", "m", 4*gpu.GiB, gpu.LeaseReady, fresh, 0)},
			[]string{"GPU 0 (GPU-declared-h-0): 24 GiB leased > 23.5 GiB usable"}},
		{"half-granted leases", []gpu.Allocation{
			{Holder: "a", Expires: fresh},
			{Holder: "b", Expires: fresh, Shares: []gpu.Share{{UUID: "GPU-gone", MiB: 1}}},
			{Holder: "c", Expires: fresh, Shares: []gpu.Share{{UUID: inv.GPUs[0].UUID, MiB: 1}, {UUID: inv.GPUs[0].UUID, MiB: 1}}},
			{Holder: "d", Expires: fresh, Shares: []gpu.Share{{UUID: inv.GPUs[1].UUID, MiB: 0}}},
			{Holder: "d", Expires: fresh, Shares: []gpu.Share{{UUID: inv.GPUs[1].UUID, MiB: 1}}}},
			[]string{
				"lease a: no GPUs",
				"lease b: share on unknown GPU GPU-gone",
				"lease c: GPU GPU-declared-h-0 twice",
				"lease d: share of 0 MiB on GPU-declared-h-1",
				"lease d: holder has two live leases",
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Over(inv, c.live, t0); !slices.Equal(got, c.want) {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

// TestPlacementDeterministic: the same inputs give the same shares, whatever the order of
// the ledger's entries.
func TestPlacementDeterministic(t *testing.T) {
	inv := fleet(t, "8x80GiB:nvlink-pairs")
	fresh := t0.Add(time.Hour)
	live := []gpu.Allocation{
		alloc(inv, "a", "m", 30*gpu.GiB, gpu.LeaseReady, fresh, 0),
		alloc(inv, "b", "m", 60*gpu.GiB, gpu.LeaseReady, fresh, 3),
		alloc(inv, "c", "m", 10*gpu.GiB, gpu.LeaseReady, fresh, 6),
	}
	for _, v := range []gpu.Variant{m8B16, m50G, m70B16, m235B} {
		want, _, _ := Fit(inv, live, v, t0)
		rev := slices.Clone(live)
		slices.Reverse(rev)
		for range 10 {
			if got, _, _ := Fit(inv, rev, v, t0); !slices.Equal(got, want) {
				t.Fatalf("%s: got %v on a reordered ledger, want %v", v.Name, got, want)
			}
		}
	}
}

// TestPlacementPropertyNeverOverCommits: random fleets and random claim/release/expiry/load
// sequences, through Fit and Admit, never over-commit a card, never grant a half group, never
// start a load on a LOADING card, and every group has a size the variant allows.
func TestPlacementPropertyNeverOverCommits(t *testing.T) {
	sizes := []gpu.MiB{11 * gpu.GiB, 12 * gpu.GiB, 16 * gpu.GiB, 24 * gpu.GiB, 40 * gpu.GiB, 48 * gpu.GiB, 80 * gpu.GiB}
	links := []gpu.Link{gpu.LinkUnknown, gpu.LinkCrossCPU, gpu.LinkSameCPU, gpu.LinkSameSwitch, gpu.LinkNVLink}
	for seed := range uint64(40) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5ea1))
			n := 1 + rng.IntN(8)
			inv := gpu.Inventory{Host: "p", ReserveMiB: gpu.MiB(rng.IntN(4)) * 256}
			for i := range n {
				inv.GPUs = append(inv.GPUs, gpu.GPU{Index: i, UUID: fmt.Sprintf("GPU-p-%d", i), TotalMiB: sizes[rng.IntN(len(sizes))]})
			}
			if rng.IntN(2) == 0 {
				inv.Links = make([][]gpu.Link, n)
				for i := range n {
					inv.Links[i] = make([]gpu.Link, n)
				}
				for i := range n {
					for j := i + 1; j < n; j++ {
						l := links[rng.IntN(len(links))]
						inv.Links[i][j], inv.Links[j][i] = l, l
					}
				}
			}
			var live []gpu.Allocation
			var queue []Waiter
			now := t0
			for step := range 300 {
				now = now.Add(time.Duration(rng.IntN(3)) * time.Second)
				switch op := rng.IntN(10); {
				case op < 6: // claim
					v := gpu.Variant{Name: "v", NeedMiB: gpu.MiB(1 + rng.IntN(int(100*gpu.GiB))), PerGPUOverheadMiB: gpu.MiB(rng.IntN(1024))}
					if rng.IntN(3) == 0 {
						v.GroupSizes = [][]int{{1}, {2}, {1, 2}, {2, 4}, {3}}[rng.IntN(5)]
					}
					holder := fmt.Sprintf("h%d", step)
					var shares []gpu.Share
					var ok bool
					if rng.IntN(2) == 0 {
						shares, _, ok = Fit(inv, live, v, now)
					} else {
						shares, _, ok = Admit(inv, live, queue, holder, v, now)
						if !ok && len(queue) < 6 {
							queue = append(queue, Waiter{Holder: holder, Model: "m", Variant: v, Since: now})
						}
					}
					if !ok {
						continue
					}
					idx := gpuIndices(inv, shares)
					allowed := v.GroupSizes
					if len(allowed) == 0 {
						allowed = []int{1, 2, 4, 8}
					}
					if !slices.Contains(allowed, len(idx)) {
						t.Fatalf("step %d: group of %d, variant allows %v", step, len(idx), allowed)
					}
					l := newLedger(&inv, live, now, true)
					for _, i := range idx {
						if l.cards[i].loading {
							t.Fatalf("step %d: load started on GPU %d, which is LOADING", step, i)
						}
						if len(idx) > 1 && l.cards[i].leases > 0 {
							t.Fatalf("step %d: group on GPU %d, which is not wholly free", step, i)
						}
					}
					state := gpu.LeaseReady
					if rng.IntN(2) == 0 {
						state = gpu.LeaseLoading
					}
					live = append(live, gpu.Allocation{Holder: holder, Model: "m", Shares: shares, State: state,
						Expires: now.Add(time.Duration(1+rng.IntN(60)) * time.Second)})
				case op < 8 && len(live) > 0: // release
					k := rng.IntN(len(live))
					live = slices.Delete(live, k, k+1)
				case op < 9 && len(live) > 0: // load finishes
					live[rng.IntN(len(live))].State = gpu.LeaseReady
				case len(queue) > 0: // a waiter gives up
					k := rng.IntN(len(queue))
					queue = slices.Delete(queue, k, k+1)
				}
				if over := Over(inv, live, now); len(over) > 0 {
					t.Fatalf("step %d: %v", step, over)
				}
			}
		})
	}
}

func benchLedger(b *testing.B) (gpu.Inventory, []gpu.Allocation) {
	inv := fleet(b, "8x80GiB:nvlink-pairs")
	fresh := t0.Add(time.Hour)
	return inv, []gpu.Allocation{
		alloc(inv, "a", "m1", 30*gpu.GiB, gpu.LeaseReady, fresh, 0),
		alloc(inv, "b", "m2", 17*gpu.GiB, gpu.LeaseReady, fresh, 0),
		alloc(inv, "c", "m3", 60*gpu.GiB, gpu.LeaseReady, fresh, 3),
		alloc(inv, "d", "m4", 71*gpu.GiB, gpu.LeaseReady, fresh, 4, 5),
		alloc(inv, "e", "m5", 10*gpu.GiB, gpu.LeaseLoading, fresh, 6),
		alloc(inv, "f", "m6", 10*gpu.GiB, gpu.LeaseReady, t0, 7),
	}
}

// BenchmarkFit: one placement on an 8-GPU host with a few leases (must be microseconds).
func BenchmarkFit(b *testing.B) {
	inv, live := benchLedger(b)
	for _, v := range []gpu.Variant{m8B16, m70B16, m235B} {
		b.Run(v.Name+"/"+inGiB(v.NeedMiB)+"GiB", func(b *testing.B) {
			for b.Loop() {
				Fit(inv, live, v, t0)
			}
		})
	}
}

// BenchmarkChooseVariant: 4 replicas, three variants, the last the one that fits.
func BenchmarkChooseVariant(b *testing.B) {
	inv, live := benchLedger(b)
	variants := []gpu.Variant{m235B, m70B16, m8B16}
	for b.Loop() {
		ChooseVariant(inv, live, variants, 4, t0)
	}
}

// BenchmarkAdmit: a claim behind three waiters.
func BenchmarkAdmit(b *testing.B) {
	inv, live := benchLedger(b)
	queue := []Waiter{
		{Holder: "w1", Variant: m235B}, {Holder: "w2", Variant: m70B16}, {Holder: "w3", Variant: m30G},
	}
	for b.Loop() {
		Admit(inv, live, queue, "me", m8B16, t0)
	}
}
