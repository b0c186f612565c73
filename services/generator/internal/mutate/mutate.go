// Package mutate is the generator's no-model backend: classic evolutionary operators applied to
// the EVOLVE-BLOCK regions of a program. It makes a run work with no GPU and no API key, and
// it is a real baseline: most evolved programs are parameter sweeps in disguise, and
// perturbing their numeric literals is what a model's edits often amount to.
//
// Every random choice comes from the task's seed, so a redelivered task yields the same mutant.
package mutate

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"

	"github.com/shoal-run/shoal/pkg/program"
)

// Input is what one mutation starts from.
type Input struct {
	Parent       string
	Inspirations []Inspiration
	// Language picks comment and string syntax ("python", "cpp", "rust", ...); "" is Python.
	Language string
	Seed     int64
}

// Inspiration is another program of the population that crossover may take from.
type Inspiration struct {
	ID   string
	Code string
}

// Mutate applies one to three operators, weighted toward perturbing numeric literals, to the
// lines inside the parent's evolve regions (the whole program when it has none), and returns
// the mutant with a summary of what changed. It returns ErrNoChange when no operator could
// change anything, and the program package's error when the markers are unbalanced.
func Mutate(in Input) (code, summary string, err error) {
	regions, err := program.Regions(in.Parent)
	if err != nil {
		return "", "", err
	}
	lines := program.Lines(in.Parent)
	if len(regions) == 0 {
		regions = []program.Region{{Start: 0, End: len(lines)}}
	}
	m := &mutant{
		syn:     syntaxFor(in.Language),
		lines:   append([]string(nil), lines...),
		regions: regions,
		rng:     rand.New(rand.NewPCG(uint64(in.Seed), uint64(in.Seed)^0x5eed5eed5eed5eed)),
	}
	for _, insp := range in.Inspirations {
		if d, ok := m.donor(insp); ok {
			m.donors = append(m.donors, d)
		}
	}
	trailing := strings.HasSuffix(in.Parent, "\n")
	join := func() string {
		s := strings.Join(m.lines, "\n")
		if trailing && len(m.lines) > 0 {
			s += "\n"
		}
		return s
	}

	ops := []struct {
		name   string
		weight float64
		apply  func() bool
	}{
		{"perturb", 65, m.perturb},
		{"crossover", 15, m.crossover},
		{"swap", 7, m.swap},
		{"duplicate", 7, m.duplicate},
		{"delete", 6, m.delete},
	}
	weights := make([]float64, len(ops))
	for i, op := range ops {
		weights[i] = op.weight
	}
	if len(m.donors) == 0 {
		weights[1] = 0
	}
	target := 1 + pick(m.rng, []float64{55, 30, 15})
	applied := 0
	for tries := 0; tries < 50; tries++ {
		if applied >= target && join() != in.Parent {
			break
		}
		i := pick(m.rng, weights)
		if i < 0 {
			break
		}
		m.scan()
		if ops[i].apply() {
			applied++
		} else {
			weights[i] = 0 // it cannot apply to this program; do not ask again
		}
	}
	code = join()
	if code == in.Parent {
		return "", "", fmt.Errorf("%w: no numeric literal, movable line or compatible inspiration in the evolve blocks", ErrNoChange)
	}
	return code, "mutate: " + strings.Join(m.notes, "; "), nil
}

// mutant is a program being mutated: its lines, where its regions now lie, and what the
// scanner found in each line.
type mutant struct {
	syn     syntax
	lines   []string
	regions []program.Region
	info    []lineInfo
	donors  []donor
	rng     *rand.Rand
	notes   []string
}

// donor is an inspiration prepared for crossover.
type donor struct {
	id      string
	lines   []string
	regions []program.Region
	info    []lineInfo
}

func (m *mutant) donor(insp Inspiration) (donor, bool) {
	regions, err := program.Regions(insp.Code)
	if err != nil {
		return donor{}, false
	}
	lines := program.Lines(insp.Code)
	if len(regions) == 0 {
		regions = []program.Region{{Start: 0, End: len(lines)}}
	}
	return donor{id: insp.ID, lines: lines, regions: regions, info: scan(lines, m.syn)}, true
}

func (m *mutant) scan() { m.info = scan(m.lines, m.syn) }

func (m *mutant) note(format string, args ...any) {
	m.notes = append(m.notes, fmt.Sprintf(format, args...))
}

// regionOf returns the index of the region holding line i, or -1.
func (m *mutant) regionOf(i int) int {
	for r, reg := range m.regions {
		if i >= reg.Start && i < reg.End {
			return r
		}
	}
	return -1
}

// insert puts line at index at, inside region r, shifting the regions after it.
func (m *mutant) insert(at, r int, line string) {
	m.lines = append(m.lines[:at], append([]string{line}, m.lines[at:]...)...)
	m.regions[r].End++
	for k := r + 1; k < len(m.regions); k++ {
		m.regions[k].Start++
		m.regions[k].End++
	}
}

// remove deletes line at, which lies in region r, shifting the regions after it.
func (m *mutant) remove(at, r int) {
	m.lines = append(m.lines[:at], m.lines[at+1:]...)
	m.regions[r].End--
	for k := r + 1; k < len(m.regions); k++ {
		m.regions[k].Start--
		m.regions[k].End--
	}
}

// perturb changes one numeric literal. Floats are picked three times as often as integers,
// since they are more often the tunable constants of a program.
func (m *mutant) perturb() bool {
	type site struct {
		line int
		lit  literal
	}
	var sites []site
	var weights []float64
	for _, reg := range m.regions {
		for i := reg.Start; i < reg.End; i++ {
			for _, l := range m.info[i].lits {
				sites = append(sites, site{i, l})
				w := 1.0
				if l.float {
					w = 3
				}
				weights = append(weights, w)
			}
		}
	}
	k := pick(m.rng, weights)
	if k < 0 {
		return false
	}
	s := sites[k]
	line := m.lines[s.line]
	old := line[s.lit.start:s.lit.end]
	var repl string
	if s.lit.float {
		repl = perturbFloat(m.rng, old)
	} else {
		repl = perturbInt(m.rng, old)
	}
	if repl == "" || repl == old {
		return false
	}
	m.lines[s.line] = line[:s.lit.start] + repl + line[s.lit.end:]
	m.note("line %d: %s -> %s", s.line+1, old, repl)
	return true
}

// perturbFloat scales by a log-normal factor of a randomly chosen spread (fine or coarse
// search), or shifts by a few units of the literal's last written digit. The result stays
// non-negative, because the literal's sign, if any, is an operator outside it.
func perturbFloat(rng *rand.Rand, old string) string {
	v, err := strconv.ParseFloat(strings.ReplaceAll(old, "_", ""), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return ""
	}
	decimals, exp := floatStyle(old)
	var nv float64
	var text string
	switch {
	case v == 0:
		nv = math.Abs(rng.NormFloat64()) * []float64{0.01, 0.1, 1}[rng.IntN(3)]
	case !exp && rng.Float64() < 0.35:
		unit := math.Pow(10, -float64(decimals))
		step := float64(1 + rng.IntN(3))
		if rng.IntN(2) == 0 {
			step = -step
		}
		nv = v + step*unit
		if nv < 0 {
			nv = v - step*unit
		}
		text = strconv.FormatFloat(nv, 'f', decimals, 64)
	default:
		sigma := []float64{0.05, 0.2, 0.5}[rng.IntN(3)]
		nv = v * math.Exp(sigma*rng.NormFloat64())
	}
	if math.IsInf(nv, 0) || math.IsNaN(nv) {
		return ""
	}
	asFloat := func(s string) string {
		if !strings.ContainsAny(s, ".eE") {
			s += ".0" // stay a float: 2 and 2.0 differ in Python and C
		}
		return s
	}
	if text != "" {
		return asFloat(text)
	}
	// Enough digits to show the change, no more: 0.5 becomes 0.573, not 0.5734921.
	for sig := min(max(significantDigits(old), 3), 8); sig <= 17; sig++ {
		if text = asFloat(strconv.FormatFloat(nv, 'g', sig, 64)); text != old {
			break
		}
	}
	return text
}

// floatStyle reads how many decimals a float literal has and whether it has an exponent.
func floatStyle(lit string) (decimals int, exp bool) {
	lit = strings.ReplaceAll(lit, "_", "")
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		return 0, true
	}
	if i := strings.IndexByte(lit, '.'); i >= 0 {
		return len(lit) - i - 1, false
	}
	return 0, false
}

func significantDigits(lit string) int {
	lit = strings.ReplaceAll(lit, "_", "")
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		lit = lit[:i]
	}
	digits := strings.TrimLeft(strings.ReplaceAll(lit, ".", ""), "0")
	return max(len(digits), 1)
}

// perturbInt moves an integer by ±1..±k, k growing with the integer's size, and keeps it
// non-negative.
func perturbInt(rng *rand.Rand, old string) string {
	v, err := strconv.ParseInt(strings.ReplaceAll(old, "_", ""), 10, 64)
	if err != nil || v > math.MaxInt64/2 {
		return ""
	}
	k := 1 + int64(math.Log2(float64(v)+1))
	d := 1 + rng.Int64N(k)
	if rng.IntN(2) == 0 && v-d >= 0 {
		d = -d
	}
	return strconv.FormatInt(v+d, 10)
}

// movable lists the lines of region r that the line operators may move, copy or delete.
func (m *mutant) movable(r int) []int {
	var out []int
	reg := m.regions[r]
	for i := reg.Start; i < reg.End; i++ {
		if m.info[i].movable(m.syn) {
			out = append(out, i)
		}
	}
	return out
}

// allMovable lists (line, region) pairs over every region.
func (m *mutant) allMovable() [][2]int {
	var out [][2]int
	for r := range m.regions {
		for _, i := range m.movable(r) {
			out = append(out, [2]int{i, r})
		}
	}
	return out
}

// siblings lists the lines of i's block, at i's indentation, within window lines of i: lines
// between them are in the same block (as deep or deeper), so exchanging them keeps the
// program's structure.
func (m *mutant) siblings(i, r, window int, want func(j int) bool) []int {
	reg := m.regions[r]
	ind := m.info[i].indent
	var out []int
	for dir := -1; dir <= 1; dir += 2 {
		for j := i + dir; j >= reg.Start && j < reg.End && abs(j-i) <= window; j += dir {
			in := m.info[j]
			if !in.code {
				continue
			}
			if !strings.HasPrefix(in.indent, ind) {
				break // left the block
			}
			if in.indent == ind && want(j) {
				out = append(out, j)
			}
		}
	}
	return out
}

func (m *mutant) swap() bool {
	cands := m.allMovable()
	m.rng.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	for _, c := range cands {
		i, r := c[0], c[1]
		sib := m.siblings(i, r, 8, func(j int) bool {
			return m.info[j].movable(m.syn) && strings.TrimSpace(m.lines[j]) != strings.TrimSpace(m.lines[i])
		})
		if len(sib) == 0 {
			continue
		}
		j := sib[m.rng.IntN(len(sib))]
		m.lines[i], m.lines[j] = m.lines[j], m.lines[i]
		m.note("swapped lines %d and %d", min(i, j)+1, max(i, j)+1)
		return true
	}
	return false
}

func (m *mutant) duplicate() bool {
	cands := m.allMovable()
	if len(cands) == 0 {
		return false
	}
	c := cands[m.rng.IntN(len(cands))]
	m.insert(c[0]+1, c[1], m.lines[c[0]])
	m.note("duplicated line %d", c[0]+1)
	return true
}

func (m *mutant) delete() bool {
	cands := m.allMovable()
	m.rng.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	for _, c := range cands {
		// Keep at least one statement in the block, so that Python's `if x:` keeps a body.
		if len(m.siblings(c[0], c[1], math.MaxInt, func(int) bool { return true })) == 0 {
			continue
		}
		m.note("deleted line %d: %s", c[0]+1, clip(strings.TrimSpace(m.lines[c[0]])))
		m.remove(c[0], c[1])
		return true
	}
	return false
}

// crossover takes from an inspiration whose region matches the parent's: literal by literal
// when the two regions differ only in their literals, otherwise a contiguous run of lines
// when the regions have the same number of lines.
func (m *mutant) crossover() bool {
	type option struct {
		d, r    int
		uniform bool
	}
	var opts []option
	for d, dn := range m.donors {
		for r := range min(len(m.regions), len(dn.regions)) {
			pr, dr := m.regions[r], dn.regions[r]
			if pr.End-pr.Start != dr.End-dr.Start || pr.End == pr.Start {
				continue
			}
			if sameShape(m.lines[pr.Start:pr.End], m.info[pr.Start:pr.End], dn.lines[dr.Start:dr.End], dn.info[dr.Start:dr.End]) {
				opts = append(opts, option{d, r, true})
			}
			opts = append(opts, option{d, r, false})
		}
	}
	m.rng.Shuffle(len(opts), func(a, b int) { opts[a], opts[b] = opts[b], opts[a] })
	for _, o := range opts {
		if o.uniform && m.uniformCrossover(o.d, o.r) || !o.uniform && m.lineCrossover(o.d, o.r) {
			return true
		}
	}
	return false
}

// uniformCrossover takes each differing literal from the donor with probability one half (at
// least one), only where both are floats or both integers.
func (m *mutant) uniformCrossover(d, r int) bool {
	dn := m.donors[d]
	pr, dr := m.regions[r], dn.regions[r]
	type swap struct{ line, k int }
	var diffs []swap
	for off := range pr.End - pr.Start {
		pl, dl := m.info[pr.Start+off].lits, dn.info[dr.Start+off].lits
		for k := range pl {
			a := m.lines[pr.Start+off][pl[k].start:pl[k].end]
			b := dn.lines[dr.Start+off][dl[k].start:dl[k].end]
			if a != b && pl[k].float == dl[k].float {
				diffs = append(diffs, swap{off, k})
			}
		}
	}
	if len(diffs) == 0 {
		return false
	}
	forced := m.rng.IntN(len(diffs))
	taken := 0
	// Replace right to left within a line, so earlier offsets stay valid.
	for x := len(diffs) - 1; x >= 0; x-- {
		s := diffs[x]
		if x != forced && m.rng.IntN(2) == 0 {
			continue
		}
		i := pr.Start + s.line
		pl, dl := m.info[i].lits[s.k], dn.info[dr.Start+s.line].lits[s.k]
		m.lines[i] = m.lines[i][:pl.start] + dn.lines[dr.Start+s.line][dl.start:dl.end] + m.lines[i][pl.end:]
		taken++
	}
	m.note("crossover: %d of %d differing literals from %s", taken, len(diffs), dn.name(d))
	return true
}

// lineCrossover copies a run of lines from the donor over the same positions of the parent.
// The run must start and end on whole statements in both programs and keep each line's
// indentation, so that it fits where it lands.
func (m *mutant) lineCrossover(d, r int) bool {
	dn := m.donors[d]
	pr, dr := m.regions[r], dn.regions[r]
	n := pr.End - pr.Start
	var differ []int
	for off := range n {
		if m.lines[pr.Start+off] != dn.lines[dr.Start+off] {
			differ = append(differ, off)
		}
	}
	if len(differ) == 0 {
		return false
	}
	for range 20 {
		c := differ[m.rng.IntN(len(differ))]
		a := max(0, c-m.rng.IntN(4))
		b := min(n, c+1+m.rng.IntN(4))
		if !m.fits(dn, pr.Start, dr.Start, a, b) {
			continue
		}
		copy(m.lines[pr.Start+a:pr.Start+b], dn.lines[dr.Start+a:dr.Start+b])
		if b-a == 1 {
			m.note("crossover: line %d from %s", pr.Start+a+1, dn.name(d))
		} else {
			m.note("crossover: lines %d-%d from %s", pr.Start+a+1, pr.Start+b, dn.name(d))
		}
		return true
	}
	return false
}

func (m *mutant) fits(dn donor, p0, d0, a, b int) bool {
	pa, pb, da, db := m.info[p0+a], m.info[p0+b-1], dn.info[d0+a], dn.info[d0+b-1]
	if !pa.clean || !da.clean || !pb.closed || !db.closed {
		return false
	}
	for off := a; off < b; off++ {
		if m.info[p0+off].indent != dn.info[d0+off].indent {
			return false
		}
	}
	return true
}

func (d donor) name(i int) string {
	if d.id != "" {
		return "inspiration " + d.id
	}
	return fmt.Sprintf("inspiration %d", i+1)
}

// sameShape reports whether two runs of lines are equal once their numeric literals are
// blanked out.
func sameShape(a []string, ai []lineInfo, b []string, bi []lineInfo) bool {
	for k := range a {
		if len(ai[k].lits) != len(bi[k].lits) || shape(a[k], ai[k].lits) != shape(b[k], bi[k].lits) {
			return false
		}
	}
	return true
}

func shape(line string, lits []literal) string {
	var sb strings.Builder
	at := 0
	for _, l := range lits {
		sb.WriteString(line[at:l.start])
		sb.WriteByte(0)
		at = l.end
	}
	sb.WriteString(line[at:])
	return sb.String()
}

// pick returns an index drawn in proportion to weights, or -1 when all are zero.
func pick(rng *rand.Rand, weights []float64) int {
	var sum float64
	for _, w := range weights {
		sum += w
	}
	if sum <= 0 {
		return -1
	}
	x := rng.Float64() * sum
	for i, w := range weights {
		if x < w {
			return i
		}
		x -= w
	}
	for i := len(weights) - 1; i >= 0; i-- {
		if weights[i] > 0 {
			return i
		}
	}
	return -1
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func clip(s string) string {
	if len(s) > 60 {
		return s[:57] + "..."
	}
	return s
}
