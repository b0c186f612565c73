package planner

import (
	"testing"

	"github.com/shoal-run/shoal/pkg/protocol"
)

func TestGate(t *testing.T) {
	const syntax = "evaluator.py: SyntaxError: invalid syntax (line 3)"
	tests := []struct {
		name       string
		pst        protocol.PlannerState
		st         protocol.RunState
		wantOpen   bool
		wantReason string
	}{
		{"no seed folded yet", protocol.PlannerState{Status: protocol.RunRunning}, protocol.RunState{}, false, ""},
		{"seed passed", protocol.PlannerState{Status: protocol.RunRunning}, protocol.RunState{Seeds: 1, SeedsOK: 1}, true, ""},
		{"seed failed", protocol.PlannerState{Status: protocol.RunRunning}, protocol.RunState{Seeds: 1, Failed: 1, SeedError: syntax}, false, "the seed failed to evaluate: " + syntax},
		{"one of two seeds passed", protocol.PlannerState{Status: protocol.RunRunning}, protocol.RunState{Seeds: 2, SeedsOK: 1, Failed: 1}, true, ""},
		{"tasks issued before a failed program was added", protocol.PlannerState{Status: protocol.RunRunning, Issued: 5}, protocol.RunState{Seeds: 2, SeedError: syntax}, true, ""},
		{"already failed", protocol.PlannerState{Status: protocol.RunFailed}, protocol.RunState{Seeds: 1, SeedError: syntax}, false, ""},
		{"state from before seeds were counted", protocol.PlannerState{Status: protocol.RunRunning}, protocol.RunState{Seeds: 1}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, open := gate(&tt.pst, &tt.st)
			if open != tt.wantOpen || reason != tt.wantReason {
				t.Errorf("gate = %q, %v; want %q, %v", reason, open, tt.wantReason, tt.wantOpen)
			}
		})
	}
}
