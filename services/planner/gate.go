package planner

import (
	"context"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// seedGate holds a run's first task until one of its seeds has evaluated with status ok, and
// ends the run as failed, with the evaluator's error, when the seeds folded so far all failed.
// A seed that cannot be evaluated (an evaluator with a syntax error, one that returns no
// valid metrics) would otherwise fail every candidate after it and spend the whole budget.
// It reports whether the planner may issue tasks for the run.
//
// A run that has issued tasks already is past the gate: a program added to it later that
// fails changes nothing.
func (s *Service) seedGate(ctx context.Context, pst *protocol.PlannerState, st *protocol.RunState) (bool, error) {
	reason, open := gate(pst, st)
	if reason == "" {
		return open, nil
	}
	leaveRunning(pst, time.Now().UTC())
	pst.Status, pst.StopReason = protocol.RunFailed, reason
	if err := s.save(ctx, pst); err != nil {
		return false, err
	}
	// Info, not Error: the service is fine; the run's input is broken, and the reason goes
	// to the user through the runs bucket and the event.
	s.log.Info("run failed", "run", pst.Run, "reason", reason)
	s.event(ctx, pst.Run, "failed: "+reason)
	return false, nil
}

// gate decides for seedGate: open, closed for now, or failed with the reason.
func gate(pst *protocol.PlannerState, st *protocol.RunState) (reason string, open bool) {
	switch {
	case pst.Status == protocol.RunFailed:
		return "", false
	case pst.Issued > 0 || st.SeedsOK > 0:
		return "", true
	case st.SeedError != "":
		return "the seed failed to evaluate: " + st.SeedError, false
	case st.Seeds > 0:
		return "", true // a state written before seeds were counted: its seed passed then
	}
	return "", false // no seed folded yet
}
