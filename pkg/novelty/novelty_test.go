package novelty

import (
	"strings"
	"testing"
)

const prog = `# EVOLVE-BLOCK-START
def coefficients():
    """Return the polynomial's coefficients, constant term first."""
    c0 = 0.5
    c1 = 0.5
    c2 = 0.5
    c3 = 0.5
    c4 = 0.5
    c5 = 0.5
    return [c0, c1, c2, c3, c4, c5]
# EVOLVE-BLOCK-END
`

func TestSimilarity(t *testing.T) {
	other := strings.Repeat("def unrelated(x):\n    return x * 42 + 17\n", 6)
	tests := []struct {
		name     string
		a, b     string
		min, max float64
	}{
		{"same code", prog, prog, 1, 1},
		{"trailing whitespace and blank lines", prog, strings.ReplaceAll(prog, "\n", "  \n\n"), 1, 1},
		{"one constant moved", prog, strings.Replace(prog, "c3 = 0.5", "c3 = 0.57", 1), 0.7, nearOnly},
		{"unrelated code", prog, other, 0, 0.2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Similarity(Of(tc.a), Of(tc.b))
			if got < tc.min || got > tc.max {
				t.Errorf("similarity %.3f, want within [%.3f, %.3f]", got, tc.min, tc.max)
			}
		})
	}
}

func TestClosestAndBadSketches(t *testing.T) {
	seen := []string{Of("x = 1\n"), "not a sketch", Of(prog)}
	if i, v := Closest(Of(prog), seen); i != 2 || v != 1 {
		t.Errorf("Closest = %d, %.3f; want 2, 1", i, v)
	}
	if i, v := Closest(Of(prog), nil); i != -1 || v != 0 {
		t.Errorf("Closest over nothing = %d, %.3f; want -1, 0", i, v)
	}
	if v := Similarity("not a sketch", "not a sketch"); v != 0 {
		t.Errorf("two bad sketches: similarity %.3f, want 0", v)
	}
	if n := len(Of(prog)); n != 96 {
		t.Errorf("sketch is %d characters, want 96", n)
	}
}
