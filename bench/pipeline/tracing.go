package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/shoal-run/shoal/deploy/standin"
)

// benchTracing is figure (t): evaluations per second with every span exported (OTLP over
// HTTP to a collector that reads and discards them) against tracing off, the default. Each
// repeat runs off then on, so both share whatever else the machine is doing; the ratio
// compares their medians. Two shapes: the no-op pipeline of (a), where the pipeline's own
// cost is all there is and tracing weighs the most, and the whole pipeline of (b) with the
// real evaluator.
func benchTracing(ctx context.Context, log *slog.Logger, shoal, python string, evals, repeat int) error {
	sink, err := startOTLPSink()
	if err != nil {
		return err
	}
	defer sink.close()
	evaluate, err := evaluateTime(ctx, python)
	if err != nil {
		return err
	}
	on := []string{"OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_ENDPOINT=" + sink.url}
	fmt.Printf("\n### (t) Tracing on (OTLP/HTTP to a discarding collector) against off, %d evaluations, 12 tasks in flight\n\n", evals)
	fmt.Println("| pipeline | off: evaluations/s (each run) | on: evaluations/s (each run) | on / off (medians) | on / off (median of each pair) | `shoal up` CPU ms per evaluation, off / on (medians) | OTLP exports received (on, all runs) |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, shape := range []struct {
		name string
		up   upShape
	}{
		{"no-op model and evaluator (a)", upShape{iterations: evals, concurrency: 8, noop: true, light: true, generators: 1}},
		{"end to end, polyfit cascade (b)", upShape{iterations: evals, concurrency: 8, light: true, generators: 1}},
	} {
		var off, traced, cpuOff, cpuOn []float64
		before := sink.requests.Load()
		for i := range repeat {
			for _, tracing := range []bool{false, true} {
				up := shape.up
				if tracing {
					up.env = on
				}
				r, err := runUp(ctx, shoal, up, standin.Config{Slots: 64}, evaluate)
				if err != nil {
					return fmt.Errorf("%s, tracing %v, run %d: %w", shape.name, tracing, i+1, err)
				}
				log.Info("tracing run", "pipeline", shape.name, "tracing", tracing, "evals_per_s", fmt.Sprintf("%.1f", r.rate), "wall", r.wall.Round(time.Millisecond))
				cpu := float64(r.cpu.Microseconds()) / 1000 / float64(up.iterations)
				if tracing {
					traced, cpuOn = append(traced, r.rate), append(cpuOn, cpu)
				} else {
					off, cpuOff = append(off, r.rate), append(cpuOff, cpu)
				}
			}
		}
		// A pair ran back to back, so it shares the machine's load of the moment better than
		// the medians of all runs do.
		pairs := make([]float64, len(off))
		for i := range off {
			pairs[i] = traced[i] / off[i]
		}
		fmt.Printf("| %s | %s | %s | %.1f %% | %.1f %% | %.2f / %.2f (+%.1f %%) | %d requests, %d KiB |\n", shape.name, joinf(off, "%.0f"), joinf(traced, "%.0f"),
			100*quantile(traced, 0.5)/quantile(off, 0.5), 100*quantile(pairs, 0.5),
			quantile(cpuOff, 0.5), quantile(cpuOn, 0.5), 100*(quantile(cpuOn, 0.5)/quantile(cpuOff, 0.5)-1),
			sink.requests.Load()-before, sink.bytes.Swap(0)>>10)
	}
	return nil
}

// otlpSink is an OTLP/HTTP trace collector that reads every export and keeps nothing but a
// count: the exporter's whole cost is paid (encoding, compression, the request), none of a
// real collector's.
type otlpSink struct {
	url      string
	srv      *http.Server
	requests atomic.Int64
	bytes    atomic.Int64
}

func startOTLPSink() (*otlpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &otlpSink{url: "http://" + ln.Addr().String()}
	s.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.requests.Add(1)
		s.bytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse: all accepted
	})}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *otlpSink) close() { _ = s.srv.Close() }
