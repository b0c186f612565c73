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
	stage := pipeline.NewStage(pipeline.StageConfig[protocol.Candidate, protocol.Result]{
		Names: names, JetStream: js, Subject: names.Result,
		Do: func(_ context.Context, c *protocol.Candidate) (*protocol.Result, error) {
			r := c.Result("noop-evaluator")
			if !c.Done() {
				r.Status, r.Score, r.Metrics = protocol.StatusOK, 1, map[string]float64{"combined_score": 1}
			}
			return r, nil
		},
	})
	return stage.Run(ctx, cons, pipeline.Config{Name: "noop-evaluator", Concurrency: 64, Log: slog.New(slog.DiscardHandler)})
}
