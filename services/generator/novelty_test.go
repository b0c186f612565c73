package generator

import (
	"strings"
	"testing"

	"github.com/shoal-run/shoal/pkg/novelty"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// TestTooFamiliar: under database.novelty_threshold a child equal to its parent or to a
// program its island evaluated lately is skipped with a reason that says which; a new child
// is not, and a threshold of 0 skips nothing.
func TestTooFamiliar(t *testing.T) {
	parent := "x = 1\ny = 2\n"
	seen := "x = 1\ny = 3\n"
	task := &protocol.Task{Island: 2, Parent: protocol.Program{ID: "p", Code: parent},
		Seen: []string{novelty.Of("z = 9\n"), novelty.Of(seen)}}
	tests := []struct {
		name, code string
		threshold  float64
		want       string // substring of the reason; "" = evaluated
	}{
		{"off", seen, 0, ""},
		{"like the parent", parent + "\n\n", 1, "similar to its parent p"},
		{"like an evaluated program", seen, 1, "the 2nd latest program island 2 evaluated"},
		{"new", "x = 1\ny = 4\n", 1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tooFamiliar(tc.code, task, tc.threshold)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("tooFamiliar = %q, want %q", got, tc.want)
			}
		})
	}
}
