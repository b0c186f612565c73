package pipeline_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/telemetry"
)

// TestStageContinuesTheTrace: a message published inside a span carries its traceparent
// through JetStream; the stage's span for it is a child of that publish, Do's spans are
// children of the stage's, and the output's publish carries the trace on to the next stage.
// With telemetry off nothing is recorded and no header is written.
func TestStageContinuesTheTrace(t *testing.T) {
	env := natstest.StartTestEnv(t)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })

	stage := pipeline.NewStage(pipeline.StageConfig[question, answer]{
		Names: env.Names, JetStream: env.JS, Subject: env.Names.Result,
		Telemetry: telemetry.Providers{Traces: tp, Metrics: mp},
		Do: func(ctx context.Context, q *question) (*answer, error) {
			_, span := telemetry.Start(ctx, "think")
			span.End()
			return &answer{Meta: protocol.Meta{ID: answerID(q), Run: q.Run}, Text: strings.ToUpper(q.Text)}, nil
		},
	})
	cons, err := env.JS.CreateOrUpdateConsumer(t.Context(), env.Names.CandidatesStream(), jetstream.ConsumerConfig{
		Durable: "echo", FilterSubject: env.Names.AllCandidates(), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, root := tp.Tracer("test").Start(t.Context(), "root")
	if _, err := natsx.Publish(ctx, env.JS, env.Names.Candidate("r1"), "q1", &question{Meta: protocol.Meta{ID: "q1", Run: "r1"}, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	root.End()
	runCtx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- stage.Run(runCtx, cons, pipeline.Config{Name: "echo"}) }()

	out := fetchOne(t, env, env.Names.ResultsStream())
	// Read while the stage runs: its consumer's gauges go with it. The processing time is
	// recorded when the handler returns, which can be just after its output is visible, so
	// read until every metric is there (or long past when it should have been).
	metricsWanted := []string{telemetry.MetricProcessDuration, telemetry.MetricQueueDepth, telemetry.MetricConsumerLag}
	found := map[string]bool{}
	for deadline := time.Now().Add(10 * time.Second); ; {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(t.Context(), &rm); err != nil {
			t.Fatal(err)
		}
		found = map[string]bool{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				found[m.Name] = true
			}
		}
		if allFound(found, metricsWanted) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	traceparent := out.Headers().Get("traceparent")
	if traceparent == "" {
		t.Fatal("the stage's output has no traceparent header")
	}

	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans.GetSpans() {
		byName[s.Name] = s
	}
	process := "process " + env.Names.CandidatesStream()
	want := map[string]string{ // span: its parent
		"send shoal.candidate": "root",
		process:                "send shoal.candidate",
		"think":                process,
		"send shoal.result":    process,
	}
	rootSpan, ok := byName["root"]
	if !ok {
		t.Fatalf("no root span among %v", names(spans.GetSpans()))
	}
	for name, parent := range want {
		s, ok := byName[name]
		if !ok {
			t.Errorf("no span %q among %v", name, names(spans.GetSpans()))
			continue
		}
		if s.SpanContext.TraceID() != rootSpan.SpanContext.TraceID() {
			t.Errorf("span %q is in trace %s, want %s", name, s.SpanContext.TraceID(), rootSpan.SpanContext.TraceID())
		}
		if got := s.Parent.SpanID(); got != byName[parent].SpanContext.SpanID() {
			t.Errorf("span %q has parent %s, want %q (%s)", name, got, parent, byName[parent].SpanContext.SpanID())
		}
	}
	if p := byName[process]; p.SpanKind != trace.SpanKindConsumer || !p.Parent.IsRemote() {
		t.Errorf("stage span kind %v remote parent %v; want a consumer span with a remote parent", p.SpanKind, p.Parent.IsRemote())
	}
	if send := byName["send shoal.result"]; !strings.Contains(traceparent, send.SpanContext.SpanID().String()) {
		t.Errorf("output traceparent %q does not name the publish span %s", traceparent, send.SpanContext.SpanID())
	}

	for _, name := range metricsWanted {
		if !found[name] {
			t.Errorf("metric %s not reported; have %v", name, found)
		}
	}
}

func allFound(found map[string]bool, names []string) bool {
	for _, n := range names {
		if !found[n] {
			return false
		}
	}
	return true
}

// TestStageWithoutTelemetry: off, a stage writes no trace header.
func TestStageWithoutTelemetry(t *testing.T) {
	env := natstest.StartTestEnv(t)
	stage := echoStage(env, nil)
	cons, err := env.JS.CreateOrUpdateConsumer(t.Context(), env.Names.CandidatesStream(), jetstream.ConsumerConfig{
		Durable: "echo", FilterSubject: env.Names.AllCandidates(), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsx.Publish(t.Context(), env.JS, env.Names.Candidate("r1"), "q1", &question{Meta: protocol.Meta{ID: "q1", Run: "r1"}, Text: "hi"}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- stage.Run(runCtx, cons, pipeline.Config{Name: "echo"}) }()
	out := fetchOne(t, env, env.Names.ResultsStream())
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if h := out.Headers().Get("traceparent"); h != "" {
		t.Errorf("traceparent %q with telemetry off", h)
	}
}

func fetchOne(t *testing.T, env *natstest.TestEnv, stream string) jetstream.Msg {
	t.Helper()
	cons, err := env.JS.OrderedConsumer(t.Context(), stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(30 * time.Second))
	if err != nil {
		t.Fatalf("no output on %s: %v", stream, err)
	}
	return msg
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}
