package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/shoal-run/shoal/pkg/telemetry"
)

// TestTraceFollowsEachCandidate: each candidate of a run is one trace across the four
// services, as OTLP would export it: the planner's task publish is its root, the generator's
// model call and the reply's application, the evaluator's sandbox run and the archive's fold
// are spans of it, each parented on the span that caused it, through the traceparent that
// rode in the messages' headers.
func TestTraceFollowsEachCandidate(t *testing.T) {
	var requests atomic.Int64
	srv := chatServer(t, &requests)
	spans := tracetest.NewInMemoryExporter()
	var providers []*sdktrace.TracerProvider
	t.Cleanup(func() {
		for _, tp := range providers {
			_ = tp.Shutdown(context.Background())
		}
	})
	s := startStackWith(t, upOptions{telemetry: func(name string) (telemetry.Providers, error) {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans),
			sdktrace.WithResource(resource.NewSchemaless(telemetry.ServiceName.String("shoal-"+name))))
		providers = append(providers, tp)
		return telemetry.Providers{Traces: tp}, nil
	}})
	s.seed("traced", exampleDir(t), fmt.Sprintf(`
max_iterations: 4
llm:
  api_base: %s/v1
  api_key: ${SHOAL_E2E_API_KEY}
  models:
    - name: stand-in
      concurrency: 1
evaluator:
  cascade_evaluation: false
`, srv.URL))
	s.waitDone("traced", 2*time.Minute)
	for _, name := range allServices {
		s.stop(name)
	}

	all := spans.GetSpans()
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, sp := range all {
		byID[sp.SpanContext.SpanID()] = sp
	}
	service := func(sp tracetest.SpanStub) string {
		v, _ := sp.Resource.Set().Value(telemetry.ServiceName)
		return strings.TrimPrefix(v.AsString(), "shoal-")
	}
	folds := map[string]tracetest.SpanStub{}
	for _, sp := range all {
		if sp.Name == "fold" {
			folds[attr(sp, telemetry.Candidate)] = sp
		}
	}
	checked := 0
	for _, r := range s.results("traced") {
		if r.Candidate.IsSeed() {
			continue
		}
		fold, ok := folds[r.Candidate.ID]
		if !ok {
			t.Errorf("candidate %s has no fold span", r.Candidate.ID)
			continue
		}
		// Walk from the fold up to the root: every parent is a span of the same trace, and
		// the services come in pipeline order.
		var path []string
		var services []string
		sp := fold
		for {
			if sp.SpanContext.TraceID() != fold.SpanContext.TraceID() {
				t.Errorf("candidate %s: span %q is in trace %s, its fold in %s", r.Candidate.ID, sp.Name, sp.SpanContext.TraceID(), fold.SpanContext.TraceID())
			}
			path = append([]string{sp.Name}, path...)
			if svc := service(sp); len(services) == 0 || services[0] != svc {
				services = append([]string{svc}, services...)
			}
			if !sp.Parent.IsValid() {
				break
			}
			parent, ok := byID[sp.Parent.SpanID()]
			if !ok {
				t.Fatalf("candidate %s: span %q has parent %s, which no service recorded (path so far %v)", r.Candidate.ID, sp.Name, sp.Parent.SpanID(), path)
			}
			sp = parent
		}
		wantPath := []string{"plan task", "send shoal.task", "process " + s.env.Names.TasksStream(), "send shoal.candidate",
			"process " + s.env.Names.CandidatesStream(), "send shoal.result", "fold"}
		if len(path) > 1 && path[1] != "send shoal.task" {
			// A batch of tasks is published at once, each with its own root's traceparent and
			// no publish span of its own; a task published alone has one.
			wantPath = slices.Delete(wantPath, 1, 2)
		}
		if strings.Join(path, " > ") != strings.Join(wantPath, " > ") {
			t.Errorf("candidate %s: path from the root %v, want %v", r.Candidate.ID, path, wantPath)
		}
		if strings.Join(services, ",") != "planner,generator,evaluator,archive" {
			t.Errorf("candidate %s: services from the root %v, want planner, generator, evaluator, archive", r.Candidate.ID, services)
		}
		if got := attr(fold, telemetry.Status); got != string(r.Status) {
			t.Errorf("candidate %s: fold span status %q, result %q", r.Candidate.ID, got, r.Status)
		}
		checked++
	}
	if checked < 4 {
		t.Fatalf("checked %d candidates' traces, want 4", checked)
	}

	// The work inside the stages: the model call (gen_ai.*) and the reply's application
	// under the generator's span, the sandbox run under the evaluator's.
	children := map[string]int{}
	for _, sp := range all {
		parent, ok := byID[sp.Parent.SpanID()]
		if !ok {
			continue
		}
		children[parent.Name+" > "+sp.Name]++
		switch sp.Name {
		case "chat stand-in":
			if attr(sp, telemetry.GenAIRequestModel) != "stand-in" || attr(sp, telemetry.GenAIUsageInput) != "100" || attr(sp, telemetry.GenAIUsageOutput) != "20" || attr(sp, telemetry.Retries) != "0" {
				t.Errorf("model call span attributes %v; want model stand-in, 100 tokens in, 20 out, 0 retries", sp.Attributes)
			}
		case "sandbox run":
			if attr(sp, "shoal.sandbox.exit_code") == "" || attr(sp, telemetry.Status) == "" {
				t.Errorf("sandbox span attributes %v; want its exit code and status", sp.Attributes)
			}
		}
	}
	for _, edge := range []string{
		"process " + s.env.Names.TasksStream() + " > chat stand-in",
		"chat stand-in > apply diff",
		"process " + s.env.Names.CandidatesStream() + " > sandbox run",
	} {
		if children[edge] < 4 {
			t.Errorf("%d spans %q, want one per candidate (4); have %v", children[edge], edge, children)
		}
	}
}

func attr(sp tracetest.SpanStub, key attribute.Key) string {
	for _, kv := range sp.Attributes {
		if kv.Key == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// TestMetricsEndpointDuringRun: with --metrics-addr, /metrics shows a run's candidates being
// counted as they are folded, by status, and its evaluations, queues and best score.
func TestMetricsEndpointDuringRun(t *testing.T) {
	tel, err := telemetry.New(t.Context(), telemetry.Config{MetricsAddr: "127.0.0.1:0", Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	s := startStackWith(t, upOptions{telemetry: func(name string) (telemetry.Providers, error) {
		return tel.Service(context.Background(), name, false)
	}})
	url := "http://" + tel.MetricsAddr() + "/metrics"
	const iterations = 40
	s.seed("scraped", exampleDir(t), fmt.Sprintf(mutateConfig, iterations))

	// Scrape while the run goes on: the count of folded candidates moves.
	seen := map[float64]bool{}
	var last string
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		last = scrape(t, url)
		n := sum(last, "shoal_candidates_total{", `shoal_run="scraped"`)
		seen[n] = true
		if n == iterations+1 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := s.waitDone("scraped", time.Minute)
	if testing.Verbose() {
		t.Logf("last scrape:\n%s", last)
	}
	if n := sum(last, "shoal_candidates_total{", `shoal_run="scraped"`); n != iterations+1 {
		t.Fatalf("shoal_candidates_total for the run reached %v, want %d (seed + iterations):\n%s", n, iterations+1, last)
	}
	var during int
	for n := range seen {
		if n > 0 && n < iterations+1 {
			during++
		}
	}
	if during == 0 {
		t.Errorf("no scrape saw the count between 0 and %d while the run went on (saw %v)", iterations+1, seen)
	}
	if n := sum(last, "shoal_evaluation_duration_seconds_count{", ""); n < iterations {
		t.Errorf("shoal_evaluation_duration_seconds_count %v, want ≥ %d", n, iterations)
	}
	for _, series := range []string{
		`shoal_run_best_score{`,
		`shoal_queue_depth{`,
		`shoal_consumer_lag{`,
		`messaging_process_duration_seconds_count{`,
		`gen_ai_client_operation_duration_seconds_count{`,
	} {
		if !strings.Contains(last, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if best := sum(last, "shoal_run_best_score{", `shoal_run="scraped"`); best != st.BestScore {
		t.Errorf("shoal_run_best_score %v, run state's best %v", best, st.BestScore)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(body)
}

// sum adds the values of the series that start with prefix and contain label.
func sum(text, prefix, label string) float64 {
	var total float64
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) || !strings.Contains(line, label) {
			continue
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
			total += v
		}
	}
	return total
}
