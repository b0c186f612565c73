// Package placement says where one replica of a model variant goes on a host, as pure
// functions over (inventory, live leases, variant, now). Nothing here reads a clock, a map's
// iteration order or a random source: the same inputs always give the same shares, so two
// replicas racing for one host compute the same answer and the ledger's compare-and-set
// decides who got it.
//
// The ledger is the truth (DESIGN.md, "GPU leases"): a card's free memory is its usable
// memory (total − reserve) minus the live shares on it. A lease whose Expires is not after
// `now` is not live: its memory is free (a crashed holder frees its GPUs within one TTL).
//
// Preferences, in order (each documented where it is implemented):
//  1. one card, shared by best fit, with "large" and "small" requests kept apart;
//  2. the smallest group of wholly free cards, best connected, least stranded, lowest indices;
//  3. otherwise refuse with a reason; the caller queues (Admit) or falls back to the next
//     variant (ChooseVariant).
package placement

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-run/shoal/pkg/gpu"
)

// Waiter is one claim waiting in a host's queue (kept in the gpu-leases bucket next to the
// ledger). The queue slice is in arrival order; Since is informational (reasons, status).
type Waiter struct {
	Holder  string
	Model   string
	Variant gpu.Variant
	Since   time.Time
}

// Fit says where one replica of v goes now, next to the live leases: the shares to claim in
// one compare-and-set (sorted by GPU index, one per GPU of the group, all of equal size), or a
// reason the host cannot take it now ("needs 2×6.8 GiB on wholly free cards; 1 free card of
// 10.5 GiB"). Fit does not look at the queue: a caller that may overtake waiters uses Admit.
//
// Memory of v on a group of n GPUs is, per GPU, ceil(NeedMiB/n) + PerGPUOverheadMiB. Group
// sizes come from v.GroupSizes (empty: 1, 2, 4, 8) and are tried smallest first, so a variant
// that fits on one card never spans two.
//
// A card holding a LOADING lease is never chosen: loads are serialized per GPU (two servers
// starting together on one card mis-size each other's KV cache).
func Fit(inv gpu.Inventory, live []gpu.Allocation, v gpu.Variant, now time.Time) (shares []gpu.Share, reason string, ok bool) {
	l := newLedger(&inv, live, now, true)
	g, ok := l.place(v, nil)
	if !ok {
		return nil, l.explain(v, nil), false
	}
	return l.shares(g), "", true
}

// ChooseVariant returns the index of the most preferred variant (variants are in the run
// config's order of preference) such that `replicas` replicas of it can all be placed
// together, by repeated Fit, next to `others` (the live leases of other models; the caller
// leaves out its own model's replicas, so that the choice does not depend on which variant
// the current replicas happen to hold). With 2 replicas of a 12.5 GiB Q8 model on 4×11 GiB
// cards Q8 wins (2 cards each); with 4 replicas Q8 places only two, so Q4 wins (1 card each).
//
// ok reports whether all replicas fit. When none does, the index is still the best fallback:
// the variant that places the most replicas (most preferred among equals), or, when no
// variant places even one now, the most preferred one that fits this host when it is empty
// (the one worth queueing for); -1 when no variant ever fits this host.
//
// LOADING leases count as ready here: the choice is about capacity, and must not flip while
// a peer's server is starting (Fit, not ChooseVariant, serializes loads).
func ChooseVariant(inv gpu.Inventory, others []gpu.Allocation, variants []gpu.Variant, replicas int, now time.Time) (int, bool) {
	if replicas < 1 {
		replicas = 1
	}
	base := newLedger(&inv, others, now, false)
	work := ledger{inv: &inv, cards: make([]card, len(base.cards))}
	best, bestN := -1, 0
	for i, v := range variants {
		copy(work.cards, base.cards)
		n := 0
		for n < replicas {
			g, ok := work.place(v, nil)
			if !ok {
				break
			}
			work.add(g, false)
			n++
		}
		if n == replicas {
			return i, true
		}
		if n > bestN {
			best, bestN = i, n
		}
	}
	if best >= 0 {
		return best, false
	}
	empty := newLedger(&inv, nil, now, false)
	for i, v := range variants {
		if _, ok := empty.place(v, nil); ok {
			return i, false
		}
	}
	return -1, false
}

// Admit is Fit with a queue: claims are served in queue order, with backfill. The claimant
// (holder, asking for v; a holder not in the queue counts as last) is granted now only if
//
//  1. it fits, and
//  2. every waiter queued before it that fits now (ignoring the claimant) still fits once the
//     claimant is granted (the waiters ahead are simulated in queue order), and
//  3. it takes no card reserved for a waiter ahead that does not fit now.
//
// Rule 3 is what keeps a large claim from starving: without it a stream of small claims keeps
// landing on the cards a two-card waiter is waiting to see empty, and the waiter fits "now"
// only when the stream happens to stop. A waiter that does not fit reserves the cards it will
// fit on soonest: for one card, the card with the least memory still to be released; for a
// group, the group of cards (each large enough once empty) holding the least leased memory,
// best connected, least stranded, lowest indices. Nothing new is placed on reserved cards
// while the waiter waits, so the waiter is granted as soon as the leases on them end (and
// rule 2 then protects it). Backfill elsewhere is allowed. Without run-time estimates this is
// the safe form of EASY backfill; a waiter that can never fit this host reserves nothing.
//
// Simulated grants (waiters ahead, the claimant) count as ready, not loading: a load in
// progress delays a waiter only briefly and must not decide the order.
func Admit(inv gpu.Inventory, live []gpu.Allocation, queue []Waiter, holder string, v gpu.Variant, now time.Time) (shares []gpu.Share, reason string, ok bool) {
	base := newLedger(&inv, live, now, true)
	pos := len(queue)
	for k := range queue {
		if queue[k].Holder == holder {
			pos = k
			break
		}
	}
	ahead := queue[:pos]

	// Waiters ahead on the ledger as it is: who fits now, and which cards the others reserve.
	sim := base.clone()
	reserved := make([]bool, len(base.cards))
	reservedBy := make([]int, len(base.cards)) // first waiter (index in ahead) reserving the card
	fitted := make([]bool, len(ahead))
	for k := range ahead {
		if g, ok := sim.place(ahead[k].Variant, reserved); ok {
			sim.add(g, false)
			fitted[k] = true
			continue
		}
		for _, i := range sim.target(ahead[k].Variant, reserved) {
			if !reserved[i] {
				reserved[i], reservedBy[i] = true, k
			}
		}
	}

	g, ok := base.place(v, reserved)
	if !ok {
		if _, free := base.place(v, nil); free {
			return nil, reservedReason(ahead, reserved, reservedBy), false
		}
		return nil, base.explain(v, nil), false
	}

	// The same waiters, after granting the claimant: whoever fitted must still fit.
	after := base.clone()
	after.add(g, false)
	mask := make([]bool, len(base.cards))
	for k := range ahead {
		if wg, ok := after.place(ahead[k].Variant, mask); ok {
			after.add(wg, false)
			continue
		}
		if fitted[k] {
			w := ahead[k]
			return nil, fmt.Sprintf("would leave no room for %s (%s, %s), queued ahead since %s and fitting now",
				w.Holder, w.Model, w.Variant.Name, w.Since.UTC().Format(time.RFC3339)), false
		}
		for _, i := range after.target(ahead[k].Variant, mask) {
			mask[i] = true
		}
	}
	return base.shares(g), "", true
}

// Over lists what breaks the ledger's invariants at `now`, for the lease concurrency tests
// and for status: GPUs whose live leases exceed their usable memory (total − reserve), and
// half-granted leases (no GPUs, a share on a GPU the inventory lacks, a GPU twice in one
// lease, a share of no memory, one holder with two live leases). Empty means sound. The list
// is in GPU order, then in ledger order.
func Over(inv gpu.Inventory, live []gpu.Allocation, now time.Time) []string {
	var out []string
	l := newLedger(&inv, live, now, true)
	for i, c := range l.cards {
		if c.used > c.usable {
			out = append(out, fmt.Sprintf("GPU %d (%s): %s GiB leased > %s GiB usable",
				i, inv.GPUs[i].UUID, inGiB(c.used), inGiB(c.usable)))
		}
	}
	for k := range live {
		a := &live[k]
		if !isLive(a, now) {
			continue
		}
		if len(a.Shares) == 0 {
			out = append(out, fmt.Sprintf("lease %s: no GPUs", a.Holder))
		}
		for j, s := range a.Shares {
			if indexOf(&inv, s.UUID) < 0 {
				out = append(out, fmt.Sprintf("lease %s: share on unknown GPU %s", a.Holder, s.UUID))
			}
			if s.MiB <= 0 {
				out = append(out, fmt.Sprintf("lease %s: share of %d MiB on %s", a.Holder, s.MiB, s.UUID))
			}
			for _, t := range a.Shares[:j] {
				if t.UUID == s.UUID {
					out = append(out, fmt.Sprintf("lease %s: GPU %s twice", a.Holder, s.UUID))
					break
				}
			}
		}
		for _, b := range live[:k] {
			if b.Holder == a.Holder && isLive(&b, now) {
				out = append(out, fmt.Sprintf("lease %s: holder has two live leases", a.Holder))
				break
			}
		}
	}
	return out
}

// ---- the ledger as placement sees it ----

// card is one GPU at one instant.
type card struct {
	usable  gpu.MiB // total − reserve
	used    gpu.MiB // sum of live shares
	leases  int     // live leases on the card
	large   bool    // holds a large lease (see newLedger)
	loading bool    // holds a LOADING lease: no second load starts here
}

func (c *card) free() gpu.MiB { return c.usable - c.used }

type ledger struct {
	inv   *gpu.Inventory
	cards []card
}

// grant is a placement before it becomes shares: card indices (ascending) and the MiB on
// each.
type grant struct {
	idx []int
	mib gpu.MiB
}

// isLive: a lease is live while now is before its expiry; a zero Expires is already past.
func isLive(a *gpu.Allocation, now time.Time) bool { return now.Before(a.Expires) }

// newLedger sums the live leases per card. A lease is "large" on a card when its share
// exceeds half the card's usable memory, or when it spans several cards (tensor-parallel
// servers want their cards to themselves). Shares on GPUs this inventory lacks are ignored
// here (Over reports them). With withLoading false, LOADING leases count as ready.
func newLedger(inv *gpu.Inventory, live []gpu.Allocation, now time.Time, withLoading bool) ledger {
	l := ledger{inv: inv, cards: make([]card, len(inv.GPUs))}
	for i := range l.cards {
		l.cards[i].usable = inv.UsableMiB(i)
	}
	for k := range live {
		a := &live[k]
		if !isLive(a, now) {
			continue
		}
		multi := len(a.Shares) > 1
		for _, s := range a.Shares {
			i := indexOf(inv, s.UUID)
			if i < 0 {
				continue
			}
			c := &l.cards[i]
			c.used += s.MiB
			c.leases++
			if multi || 2*s.MiB > c.usable {
				c.large = true
			}
			if withLoading && a.State == gpu.LeaseLoading {
				c.loading = true
			}
		}
	}
	return l
}

func (l *ledger) clone() ledger {
	return ledger{inv: l.inv, cards: slices.Clone(l.cards)}
}

// add books a grant, as placement would classify it once granted.
func (l *ledger) add(g grant, loading bool) {
	for _, i := range g.idx {
		c := &l.cards[i]
		c.used += g.mib
		c.leases++
		if len(g.idx) > 1 || 2*g.mib > c.usable {
			c.large = true
		}
		if loading {
			c.loading = true
		}
	}
}

func (l *ledger) shares(g grant) []gpu.Share {
	out := make([]gpu.Share, len(g.idx))
	for k, i := range g.idx {
		out[k] = gpu.Share{UUID: l.inv.GPUs[i].UUID, MiB: g.mib}
	}
	return out
}

// footprint is the memory of v on each GPU of a group of n: ceil(NeedMiB/n) plus the
// per-GPU overhead (CUDA context and activations are paid on every card a server spans).
func footprint(v gpu.Variant, n int) gpu.MiB {
	need := max(v.NeedMiB, 0)
	return (need+gpu.MiB(n)-1)/gpu.MiB(n) + max(v.PerGPUOverheadMiB, 0)
}

// defaultSizes are the tensor-parallel sizes of a variant that names none.
var defaultSizes = []int{1, 2, 4, 8}

// groupSizes are v's group sizes that this host can offer, ascending, without repeats.
func groupSizes(v gpu.Variant, n int, buf []int) []int {
	sizes := v.GroupSizes
	if len(sizes) == 0 {
		sizes = defaultSizes
	}
	buf = buf[:0]
	for _, s := range sizes {
		if s >= 1 && s <= n && !slices.Contains(buf, s) {
			buf = append(buf, s)
		}
	}
	slices.Sort(buf)
	return buf
}

// place picks the group for one replica of v, skipping masked cards (mask may be nil).
func (l *ledger) place(v gpu.Variant, mask []bool) (grant, bool) {
	var sb [8]int
	for _, s := range groupSizes(v, len(l.cards), sb[:0]) {
		var g grant
		var ok bool
		if s == 1 {
			g, ok = l.placeOne(footprint(v, 1), mask)
		} else {
			g, ok = l.placeGroup(s, footprint(v, s), mask)
		}
		if ok {
			return g, true
		}
	}
	return grant{}, false
}

// placeOne puts a single-card footprint f on one card. Each candidate card (not masked, not
// loading, with f free) falls in a class, lowest first, and is ranked within it:
//
//	0  the request is small on the card (f ≤ half its usable memory) and the card already
//	   holds only small leases: best fit (least memory left), so small models pack together
//	   and whole cards stay whole;
//	1  the card is wholly free: the card that breaks the least connected free set first (its
//	   best link to another wholly free card is the weakest: a card whose NVLink partner is
//	   busy goes before either card of an empty pair), then least memory left (a large
//	   request takes the smallest card that fits), then lowest index;
//	2  sharing that involves a large lease (the request is large on the card, or the card
//	   holds a large lease): only when nothing else fits, best fit.
//
// Keeping large and small apart is what stops a 4B model from landing on the card a 27B
// model holds (or is about to need) on a 2×24 GiB host, whichever arrives first.
func (l *ledger) placeOne(f gpu.MiB, mask []bool) (grant, bool) {
	best := -1
	var bestKey [3]int64
	for i := range l.cards {
		c := &l.cards[i]
		if (mask != nil && mask[i]) || c.loading || c.free() < f {
			continue
		}
		left := int64(c.free() - f)
		var key [3]int64
		switch {
		case c.leases > 0 && 2*f <= c.usable && !c.large:
			key = [3]int64{0, left, 0}
		case c.leases == 0:
			key = [3]int64{1, int64(l.freeLinkScore(i, mask)), left}
		default:
			key = [3]int64{2, left, 0}
		}
		if best < 0 || less(key, bestKey) {
			best, bestKey = i, key
		}
	}
	if best < 0 {
		return grant{}, false
	}
	return grant{idx: []int{best}, mib: f}, true
}

func less(a, b [3]int64) bool {
	for k := range a {
		if a[k] != b[k] {
			return a[k] < b[k]
		}
	}
	return false
}

// freeLinkScore is card i's best link to another wholly free card: high when taking i would
// break an intact free pair or group.
func (l *ledger) freeLinkScore(i int, mask []bool) int {
	best := 0
	for j := range l.cards {
		if j == i || l.cards[j].leases > 0 || (mask != nil && mask[j]) {
			continue
		}
		best = max(best, gpu.LinkScore(l.inv.LinkBetween(i, j)))
	}
	return best
}

// placeGroup puts a group of s cards, f MiB each, on wholly free cards (a tensor-parallel
// server gets its cards to itself): among the groups of s such cards, the best connected
// (GroupScore: link scores summed over pairs), then the least stranded memory (usable − f,
// summed), then the lowest indices (enumeration is lexicographic: the first of equals wins).
func (l *ledger) placeGroup(s int, f gpu.MiB, mask []bool) (grant, bool) {
	var cb [16]int
	cand := cb[:0]
	for i := range l.cards {
		c := &l.cards[i]
		if (mask != nil && mask[i]) || c.leases > 0 || c.usable < f {
			continue
		}
		cand = append(cand, i)
	}
	if len(cand) < s {
		return grant{}, false
	}
	best := l.bestGroup(cand, s, func(grp []int) (int, int64) {
		var stranded int64
		for _, i := range grp {
			stranded += int64(l.cards[i].usable - f)
		}
		return gpu.GroupScore(*l.inv, grp), -stranded
	})
	return grant{idx: best, mib: f}, true
}

// bestGroup enumerates the s-subsets of cand (ascending indices, lexicographic order) and
// returns the one whose (a, b) is highest, the first among equals.
func (l *ledger) bestGroup(cand []int, s int, rank func([]int) (int, int64)) []int {
	var pb, gb [16]int
	pos := pb[:0]
	grp := gb[:0]
	if s > 16 {
		pos, grp = make([]int, 0, s), make([]int, 0, s)
	}
	for k := range s {
		pos = append(pos, k)
		grp = append(grp, 0)
	}
	var best []int
	var bestA int
	var bestB int64
	for {
		for k, p := range pos {
			grp[k] = cand[p]
		}
		a, b := rank(grp)
		if best == nil || a > bestA || (a == bestA && b > bestB) {
			best = append(best[:0], grp...)
			bestA, bestB = a, b
		}
		// next combination
		k := s - 1
		for k >= 0 && pos[k] == len(cand)-s+k {
			k--
		}
		if k < 0 {
			return best
		}
		pos[k]++
		for j := k + 1; j < s; j++ {
			pos[j] = pos[j-1] + 1
		}
	}
}

// target is where a waiter that does not fit now will fit soonest, for Admit's reservations:
// the smallest group size that this host can ever offer v (ignoring masked cards, unless
// every card is masked); for one card, the card with the least memory still to be released;
// for a group, the s cards (each large enough once empty) holding the least leased memory,
// then best connected, least stranded, lowest indices. Nil when v never fits this host.
func (l *ledger) target(v gpu.Variant, mask []bool) []int {
	if t := l.targetMasked(v, mask); t != nil || mask == nil {
		return t
	}
	return l.targetMasked(v, nil)
}

func (l *ledger) targetMasked(v gpu.Variant, mask []bool) []int {
	var sb [8]int
	for _, s := range groupSizes(v, len(l.cards), sb[:0]) {
		f := footprint(v, s)
		var cand []int
		for i := range l.cards {
			if (mask == nil || !mask[i]) && l.cards[i].usable >= f {
				cand = append(cand, i)
			}
		}
		if len(cand) < s {
			continue
		}
		if s == 1 {
			best := -1
			var bestShort gpu.MiB
			for _, i := range cand {
				short := max(f-l.cards[i].free(), 0)
				if best < 0 || short < bestShort {
					best, bestShort = i, short
				}
			}
			return []int{best}
		}
		return l.bestGroup(cand, s, func(grp []int) (int, int64) {
			var used, stranded int64
			for _, i := range grp {
				used += int64(l.cards[i].used)
				stranded += int64(l.cards[i].usable - f)
			}
			// Least used first; pack score and stranding into the tie-breakers.
			return -int(min(used, 1<<40)), int64(gpu.GroupScore(*l.inv, grp))<<40 - stranded
		})
	}
	return nil
}

// ---- reasons ----

// explain says why v does not fit now: for each group size this host could ever offer v,
// what it needs and what there is; or that it never fits this host.
func (l *ledger) explain(v gpu.Variant, mask []bool) string {
	if len(l.cards) == 0 {
		return "host has no GPUs"
	}
	var sb [8]int
	sizes := groupSizes(v, len(l.cards), sb[:0])
	var parts []string
	for _, s := range sizes {
		f := footprint(v, s)
		big := 0
		for i := range l.cards {
			if l.cards[i].usable >= f {
				big++
			}
		}
		if big < s {
			continue // never at this size
		}
		if s == 1 {
			most, at := gpu.MiB(-1), -1
			var loading []string
			for i := range l.cards {
				c := &l.cards[i]
				if c.loading {
					if c.free() >= f {
						loading = append(loading, strconv.Itoa(i))
					}
					continue
				}
				if c.free() > most {
					most, at = c.free(), i
				}
			}
			p := fmt.Sprintf("needs %s GiB on one card", inGiB(f))
			if at >= 0 {
				p += fmt.Sprintf(": most free is %s GiB (GPU %d)", inGiB(max(most, 0)), at)
			}
			if len(loading) > 0 {
				p += fmt.Sprintf("; GPU %s loading a model", strings.Join(loading, ","))
			}
			parts = append(parts, p)
			continue
		}
		var free []gpu.MiB
		for i := range l.cards {
			if l.cards[i].leases == 0 && l.cards[i].usable >= f {
				free = append(free, l.cards[i].usable)
			}
		}
		parts = append(parts, fmt.Sprintf("needs %d×%s GiB on wholly free cards; %s", s, inGiB(f), cardList(free)))
	}
	if len(parts) == 0 {
		var needs []string
		for _, s := range sizes {
			needs = append(needs, fmt.Sprintf("%d×%s GiB", s, inGiB(footprint(v, s))))
		}
		if len(needs) == 0 {
			return fmt.Sprintf("never fits this host: no group size of %v on %d GPUs", v.GroupSizes, len(l.cards))
		}
		us := make([]gpu.MiB, len(l.cards))
		for i := range l.cards {
			us[i] = l.cards[i].usable
		}
		return fmt.Sprintf("never fits this host: needs %s; cards have %s GiB usable",
			strings.Join(needs, " or "), sizesList(us))
	}
	return strings.Join(parts, "; ")
}

// cardList: "no free card", "1 free card of 10.5 GiB", "3 free cards of 23.5 GiB",
// "3 free cards (10.5, 23.5, 23.5 GiB)".
func cardList(free []gpu.MiB) string {
	switch {
	case len(free) == 0:
		return "no free card large enough"
	case len(free) == 1:
		return "1 free card of " + inGiB(free[0]) + " GiB"
	}
	s := slices.Clone(free)
	slices.Sort(s)
	if s[0] == s[len(s)-1] {
		return fmt.Sprintf("%d free cards of %s GiB", len(s), inGiB(s[0]))
	}
	g := make([]string, len(s))
	for k, m := range s {
		g[k] = inGiB(m)
	}
	return fmt.Sprintf("%d free cards (%s GiB)", len(s), strings.Join(g, ", "))
}

// sizesList: "4×10.5" or "1×10.5 + 4×23.5", ascending.
func sizesList(ms []gpu.MiB) string {
	s := slices.Clone(ms)
	slices.Sort(s)
	var parts []string
	for k := 0; k < len(s); {
		j := k
		for j < len(s) && s[j] == s[k] {
			j++
		}
		parts = append(parts, fmt.Sprintf("%d×%s", j-k, inGiB(s[k])))
		k = j
	}
	return strings.Join(parts, " + ")
}

func reservedReason(ahead []Waiter, reserved []bool, by []int) string {
	var cards []string
	first := -1
	for i, r := range reserved {
		if r {
			cards = append(cards, strconv.Itoa(i))
			if first < 0 || by[i] < first {
				first = by[i]
			}
		}
	}
	w := ahead[first]
	return fmt.Sprintf("fits only on GPU %s, held for %s (%s, %s) queued ahead since %s",
		strings.Join(cards, ","), w.Holder, w.Model, w.Variant.Name, w.Since.UTC().Format(time.RFC3339))
}

// inGiB formats MiB as GiB with one decimal, "11" rather than "11.0".
func inGiB(m gpu.MiB) string {
	s := strconv.FormatFloat(float64(m)/float64(gpu.GiB), 'f', 1, 64)
	return strings.TrimSuffix(s, ".0")
}

// ---- inventory helpers ----

// indexOf maps a share's UUID to its card; -1 for a GPU the inventory lacks. A linear scan:
// hosts have a handful of GPUs, and it keeps Fit free of maps.
func indexOf(inv *gpu.Inventory, uuid string) int {
	for i := range inv.GPUs {
		if inv.GPUs[i].UUID == uuid {
			return i
		}
	}
	return -1
}
