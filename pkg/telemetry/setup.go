package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	promexporter "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Config says how a process sets up its telemetry. Traces follow OpenTelemetry's own
// variables, read through Getenv:
//
//	OTEL_SDK_DISABLED=true            everything off
//	OTEL_TRACES_EXPORTER=none         off (the default, also when unset)
//	OTEL_TRACES_EXPORTER=otlp         OTLP over HTTP/protobuf: OTEL_EXPORTER_OTLP_ENDPOINT,
//	                                  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, _HEADERS, _TIMEOUT, …
//	OTEL_TRACES_EXPORTER=console      one JSON document per span on Console (stdout)
//	OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*
//
// Metrics are served for Prometheus on MetricsAddr, off when it is empty.
type Config struct {
	// Version is the build's version, service.version of every span and metric.
	Version string
	// MetricsAddr is where /metrics is served, e.g. ":9464"; empty: no metrics.
	MetricsAddr string
	// Getenv reads the OTEL_* variables; default os.Getenv.
	Getenv func(string) string
	// Console is where OTEL_TRACES_EXPORTER=console writes; default os.Stdout.
	Console io.Writer
	// Log reports exporter errors; default discarded.
	Log *slog.Logger
}

// Telemetry is one process's telemetry: a tracer provider for each service it runs, one meter
// provider behind one Prometheus endpoint, and their shutdown.
type Telemetry struct {
	cfg       Config
	exporters []string // OTEL_TRACES_EXPORTER's values; empty: tracing off
	meters    *sdkmetric.MeterProvider
	srv       *http.Server
	addr      string
	served    chan struct{}

	mu     sync.Mutex
	tracer map[string]*sdktrace.TracerProvider
}

// New reads cfg and the environment and starts what they turn on: the metrics endpoint is
// listening when New returns, so an address in use is an error here. Shutdown stops it all.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	if cfg.Getenv == nil {
		cfg.Getenv = os.Getenv
	}
	if cfg.Console == nil {
		cfg.Console = os.Stdout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	t := &Telemetry{cfg: cfg, tracer: map[string]*sdktrace.TracerProvider{}}
	if strings.EqualFold(cfg.Getenv("OTEL_SDK_DISABLED"), "true") {
		return t, nil
	}
	for _, e := range strings.Split(cfg.Getenv("OTEL_TRACES_EXPORTER"), ",") {
		switch e = strings.ToLower(strings.TrimSpace(e)); e {
		case "", "none":
		case "otlp", "console":
			t.exporters = append(t.exporters, e)
		default:
			return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: want otlp, console or none", e)
		}
	}
	if len(t.exporters) > 0 && slices.Contains(t.exporters, "otlp") {
		p := cfg.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if p == "" {
			p = cfg.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		if p != "" && p != "http/protobuf" {
			return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%q: shoal sends OTLP over http/protobuf only (port 4318)", p)
		}
	}
	if cfg.MetricsAddr != "" {
		if err := t.serveMetrics(ctx); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Tracing reports whether spans are exported.
func (t *Telemetry) Tracing() bool { return len(t.exporters) > 0 }

// MetricsAddr is the address /metrics is served on (the port chosen when MetricsAddr asked
// for port 0), or "" when metrics are off.
func (t *Telemetry) MetricsAddr() string { return t.addr }

// Service returns the providers of the service named name ("planner", …): a tracer provider
// of its own, so that each span names its service (service.name shoal-<name>, or
// OTEL_SERVICE_NAME when own is set and the variable is), and the process's meter provider.
// `shoal up` runs four services in one process and asks for each with own false; a service's
// own process asks with own true.
func (t *Telemetry) Service(ctx context.Context, name string, own bool) (Providers, error) {
	var p Providers
	if t.meters != nil {
		p.Metrics = t.meters
	}
	if !t.Tracing() {
		return p, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tp, ok := t.tracer[name]; ok {
		p.Traces = tp
		return p, nil
	}
	res, err := t.resource(ctx, name, own)
	if err != nil {
		return p, err
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	for _, e := range t.exporters {
		var exp sdktrace.SpanExporter
		switch e {
		case "otlp":
			exp, err = otlptracehttp.New(ctx)
		case "console":
			exp, err = stdouttrace.New(stdouttrace.WithWriter(t.cfg.Console))
		}
		if err != nil {
			return p, fmt.Errorf("trace exporter %s: %w", e, err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	t.tracer[name] = tp
	p.Traces = tp
	return p, nil
}

// resource describes the service: shoal-<name> in namespace shoal, with the variables'
// attributes; when own is set, OTEL_SERVICE_NAME wins over shoal-<name>.
func (t *Telemetry) resource(ctx context.Context, name string, own bool) (*resource.Resource, error) {
	host, _ := os.Hostname()
	base := []attribute.KeyValue{
		ServiceName.String("shoal-" + name), ServiceNamespace.String("shoal"), Service.String(name),
		ServiceInstanceID.String(fmt.Sprintf("%s-%d", host, os.Getpid())),
	}
	if t.cfg.Version != "" {
		base = append(base, ServiceVersion.String(t.cfg.Version))
	}
	env := envResource(t.cfg.Getenv)
	ours := resource.NewSchemaless(base...)
	if own {
		return resource.Merge(ours, env) // the second wins
	}
	return resource.Merge(env, ours)
}

// envResource is OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME read through getenv (the SDK's
// own detector reads the process environment, which tests cannot set per service).
func envResource(getenv func(string) string) *resource.Resource {
	var kvs []attribute.KeyValue
	for _, pair := range strings.Split(getenv("OTEL_RESOURCE_ATTRIBUTES"), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if ok && k != "" {
			kvs = append(kvs, attribute.String(strings.TrimSpace(k), strings.TrimSpace(v)))
		}
	}
	if n := getenv("OTEL_SERVICE_NAME"); n != "" {
		kvs = append(kvs, ServiceName.String(n))
	}
	return resource.NewSchemaless(kvs...)
}

// serveMetrics starts the meter provider and its Prometheus endpoint.
func (t *Telemetry) serveMetrics(ctx context.Context) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := promexporter.New(promexporter.WithRegisterer(reg))
	if err != nil {
		return fmt.Errorf("prometheus exporter: %w", err)
	}
	res := resource.NewSchemaless(ServiceNamespace.String("shoal"), ServiceVersion.String(t.cfg.Version))
	t.meters = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res),
		sdkmetric.WithView(durationView, tokenView))
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", t.cfg.MetricsAddr)
	if err != nil {
		_ = t.meters.Shutdown(ctx)
		return fmt.Errorf("metrics address %s: %w", t.cfg.MetricsAddr, err)
	}
	t.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	t.served = make(chan struct{})
	go func() {
		defer close(t.served)
		if err := t.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.cfg.Log.Error("metrics endpoint stopped", "addr", t.addr, "err", err)
		}
	}()
	return nil
}

// durationView and tokenView give shoal's histograms their buckets: the SDK's defaults are
// for milliseconds.
func durationView(i sdkmetric.Instrument) (sdkmetric.Stream, bool) {
	if i.Kind != sdkmetric.InstrumentKindHistogram || i.Unit != "s" {
		return sdkmetric.Stream{}, false
	}
	return sdkmetric.Stream{Name: i.Name, Description: i.Description, Unit: i.Unit,
		Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: DurationBuckets}}, true
}

func tokenView(i sdkmetric.Instrument) (sdkmetric.Stream, bool) {
	if i.Name != MetricTokenUsage {
		return sdkmetric.Stream{}, false
	}
	return sdkmetric.Stream{Name: i.Name, Description: i.Description, Unit: i.Unit,
		Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: TokenBuckets}}, true
}

// Shutdown flushes every span still batched to its exporter and stops the metrics endpoint,
// within ctx.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	var errs []error
	t.mu.Lock()
	for name, tp := range t.tracer {
		if err := tp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("traces of %s: %w", name, err))
		}
	}
	t.tracer = map[string]*sdktrace.TracerProvider{}
	t.mu.Unlock()
	if t.srv != nil {
		if err := t.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("metrics endpoint: %w", err))
		}
		<-t.served
		t.srv = nil
	}
	if t.meters != nil {
		if err := t.meters.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("metrics: %w", err))
		}
		t.meters = nil
	}
	return errors.Join(errs...)
}
