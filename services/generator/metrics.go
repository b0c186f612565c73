package generator

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/telemetry"
)

// metrics are the generator's instruments, named by the gen_ai semantic conventions where
// they have one.
type metrics struct {
	inFlight metric.Int64UpDownCounter
	tokens   metric.Int64Histogram
	duration metric.Float64Histogram
}

func newMetrics(m metric.Meter) (*metrics, error) {
	inFlight, err := m.Int64UpDownCounter(telemetry.MetricTasksInFlight, metric.WithUnit("{task}"),
		metric.WithDescription("tasks whose model call is in flight, by model"))
	if err != nil {
		return nil, fmt.Errorf("generator metrics: %w", err)
	}
	tokens, err := m.Int64Histogram(telemetry.MetricTokenUsage, metric.WithUnit("{token}"),
		metric.WithDescription("tokens of one model call, by model and token type (input, output); the rate of its sum is tokens per second"))
	if err != nil {
		return nil, fmt.Errorf("generator metrics: %w", err)
	}
	duration, err := m.Float64Histogram(telemetry.MetricOperationDuration, metric.WithUnit("s"),
		metric.WithDescription("time of one model call, retries and the edit's application included, by model"))
	if err != nil {
		return nil, fmt.Errorf("generator metrics: %w", err)
	}
	return &metrics{inFlight: inFlight, tokens: tokens, duration: duration}, nil
}

// call records one model call.
func (m *metrics) call(ctx context.Context, took time.Duration, tokens protocol.TokenUsage, attrs []attribute.KeyValue) {
	m.duration.Record(ctx, took.Seconds(), metric.WithAttributes(attrs...))
	if tokens.Prompt == 0 && tokens.Completion == 0 {
		return // the mutate backend, or a call that got no reply
	}
	in := append(attrs[:len(attrs):len(attrs)], telemetry.GenAITokenType.String(telemetry.GenAITokenTypeInput))
	out := append(attrs[:len(attrs):len(attrs)], telemetry.GenAITokenType.String(telemetry.GenAITokenTypeOutput))
	m.tokens.Record(ctx, int64(tokens.Prompt), metric.WithAttributes(in...))
	m.tokens.Record(ctx, int64(tokens.Completion), metric.WithAttributes(out...))
}
