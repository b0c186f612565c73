package main

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/placement"
)

// result is what one strategy made of one scenario.
type result struct {
	placed  int
	vram    gpu.MiB  // sum of every granted share
	detail  []string // per replica, in arrival order: "q8@0,1" or "-" (with the reason for shoal)
	bounded bool     // the exhaustive search hit its node limit: placed is a lower bound
}

var benchNow = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// footprint is placement's memory of v per GPU of a group of n: ceil(NeedMiB/n) + overhead.
func footprint(v gpu.Variant, n int) gpu.MiB {
	return (v.NeedMiB+gpu.MiB(n)-1)/gpu.MiB(n) + v.PerGPUOverheadMiB
}

func groupSizes(v gpu.Variant, n int) []int {
	sizes := v.GroupSizes
	if len(sizes) == 0 {
		sizes = []int{1, 2, 4, 8}
	}
	var out []int
	for _, s := range sizes {
		if s >= 1 && s <= n && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func where(name string, idx []int) string {
	s := make([]string, len(idx))
	for k, i := range idx {
		s[k] = fmt.Sprint(i)
	}
	return name + "@" + strings.Join(s, ",")
}

// runShoal starts the replicas as the lease client does: ChooseVariant against the other
// models' leases with the model's worker count, then Fit; when the chosen variant does not
// fit now, the variants after it in order (a static benchmark has no releases to queue for).
func runShoal(s scenario) result {
	inv := s.inventory()
	var live []gpu.Allocation
	var res result
	for k, r := range s.replicas {
		var others []gpu.Allocation
		for _, a := range live {
			if a.Model != r.model {
				others = append(others, a)
			}
		}
		vi, _ := placement.ChooseVariant(inv, others, r.variants, s.workers(r.model), benchNow)
		why := "no variant ever fits this host"
		done := false
		if vi >= 0 {
			why = ""
			for _, v := range r.variants[vi:] {
				shares, reason, ok := placement.Fit(inv, live, v, benchNow)
				if !ok {
					if why == "" {
						why = reason
					}
					continue
				}
				live = append(live, gpu.Allocation{Holder: fmt.Sprintf("r%d", k), Model: r.model, Variant: v.Name,
					Shares: shares, State: gpu.LeaseReady, Expires: benchNow.Add(time.Hour)})
				idx := make([]int, len(shares))
				for j, sh := range shares {
					idx[j] = slices.IndexFunc(inv.GPUs, func(g gpu.GPU) bool { return g.UUID == sh.UUID })
					res.vram += sh.MiB
				}
				res.placed++
				res.detail = append(res.detail, where(v.Name, idx))
				done = true
				break
			}
		}
		if !done {
			if vi < 0 {
				_, why, _ = placement.Fit(inv, live, r.variants[0], benchNow)
			}
			res.detail = append(res.detail, "- ("+why+")")
		}
	}
	if over := placement.Over(inv, live, benchNow); len(over) > 0 {
		panic(fmt.Sprintf("scenario %s: shoal broke the ledger: %v", s.name, over))
	}
	return res
}

// freeCards is a ledger for the naive strategies: usable memory minus what they granted.
func freeCards(inv gpu.Inventory) []gpu.MiB {
	free := make([]gpu.MiB, len(inv.GPUs))
	for i := range free {
		free[i] = inv.UsableMiB(i)
	}
	return free
}

// tryCards grants v on exactly these cards if each has the per-GPU footprint free.
func tryCards(free []gpu.MiB, v gpu.Variant, idx []int, res *result) {
	f := footprint(v, len(idx))
	for _, i := range idx {
		if free[i] < f {
			res.detail = append(res.detail, "-")
			return
		}
	}
	for _, i := range idx {
		free[i] -= f
	}
	res.placed++
	res.vram += f * gpu.MiB(len(idx))
	res.detail = append(res.detail, where(v.Name, idx))
}

// runRoundRobin is the usual launcher script: gpus_per_worker = len(gpus) // workers (at
// least 1), worker k gets cards [k*g, (k+1)*g) (wrapping), first variant only, split over all
// its cards whatever the server's tensor-parallel sizes; placed if it fits.
func runRoundRobin(s scenario) result {
	inv := s.inventory()
	free := freeCards(inv)
	n := len(free)
	g := max(1, n/len(s.replicas))
	var res result
	for k, r := range s.replicas {
		idx := make([]int, g)
		for j := range idx {
			idx[j] = (k*g + j) % n
		}
		slices.Sort(idx)
		tryCards(free, r.variants[0], idx, &res)
	}
	return res
}

// runFixed is the hand-written config: big models on the last card, small ones on card 0
// (big: the first variant needs more than half the last card's usable memory), first variant
// only; placed if it fits.
func runFixed(s scenario) result {
	inv := s.inventory()
	free := freeCards(inv)
	last := len(free) - 1
	var res result
	for _, r := range s.replicas {
		v := r.variants[0]
		card := 0
		if 2*footprint(v, 1) > inv.UsableMiB(last) {
			card = last
		}
		tryCards(free, v, []int{card}, &res)
	}
	return res
}

// ---- exhaustive optimum ----

// card is one GPU for the search: cards of equal (usable, free) are interchangeable (the
// optimum counts memory only, not links), so states are kept sorted and memoized.
type card struct{ usable, free gpu.MiB }

type score struct {
	placed int
	rank   int // sum of the placed replicas' variant indices (0 = most preferred)
	vram   gpu.MiB
}

type solver struct {
	reps    []replica
	pref    bool      // between equal counts, prefer preferred variants before less VRAM
	fits    []int     // fits[i]: how many of reps[i:] fit an empty host at all
	minVRAM []gpu.MiB // minVRAM[i]: least VRAM reps[i:] take, each alone on an empty host
	seen    map[string]score
	best    score
	path    []string
	bestAt  []string
	nodes   int
	limit   int
	bounded bool
}

func (sv *solver) better(a, b score) bool {
	if a.placed != b.placed {
		return a.placed > b.placed
	}
	if sv.pref && a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.vram < b.vram
}

// runOptimum searches every assignment of every replica (not placed, or any variant on any
// set of cards of an allowed size, sharing allowed, each card's free memory respected) and
// keeps the best: most replicas placed, then (pref) most preferred variants, then least VRAM.
// Arrival order does not matter to it, nor do links. It is a depth-first branch and bound:
// cheapest choices first, a branch is cut when even placing every remaining replica at its
// least VRAM cannot beat the best found, and a state (replica, sorted free memory) reached
// again with no better partial score is cut too. A node limit keeps it bounded (reported:
// the answer is then a lower bound).
func runOptimum(s scenario, pref bool) result {
	inv := s.inventory()
	cards := make([]card, len(inv.GPUs))
	for i := range cards {
		u := inv.UsableMiB(i)
		cards[i] = card{u, u}
	}
	sortCards(cards)
	n := len(s.replicas)
	sv := &solver{reps: s.replicas, pref: pref, seen: map[string]score{}, limit: 5_000_000,
		fits: make([]int, n+1), minVRAM: make([]gpu.MiB, n+1), best: score{placed: -1}}
	for i := n - 1; i >= 0; i-- {
		least := gpu.MiB(-1)
		for _, v := range s.replicas[i].variants {
			for _, size := range groupSizes(v, len(cards)) {
				f := footprint(v, size)
				big := 0
				for _, c := range cards {
					if c.usable >= f {
						big++
					}
				}
				if big >= size && (least < 0 || f*gpu.MiB(size) < least) {
					least = f * gpu.MiB(size)
				}
			}
		}
		sv.fits[i], sv.minVRAM[i] = sv.fits[i+1], sv.minVRAM[i+1]
		if least >= 0 {
			sv.fits[i]++
			sv.minVRAM[i] += least
		}
	}
	sv.path = make([]string, n)
	sv.dfs(0, cards, score{})
	return result{placed: sv.best.placed, vram: sv.best.vram, bounded: sv.bounded, detail: sv.bestAt}
}

func sortCards(c []card) {
	slices.SortFunc(c, func(a, b card) int {
		if a.usable != b.usable {
			return int(a.usable - b.usable)
		}
		return int(a.free - b.free)
	})
}

func stateKey(i int, cards []card) string {
	b := binary.AppendUvarint(nil, uint64(i))
	for _, c := range cards {
		b = binary.AppendUvarint(b, uint64(c.usable))
		b = binary.AppendUvarint(b, uint64(c.free))
	}
	return string(b)
}

type choice struct {
	vi   int
	name string
	f    gpu.MiB
	size int
	next []card
	desc string
}

func (sv *solver) dfs(i int, cards []card, acc score) {
	if i == len(sv.reps) {
		if sv.better(acc, sv.best) {
			sv.best = acc
			sv.bestAt = slices.Clone(sv.path)
		}
		return
	}
	sv.nodes++
	if sv.nodes > sv.limit {
		sv.bounded = true
		return
	}
	// Bound: even if every remaining replica that can fit does, at its least VRAM.
	ub := score{placed: acc.placed + sv.fits[i], rank: acc.rank, vram: acc.vram + sv.minVRAM[i]}
	if sv.best.placed >= 0 && !sv.better(ub, sv.best) {
		return
	}
	key := stateKey(i, cards)
	if prev, ok := sv.seen[key]; ok && !sv.better(acc, prev) {
		return
	}
	if len(sv.seen) < 4_000_000 {
		sv.seen[key] = acc
	}
	var opts []choice
	for vi, v := range sv.reps[i].variants {
		for _, size := range groupSizes(v, len(cards)) {
			f := footprint(v, size)
			sv.groups(cards, size, f, func(next []card, desc string) {
				opts = append(opts, choice{vi: vi, name: v.Name, f: f, size: size, next: next, desc: desc})
			})
		}
	}
	slices.SortStableFunc(opts, func(a, b choice) int {
		if sv.pref && a.vi != b.vi {
			return a.vi - b.vi
		}
		return int(a.f*gpu.MiB(a.size) - b.f*gpu.MiB(b.size))
	})
	for _, o := range opts {
		sv.path[i] = o.name + " " + o.desc
		sv.dfs(i+1, o.next, score{placed: acc.placed + 1, rank: acc.rank + o.vi, vram: acc.vram + o.f*gpu.MiB(o.size)})
	}
	sv.path[i] = "-"
	sv.dfs(i+1, cards, acc)
}

// groups calls fn with the state after taking f MiB on each of `size` cards, once per
// distinct multiset of card kinds (runs of equal cards in the sorted state), and a
// description of the cards taken ("2×79.5G").
func (sv *solver) groups(cards []card, size int, f gpu.MiB, fn func([]card, string)) {
	var runs [][2]int // [start, length] of runs of equal cards with room for f
	for k := 0; k < len(cards); {
		j := k
		for j < len(cards) && cards[j] == cards[k] {
			j++
		}
		if cards[k].free >= f {
			runs = append(runs, [2]int{k, j - k})
		}
		k = j
	}
	take := make([]int, len(runs))
	var rec func(r, left int)
	rec = func(r, left int) {
		if left == 0 {
			next := slices.Clone(cards)
			var desc []string
			for q, t := range take[:r] {
				if t == 0 {
					continue
				}
				c := cards[runs[q][0]]
				desc = append(desc, fmt.Sprintf("%d×%s/%sG", t, gibs(f), gibs(c.free)))
				for x := range t {
					next[runs[q][0]+x].free -= f
				}
			}
			sortCards(next)
			fn(next, strings.Join(desc, "+"))
			return
		}
		if r == len(runs) {
			return
		}
		for t := min(left, runs[r][1]); t >= 0; t-- {
			take[r] = t
			rec(r+1, left-t)
		}
		take[r] = 0
	}
	rec(0, size)
}
