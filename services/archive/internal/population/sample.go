package population

import (
	"math/rand/v2"
	"slices"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// Mode says how a parent was chosen.
type Mode string

const (
	// Exploration: any member of the island, uniformly.
	Exploration Mode = "exploration"
	// Exploitation: a program of the elite archive, from the island when it holds one, drawn
	// by rank (see pickElite).
	Exploitation Mode = "exploitation"
	// Weighted: an island member drawn in proportion to its fitness.
	Weighted Mode = "weighted"
)

// Sample is a parent with the programs a prompt shows next to it.
type Sample struct {
	Parent protocol.Program
	Mode   Mode
	// Island is the island sampled: the one asked for, or the next one holding programs.
	Island int
	// Top is the island's best num_top_programs other than the parent.
	Top []protocol.Program
	// Inspirations are others: the island's best, its top elite_selection_ratio, the parent's
	// neighbours in the grid, then random members.
	Inspirations []protocol.Program
	// Previous is the island's latest attempts, newest first, without their code.
	Previous []protocol.Program
	// Seen is the novelty sketches of the island's latest evaluated programs, newest first
	// (only when database.novelty_threshold is above 0).
	Seen []string
}

// Sample draws from island a parent and the programs to show with it; numInspirations (or
// num_diverse_programs when 0) bounds Inspirations, and numInspirations (or num_top_programs)
// bounds Previous. The randomness is fixed by seed and the run's random_seed. It reports false
// while the population is empty.
func (p *Population) Sample(island, numInspirations int, seed int64) (Sample, bool) {
	isl := p.sampleIsland(island)
	if isl == nil {
		return Sample{}, false
	}
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(p.cfg.RandomSeed)^0x5eed))
	db := p.cfg.Database
	s := Sample{Island: isl.id, Seen: slices.Clone(isl.seen)}
	var parent *member
	switch r := rng.Float64(); {
	case r < db.ExplorationRatio:
		parent, s.Mode = isl.members[rng.IntN(len(isl.members))], Exploration
	case r < db.ExplorationRatio+db.ExploitationRatio:
		parent, s.Mode = p.pickElite(rng, isl.id), Exploitation
	}
	if parent == nil {
		parent, s.Mode = weightedPick(rng, isl.members), Weighted
	}
	s.Parent = parent.Program

	taken := []*member{parent} // a handful: a slice beats a map
	isTaken := func(m *member) bool { return slices.Contains(taken, m) }
	for _, m := range isl.ranked {
		if len(s.Top) >= p.cfg.Prompt.NumTopPrograms {
			break
		}
		if !isTaken(m) {
			taken = append(taken, m)
			s.Top = append(s.Top, m.Program)
		}
	}

	want := numInspirations
	if want <= 0 {
		want = p.cfg.Prompt.NumDiversePrograms
	}
	add := func(m *member) bool {
		if m == nil || len(s.Inspirations) >= want || isTaken(m) {
			return false
		}
		taken = append(taken, m)
		s.Inspirations = append(s.Inspirations, m.Program)
		return true
	}
	add(isl.best)
	elite := isl.ranked[:min(len(isl.ranked), max(1, int(float64(len(isl.ranked))*db.EliteSelectionRatio)))]
	addRandom(rng, elite, want-len(s.Inspirations), add)
	addRandom(rng, p.neighbours(isl, parent), want-len(s.Inspirations), add)
	addRandom(rng, isl.members, want-len(s.Inspirations), add)

	prev := numInspirations
	if prev <= 0 {
		prev = p.cfg.Prompt.NumTopPrograms
	}
	for i := len(isl.recent) - 1; i >= 0 && len(s.Previous) < prev; i-- {
		s.Previous = append(s.Previous, isl.recent[i])
	}
	return s, true
}

// addRandom offers add up to n distinct members of ms in random order until n are taken. It
// draws indices rather than shuffling ms, so a large island costs no more than a small one;
// should the draws keep hitting taken members it walks on from a random start.
func addRandom(rng *rand.Rand, ms []*member, n int, add func(*member) bool) {
	if n <= 0 || len(ms) == 0 {
		return
	}
	if len(ms) <= 4*n {
		for _, i := range rng.Perm(len(ms)) {
			if n > 0 && add(ms[i]) {
				n--
			}
		}
		return
	}
	for tries := 0; n > 0 && tries < 8*n; tries++ {
		if add(ms[rng.IntN(len(ms))]) {
			n--
		}
	}
	start := rng.IntN(len(ms))
	for k := 0; n > 0 && k < len(ms); k++ {
		if add(ms[(start+k)%len(ms)]) {
			n--
		}
	}
}

// sampleIsland returns the island asked for, or the next one along the ring holding programs.
func (p *Population) sampleIsland(island int) *island {
	start := p.islandIndex(island)
	for k := range p.islands {
		if isl := p.islands[(start+k)%len(p.islands)]; len(isl.members) > 0 {
			return isl
		}
	}
	return nil
}

// pickElite draws from the elite archive, from the island's part of it when it has one; nil
// when the archive is empty. The draw goes by rank: the k-th best elite weighs 1/k, so the
// best is drawn as often as the next few together, and every elite keeps a share.
//
// A uniform draw (OpenEvolve's) gives the archive's last program the share of its first.
// With tasks in flight, each parent was drawn before the latest results folded, so a new
// best waits a round of tasks before it breeds, and then, drawn uniformly, breeds as seldom
// as the 20th: a search that climbs by small edits, as issue 16's numeric stand-in does,
// slowed to well below what the same search reached with the best drawn more often.
func (p *Population) pickElite(rng *rand.Rand, island int) *member {
	var local []*member
	for _, e := range p.elites {
		if e.Island == island {
			local = append(local, e)
		}
	}
	if len(local) == 0 {
		local = p.elites
	}
	if len(local) == 0 {
		return nil
	}
	// local is best first, as p.elites is.
	var total float64
	for k := range local {
		total += 1 / float64(k+1)
	}
	x := rng.Float64() * total
	for k, e := range local {
		if x -= 1 / float64(k+1); x < 0 {
			return e
		}
	}
	return local[len(local)-1]
}

// weightedPick draws a member with probability growing with its score above the island's
// lowest; failed programs only when nothing works.
func weightedPick(rng *rand.Rand, ms []*member) *member {
	lo, hi, ok := 0.0, 0.0, 0
	for _, m := range ms {
		if m.Status != protocol.StatusOK {
			continue
		}
		if ok == 0 || m.Score < lo {
			lo = m.Score
		}
		if ok == 0 || m.Score > hi {
			hi = m.Score
		}
		ok++
	}
	if ok == 0 {
		return ms[rng.IntN(len(ms))]
	}
	// floor gives the weakest working program a small, non-zero chance.
	floor := 1.0
	if hi > lo {
		floor = (hi - lo) / float64(ok)
	}
	var total float64
	for _, m := range ms {
		if m.Status == protocol.StatusOK {
			total += m.Score - lo + floor
		}
	}
	x := rng.Float64() * total
	var last *member
	for _, m := range ms {
		if m.Status != protocol.StatusOK {
			continue
		}
		last = m
		if x -= m.Score - lo + floor; x < 0 {
			return m
		}
	}
	return last
}

// neighbours returns the holders of the cells next to the parent's (every coordinate within
// one bin), in a fixed order.
func (p *Population) neighbours(isl *island, parent *member) []*member {
	d := len(parent.Features)
	if d == 0 {
		return nil
	}
	var out []*member
	coords := make([]int, d)
	offset := make([]int, d)
	for i := range offset {
		offset[i] = -1
	}
	for {
		centre := true
		valid := true
		for i := range coords {
			coords[i] = parent.Features[i] + offset[i]
			centre = centre && offset[i] == 0
			valid = valid && coords[i] >= 0 && coords[i] < p.axes[i].bins
		}
		if !centre && valid {
			if m := isl.grid[cellKey(coords)]; m != nil {
				out = append(out, m)
			}
		}
		i := 0
		for ; i < d && offset[i] == 1; i++ {
			offset[i] = -1
		}
		if i == d {
			return out
		}
		offset[i]++
	}
}
