package telemetry

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// propagator is W3C Trace Context (traceparent, tracestate), the one the design names. It is
// fixed rather than taken from otel's global, which shoal never sets.
var propagator = propagation.TraceContext{}

// Inject writes the trace context of ctx's span into h, and nothing when ctx has no valid
// span context (tracing off everywhere upstream). A nil h is allocated only when there is
// something to write; the header to publish is returned.
func Inject(ctx context.Context, h nats.Header) nats.Header {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return h
	}
	if h == nil {
		h = nats.Header{}
	}
	propagator.Inject(ctx, headerCarrier(h))
	return h
}

// Extract returns ctx with the remote span context that h carries, if any: spans started from
// it are children of the publisher's span, in its trace.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, headerCarrier(h))
}

// headerCarrier is a NATS header as OpenTelemetry's TextMapCarrier. NATS keys are case
// sensitive; the propagator uses its own lower-case names on both ends.
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string { return nats.Header(c).Get(key) }

func (c headerCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
