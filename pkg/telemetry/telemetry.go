// Package telemetry is shoal's OpenTelemetry: the providers a service takes (Providers), their
// setup from the standard OTEL_* variables and a metrics address (New), the W3C trace context
// in NATS message headers (Inject, Extract), and the names of shoal's attributes and
// instruments. Everything is off by default: a zero Providers gives OpenTelemetry's no-op
// tracer and meter, whose spans record nothing and whose headers are never written.
package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// ScopeName is the instrumentation scope of every tracer and meter shoal makes.
const ScopeName = "github.com/shoal-run/shoal"

// Providers are what a service is given to trace and measure with. A nil field is off.
type Providers struct {
	Traces  trace.TracerProvider
	Metrics metric.MeterProvider
}

// Tracer is p's tracer, a no-op one when tracing is off.
func (p Providers) Tracer() trace.Tracer {
	if p.Traces == nil {
		return tracenoop.NewTracerProvider().Tracer(ScopeName)
	}
	return p.Traces.Tracer(ScopeName)
}

// Meter is p's meter, a no-op one when metrics are off.
func (p Providers) Meter() metric.Meter {
	if p.Metrics == nil {
		return metricnoop.NewMeterProvider().Meter(ScopeName)
	}
	return p.Metrics.Meter(ScopeName)
}

// Start starts a span that is a child of ctx's span, with the tracer that made that span: a
// stage's Do and the functions it calls open their spans (the model call, the sandbox run)
// without being handed a tracer. Without a recording span in ctx it costs a no-op span.
func Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	return trace.SpanFromContext(ctx).TracerProvider().Tracer(ScopeName).Start(ctx, name, opts...)
}
