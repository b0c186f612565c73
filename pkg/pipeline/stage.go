package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/telemetry"
)

// Body is what a stage reads and writes: a wire body (protocol.Message) whose envelope gives
// its id and run. Every body of pkg/protocol is one through its embedded protocol.Meta.
type Body[T any] interface {
	*T
	protocol.Message
	Envelope() *protocol.Meta
}

// DeadReasonPrefix starts the reason a stage hands its Failed hook for a message that went to
// DEAD.
const DeadReasonPrefix = "dead-lettered: "

// StageConfig describes a stage to NewStage. The pipeline knows nothing of what In and Out
// mean: the stage's owner says where Out goes, how In becomes Out, and what Out records a
// failure.
type StageConfig[In, Out any] struct {
	// Names gives subjects (the run of a body without one is read from its subject); zero
	// means the default prefix.
	Names protocol.Names
	// JetStream publishes outputs.
	JetStream jetstream.JetStream
	// Subject is where an output of run goes.
	Subject func(run string) string
	// Do turns one input into its output. It must be safe to run twice on the same input: a
	// crash between its output and the ack redelivers the input, and the output's id, derived
	// from the input's, makes the second copy one JetStream drops. A nil output with a nil
	// error settles the input with nothing to publish (Do handed it on itself). Errors are
	// retried unless Permanent.
	Do func(ctx context.Context, in *In) (*Out, error)
	// Failed turns an input that no delivery could settle (it is in DEAD now) into the output
	// that records its failure downstream, so that its run's accounting completes; reason
	// starts with DeadReasonPrefix. A nil output leaves it to DEAD alone. Nil: dead inputs
	// have no output.
	Failed func(ctx context.Context, in *In, reason string) (*Out, error)
	// Shrink, when set, makes an output that is over the body limit smaller, one step a call,
	// and reports whether it could. Without it, or once it cannot, the output is a Permanent
	// error.
	Shrink func(out *Out) bool
	// Telemetry traces and measures the stage; zero: off. Each input is one consumer span,
	// a child of the span that published it (its traceparent header), and the parent of Do's
	// spans and of the output's publish, which carries the trace on. Run also reports its
	// consumer's queue depth and lag.
	Telemetry telemetry.Providers
}

// Stage is one step of the one-way pipeline: it reads In from its stream and writes one Out
// to the next. Its Handle decodes In, checks its run and id, calls Do and publishes Out under
// Out's id (derived from In's, so a redelivery changes nothing); its OnDead turns a dead In
// into a failed Out. Run consumes with both.
type Stage[In, Out any] struct {
	cfg     StageConfig[In, Out]
	tracer  trace.Tracer
	metrics *stageMetrics
	inEnv   func(*In) *protocol.Meta
	outEnv  func(*Out) *protocol.Meta
	decode  func([]byte, *In) error
	encode  func(*Out) protocol.Message
}

// NewStage returns the stage cfg describes. In and Out are inferred from cfg.Do.
func NewStage[In, Out any, PIn Body[In], POut Body[Out]](cfg StageConfig[In, Out]) *Stage[In, Out] {
	if cfg.Names.Prefix == "" {
		cfg.Names = protocol.NewNames("")
	}
	return &Stage[In, Out]{
		cfg:     cfg,
		tracer:  cfg.Telemetry.Tracer(),
		metrics: newStageMetrics(cfg.Telemetry.Meter()),
		inEnv:   func(in *In) *protocol.Meta { return PIn(in).Envelope() },
		outEnv:  func(out *Out) *protocol.Meta { return POut(out).Envelope() },
		decode:  func(data []byte, in *In) error { return protocol.Decode(data, PIn(in)) },
		encode:  func(out *Out) protocol.Message { return POut(out) },
	}
}

// Middleware wraps a stage's Do, e.g. to time it, or, in tests, to fail it.
type Middleware[In, Out any] func(next func(context.Context, *In) (*Out, error)) func(context.Context, *In) (*Out, error)

// With returns a copy of the stage whose Do runs through mw, the first outermost.
func (s *Stage[In, Out]) With(mw ...Middleware[In, Out]) *Stage[In, Out] {
	c := *s
	for i := len(mw) - 1; i >= 0; i-- {
		c.cfg.Do = mw[i](c.cfg.Do)
	}
	return &c
}

// Run consumes cons with the stage until ctx ends (see Consume). cfg's JetStream, Names and
// OnDead are the stage's.
func (s *Stage[In, Out]) Run(ctx context.Context, cons jetstream.Consumer, cfg Config) error {
	cfg.JetStream, cfg.Names = s.cfg.JetStream, s.cfg.Names
	cfg.OnDead = s.OnDead
	stop, err := ObserveConsumer(s.cfg.Telemetry.Meter(), cons, "", 0)
	if err != nil {
		return err
	}
	defer stop()
	return Consume(ctx, cons, cfg, s.Handle)
}

// Handle is the stage's Handler: one input, at most one output. The input's span and the
// processing time cover decoding, Do and the output's publish.
func (s *Stage[In, Out]) Handle(ctx context.Context, msg jetstream.Msg) (err error) {
	start := time.Now()
	ctx, span := s.tracer.Start(telemetry.Extract(ctx, msg.Headers()), "process", trace.WithSpanKind(trace.SpanKindConsumer))
	stream := ""
	if span.IsRecording() || s.metrics.on {
		if md, merr := msg.Metadata(); merr == nil {
			stream = md.Stream
			span.SetAttributes(telemetry.MessagingConsumerGroup.String(md.Consumer), telemetry.MessagingDeliveryCount.Int64(int64(md.NumDelivered)))
		}
	}
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "stage failed")
		}
		span.End()
		s.metrics.processed(ctx, stream, start, err)
	}()
	if span.IsRecording() {
		span.SetName("process " + stream)
		span.SetAttributes(telemetry.MessagingSystem.String(telemetry.MessagingSystemNATS),
			telemetry.MessagingOperationType.String(telemetry.MessagingOpProcess),
			telemetry.MessagingDestinationName.String(msg.Subject()))
	}
	in, err := s.read(msg.Subject(), msg.Data())
	if err != nil {
		return Permanent(err)
	}
	if span.IsRecording() {
		env := s.inEnv(in)
		span.SetAttributes(telemetry.MessagingMessageID.String(env.ID), telemetry.Run.String(env.Run))
	}
	out, err := s.cfg.Do(ctx, in)
	if err != nil || out == nil {
		return err
	}
	return s.publish(ctx, out)
}

// OnDead is the stage's Config.OnDead hook: a dead input becomes its failed output. A body
// that does not read as In names nothing to fail, and is left to DEAD alone.
func (s *Stage[In, Out]) OnDead(ctx context.Context, d DeadLetter) error {
	if s.cfg.Failed == nil {
		return nil
	}
	in, err := s.read(d.Subject, d.Data)
	if err != nil {
		return nil
	}
	out, err := s.cfg.Failed(ctx, in, DeadReasonPrefix+d.Reason)
	if err != nil || out == nil {
		return err
	}
	return s.publish(ctx, out)
}

// read decodes a body and checks its envelope; the run of a body without one is its
// subject's.
func (s *Stage[In, Out]) read(subject string, data []byte) (*In, error) {
	in := new(In)
	if err := s.decode(data, in); err != nil {
		return nil, fmt.Errorf("body on %s: %w", subject, err)
	}
	env := s.inEnv(in)
	if env.Run == "" {
		env.Run = s.cfg.Names.RunFromSubject(subject)
	}
	if err := protocol.ValidateRunID(env.Run); err != nil {
		return nil, fmt.Errorf("%s on %s: %w", env.ID, subject, err)
	}
	if env.ID == "" {
		return nil, fmt.Errorf("body on %s has no id", subject)
	}
	return in, nil
}

// publish stores out under its id, shrinking it while it is over the body limit and can be.
func (s *Stage[In, Out]) publish(ctx context.Context, out *Out) error {
	env := s.outEnv(out)
	subject := s.cfg.Subject(env.Run)
	for {
		_, err := natsx.Publish(ctx, s.cfg.JetStream, subject, env.ID, s.encode(out))
		if !errors.Is(err, protocol.ErrTooLarge) {
			return err
		}
		if s.cfg.Shrink == nil || !s.cfg.Shrink(out) {
			return Permanent(err)
		}
	}
}
