package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// noopEvaluator is shoal's evaluator stage with nothing to evaluate: the same consumer and
// the same pipeline loop as the evaluator service, a handler that scores every candidate 1
// at once. It measures what the bus and the other services cost, or how well they keep a
// model busy, when evaluation is free.
func noopEvaluator(ctx context.Context, nc *nats.Conn, names protocol.Names) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var cons jetstream.Consumer
	for tries := 0; ; tries++ {
		cons, err = natsx.EnsureConsumer(ctx, js, names.CandidatesStream(), jetstream.ConsumerConfig{
			Durable:       names.EvaluatorConsumer(),
			FilterSubject: names.AllCandidates(),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       30 * time.Second,
		})
		if err == nil {
			break
		}
		if tries == 500 || ctx.Err() != nil {
			return fmt.Errorf("no-op evaluator: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return pipeline.Consume(ctx, cons, pipeline.Config{Name: "noop-evaluator", Concurrency: 64, Log: slog.New(slog.DiscardHandler)},
		func(ctx context.Context, msg jetstream.Msg) error {
			var c protocol.Candidate
			if err := protocol.Decode(msg.Data(), &c); err != nil {
				return pipeline.Permanent(err)
			}
			r := &protocol.Result{Meta: protocol.Meta{ID: protocol.ResultID(c.ID), Run: c.Run}, Candidate: c,
				Status: protocol.StatusOK, Score: 1, Metrics: map[string]float64{"combined_score": 1}, CreatedAt: time.Now().UTC()}
			if c.Rejected != "" {
				r.Status, r.Score, r.Metrics, r.Reason = protocol.StatusRejected, 0, nil, c.Rejected
			}
			_, err := natsx.Publish(ctx, js, names.Result(c.Run), r.ID, r)
			return err
		})
}
