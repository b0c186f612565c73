package telemetry_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/shoal-run/shoal/pkg/telemetry"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// TestOffByDefault: with no variable set and no metrics address, a service's providers are
// off: its spans record nothing and carry no trace context into headers.
func TestOffByDefault(t *testing.T) {
	tel, err := telemetry.New(t.Context(), telemetry.Config{Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	p, err := tel.Service(t.Context(), "planner", true)
	if err != nil {
		t.Fatal(err)
	}
	if p.Traces != nil || p.Metrics != nil || tel.Tracing() || tel.MetricsAddr() != "" {
		t.Fatalf("providers %+v tracing %v metrics %q; want all off", p, tel.Tracing(), tel.MetricsAddr())
	}
	ctx, span := p.Tracer().Start(t.Context(), "x")
	defer span.End()
	if span.IsRecording() {
		t.Error("a span records with tracing off")
	}
	if h := telemetry.Inject(ctx, nil); h != nil {
		t.Errorf("header %v written with tracing off", h)
	}
}

// TestConsoleExporter: OTEL_TRACES_EXPORTER=console writes each span, named for its service,
// to the console once flushed by Shutdown.
func TestConsoleExporter(t *testing.T) {
	var out bytes.Buffer
	tel, err := telemetry.New(t.Context(), telemetry.Config{Getenv: env(map[string]string{"OTEL_TRACES_EXPORTER": "console"}), Console: &out})
	if err != nil {
		t.Fatal(err)
	}
	p, err := tel.Service(t.Context(), "archive", false)
	if err != nil {
		t.Fatal(err)
	}
	_, span := p.Tracer().Start(t.Context(), "fold")
	span.End()
	if err := tel.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, `"Name":"fold"`) || !strings.Contains(s, "shoal-archive") {
		t.Errorf("console output lacks the span or its service:\n%s", s)
	}
}

// TestServiceNames: a service's own process takes OTEL_SERVICE_NAME; in shoal up each of the
// four keeps its own name.
func TestServiceNames(t *testing.T) {
	for _, own := range []bool{true, false} {
		var out bytes.Buffer
		tel, err := telemetry.New(t.Context(), telemetry.Config{Console: &out, Getenv: env(map[string]string{
			"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "gen-east", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test"})})
		if err != nil {
			t.Fatal(err)
		}
		p, err := tel.Service(t.Context(), "generator", own)
		if err != nil {
			t.Fatal(err)
		}
		_, span := p.Tracer().Start(t.Context(), "x")
		span.End()
		if err := tel.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		want := "shoal-generator"
		if own {
			want = "gen-east"
		}
		if s := out.String(); !strings.Contains(s, `"Value":"`+want+`"`) || !strings.Contains(s, "deployment.environment") {
			t.Errorf("own %v: service name %q or the resource attribute missing:\n%s", own, want, s)
		}
	}
}

func TestBadSettings(t *testing.T) {
	for _, vars := range []map[string]string{
		{"OTEL_TRACES_EXPORTER": "zipkin"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
	} {
		if tel, err := telemetry.New(t.Context(), telemetry.Config{Getenv: env(vars)}); err == nil {
			_ = tel.Shutdown(context.Background())
			t.Errorf("%v: no error", vars)
		}
	}
	if tel, err := telemetry.New(t.Context(), telemetry.Config{Getenv: env(map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"})}); err != nil || tel.Tracing() {
		t.Errorf("OTEL_SDK_DISABLED=true: err %v tracing %v; want off", err, tel != nil && tel.Tracing())
	}
	if _, err := telemetry.New(t.Context(), telemetry.Config{Getenv: env(nil), MetricsAddr: "256.0.0.1:1"}); err == nil {
		t.Error("a metrics address that cannot be listened on: no error")
	}
}

// TestMetricsEndpoint: --metrics-addr serves the meter's instruments for Prometheus.
func TestMetricsEndpoint(t *testing.T) {
	tel, err := telemetry.New(t.Context(), telemetry.Config{Getenv: env(nil), MetricsAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	p, err := tel.Service(t.Context(), "archive", true)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Meter().Int64Counter(telemetry.MetricCandidates)
	if err != nil {
		t.Fatal(err)
	}
	c.Add(t.Context(), 3, metric.WithAttributes(telemetry.Status.String("ok")))
	resp, err := http.Get("http://" + tel.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !strings.Contains(string(body), `shoal_candidates_total{`) || !strings.Contains(string(body), `shoal_status="ok"`) {
		t.Errorf("/metrics lacks shoal_candidates_total with its status:\n%s", body)
	}
}

// TestPropagation: a span context injected into a NATS header comes out the other side as
// the remote parent of the next span.
func TestPropagation(t *testing.T) {
	var out bytes.Buffer
	tel, err := telemetry.New(t.Context(), telemetry.Config{Getenv: env(map[string]string{"OTEL_TRACES_EXPORTER": "console"}), Console: &out})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tel.Shutdown(context.Background()) }()
	p, _ := tel.Service(t.Context(), "planner", true)
	ctx, span := p.Tracer().Start(t.Context(), "send")
	defer span.End()
	h := telemetry.Inject(ctx, nats.Header{"Nats-Msg-Id": []string{"x"}})
	if h.Get("traceparent") == "" || h.Get("Nats-Msg-Id") != "x" {
		t.Fatalf("header %v: want traceparent beside the others", h)
	}
	got := trace.SpanContextFromContext(telemetry.Extract(context.Background(), h))
	if !got.IsRemote() || got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("extracted %v, want the remote %v", got, span.SpanContext())
	}
}
