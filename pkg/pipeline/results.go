package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// The planner counts a run's iterations in RESULTS, and the archive folds every result: a task
// or candidate that died without one would leave its run waiting forever. These OnDead hooks
// record such a death as one failed result under the id the evaluator would have used, so a
// result that did get out first (the message died after its effect, before its ack) wins and
// this one is dropped as a duplicate.

// DeadReasonPrefix starts the Reason of a result recorded for a dead-lettered message.
const DeadReasonPrefix = "dead-lettered: "

// FailDeadTask returns an OnDead hook for generators: a dead task becomes one failed result
// for the candidate it would have produced. A body that does not decode as a task names no
// iteration, and a run that was never seeded has nothing to account: both are left to DEAD
// alone.
func FailDeadTask(js jetstream.JetStream, names protocol.Names) func(context.Context, DeadLetter) error {
	return func(ctx context.Context, d DeadLetter) error {
		var task protocol.Task
		if protocol.Decode(d.Data, &task) != nil || task.ID == "" {
			return nil
		}
		c := protocol.Candidate{
			Meta:       protocol.Meta{ID: protocol.CandidateID(task.ID), Run: runOf(task.Run, d, names)},
			TaskID:     task.ID,
			ParentID:   task.Parent.ID,
			Iteration:  task.Iteration,
			Island:     task.Island,
			Model:      task.Model,
			Language:   task.Language,
			Generation: task.Parent.Generation + 1,
			CreatedAt:  time.Now().UTC(),
		}
		return publishFailed(ctx, js, names, c, d)
	}
}

// FailDeadCandidate returns an OnDead hook for evaluators: a dead candidate becomes its one
// failed result.
func FailDeadCandidate(js jetstream.JetStream, names protocol.Names) func(context.Context, DeadLetter) error {
	return func(ctx context.Context, d DeadLetter) error {
		var c protocol.Candidate
		if protocol.Decode(d.Data, &c) != nil || c.ID == "" {
			return nil
		}
		c.Run = runOf(c.Run, d, names)
		return publishFailed(ctx, js, names, c, d)
	}
}

func runOf(run string, d DeadLetter, names protocol.Names) string {
	if run == "" {
		run = names.RunFromSubject(d.Subject)
	}
	return run
}

func publishFailed(ctx context.Context, js jetstream.JetStream, names protocol.Names, c protocol.Candidate, d DeadLetter) error {
	if protocol.ValidateRunID(c.Run) != nil {
		return nil // no run to account it to
	}
	// A run that was never seeded has no accounting to complete (and nobody to read its
	// results): DEAD alone keeps the message.
	runsKV, err := js.KeyValue(ctx, names.RunsBucket())
	if err != nil {
		return fmt.Errorf("runs bucket: %w", err)
	}
	if _, err := runsKV.Get(ctx, protocol.RunConfigKey(c.Run)); errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	} else if err != nil {
		return fmt.Errorf("run %s: %w", c.Run, err)
	}
	res := &protocol.Result{
		Meta:      protocol.Meta{ID: protocol.ResultID(c.ID), Run: c.Run},
		Candidate: c,
		Status:    protocol.StatusFailed,
		Reason:    DeadReasonPrefix + d.Reason,
		CreatedAt: time.Now().UTC(),
	}
	_, err = natsx.Publish(ctx, js, names.Result(c.Run), res.ID, res)
	if errors.Is(err, protocol.ErrTooLarge) {
		// The candidate's code is what made it too large; the failure is what counts.
		res.Candidate.Code = ""
		_, err = natsx.Publish(ctx, js, names.Result(c.Run), res.ID, res)
	}
	return err
}
