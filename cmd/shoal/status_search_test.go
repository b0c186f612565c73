package main

import (
	"testing"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// TestSearchLine: shoal status tells each model's share of the results when a run has more
// than one, and the evaluations novelty rejection saved; nothing for a plain run.
func TestSearchLine(t *testing.T) {
	tests := []struct {
		name string
		st   protocol.RunState
		want string
	}{
		{"one model, nothing skipped", protocol.RunState{ByModel: map[string]int64{"m": 9}, Models: map[string]protocol.ModelStats{"m": {}}}, ""},
		{"two models and skipped candidates", protocol.RunState{NoveltyRejected: 4, ByModel: map[string]int64{"useful": 90, "noise": 10},
			Models: map[string]protocol.ModelStats{"useful": {Improvements: 30}, "noise": {}}},
			"noise 10 results (10%), 0 improved on their parent; useful 90 results (90%), 30 improved on their parent; novelty_rejected 4 (evaluations saved)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := searchLine(&tc.st); got != tc.want {
				t.Errorf("searchLine = %q, want %q", got, tc.want)
			}
		})
	}
}
