package population

import (
	"math"
	"strconv"
	"strings"

	"github.com/shoal-run/shoal/pkg/runconfig"
)

// Built-in feature dimensions; any other name is a metric the evaluator returns.
const (
	dimComplexity = "complexity"
	dimDiversity  = "diversity"
	dimScore      = "score"
)

// diversityRefs is how many of the elite archive's best programs a new program is compared
// with for the diversity dimension. OpenEvolve compares with a random sample; the archive's
// head is deterministic and is the part of the population a program most needs to differ from.
const diversityRefs = 8

// sketchBuckets is the size of a program's trigram histogram.
const sketchBuckets = 64

// sketch is a program's hashed byte-trigram histogram. Comparing two sketches costs 64 steps
// whatever the programs' length, where an edit distance costs their product.
type sketch struct {
	counts [sketchBuckets]uint32
	total  uint32
}

func newSketch(code string) *sketch {
	s := &sketch{}
	for i := 0; i+3 <= len(code); i++ {
		h := (uint32(code[i])*0x9E3779B1 ^ uint32(code[i+1])*0x85EBCA77 ^ uint32(code[i+2])*0xC2B2AE3D) * 0x27D4EB2F
		s.counts[h>>(32-6)]++
		s.total++
	}
	return s
}

// distance is half the L1 distance between the two normalised histograms: 0 for programs with
// the same trigram mix, 1 for programs that share none.
func (s *sketch) distance(o *sketch) float64 {
	if s.total == 0 || o.total == 0 {
		if s.total == o.total {
			return 0
		}
		return 1
	}
	a, b := float64(s.total), float64(o.total)
	var d float64
	for i := range s.counts {
		d += math.Abs(float64(s.counts[i])/a - float64(o.counts[i])/b)
	}
	return d / 2
}

// axis is one feature dimension of the grid, min-max scaled over every value seen so far.
type axis struct {
	name     string
	bins     int
	min, max float64
	seen     bool
}

func newAxes(db runconfig.Database) []axis {
	axes := make([]axis, len(db.FeatureDimensions))
	for i, name := range db.FeatureDimensions {
		bins := db.FeatureBins
		if b, ok := db.FeatureBinsByDimension[name]; ok {
			bins = b
		}
		axes[i] = axis{name: name, bins: max(bins, 1)}
	}
	return axes
}

// observe widens the axis to hold v.
func (a *axis) observe(v float64) {
	if !a.seen {
		a.min, a.max, a.seen = v, v, true
		return
	}
	a.min, a.max = min(a.min, v), max(a.max, v)
}

// bin places v on the axis as it stands. While every value seen is equal the one bin in the
// middle is used, as OpenEvolve does.
func (a *axis) bin(v float64) int {
	if !a.seen || a.max <= a.min {
		return a.bins / 2
	}
	b := int((v - a.min) / (a.max - a.min) * float64(a.bins))
	return min(max(b, 0), a.bins-1)
}

// cellKey names a cell of an island's grid by its coordinates.
func cellKey(coords []int) string {
	var b strings.Builder
	for i, c := range coords {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(strconv.Itoa(c))
	}
	return b.String()
}

// finite maps NaN and infinities to 0, so that no feature or score breaks the scaling.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}
