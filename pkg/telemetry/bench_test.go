package telemetry_test

import (
	"context"
	"io"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/shoal-run/shoal/pkg/telemetry"
)

// BenchmarkHop is what tracing adds to one message's hop through a stage: the consumer span
// continuing the header's trace, one span inside the stage, the publish span and the header
// it writes for the next stage. "off" is the default (no-op providers); "on" exports every
// span through the batching processor to a JSON exporter writing to io.Discard.
func BenchmarkHop(b *testing.B) {
	exp, err := stdouttrace.New(stdouttrace.WithWriter(io.Discard))
	if err != nil {
		b.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	for _, c := range []struct {
		name string
		p    telemetry.Providers
	}{{"off", telemetry.Providers{}}, {"on", telemetry.Providers{Traces: tp}}} {
		b.Run(c.name, func(b *testing.B) {
			tracer := c.p.Tracer()
			ctx, root := tracer.Start(context.Background(), "plan task")
			in := telemetry.Inject(ctx, nats.Header{"Nats-Msg-Id": []string{"t"}})
			root.End()
			b.ReportAllocs()
			for b.Loop() {
				ctx, span := tracer.Start(telemetry.Extract(context.Background(), in), "process", trace.WithSpanKind(trace.SpanKindConsumer))
				if span.IsRecording() {
					span.SetAttributes(telemetry.MessagingSystem.String("nats"), telemetry.MessagingDestinationName.String("shoal.task.r.m"))
				}
				_, work := telemetry.Start(ctx, "work")
				work.End()
				pctx, send := telemetry.Start(ctx, "send", trace.WithSpanKind(trace.SpanKindProducer))
				if out := telemetry.Inject(pctx, nil); span.IsRecording() && len(out) == 0 {
					b.Fatal("no header")
				}
				send.End()
				span.End()
			}
		})
	}
}
