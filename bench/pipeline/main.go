// Command pipeline is `make bench-pipeline`: how much shoal's pipeline costs per candidate
// beside the model and the evaluator, measured the way a user runs shoal (`shoal up` on an
// OpenEvolve-layout problem with a cascade evaluator, a stand-in model server) and set
// against a bare JetStream pipeline of the same shape in the same run. Every figure is
// repeated; ratios compare figures of one run. See docs/benchmarks.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-run/shoal/deploy/standin"
)

func main() {
	shoal := flag.String("shoal", "bin/shoal", "the shoal binary to measure")
	baseline := flag.String("baseline", "", "another shoal binary (an older build) to measure beside it")
	evals := flag.Int("evals", 600, "evaluations per end-to-end run")
	repeat := flag.Int("repeat", 3, "runs of each figure")
	only := flag.String("only", "a,b,c,t", "scenarios: a (no-op pipeline vs raw JetStream), b (end to end, with the latency budget), c (model server saturation), t (tracing on against off)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, log, *shoal, *baseline, *evals, *repeat, strings.Split(*only, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "bench-pipeline:", err)
		os.Exit(1)
	}
}

func bench(ctx context.Context, log *slog.Logger, shoal, baseline string, evals, repeat int, only []string) error {
	python := os.Getenv("SHOAL_PYTHON")
	if python == "" {
		python = "python3"
	}
	if _, err := exec.LookPath(python); err != nil {
		return err
	}
	for _, s := range only {
		switch s {
		case "a":
			if err := benchNoop(ctx, log, shoal, baseline, evals, repeat); err != nil {
				return err
			}
		case "c":
			if err := benchSaturation(ctx, log, shoal, evals, repeat); err != nil {
				return err
			}
		case "b":
			if err := benchEndToEnd(ctx, log, shoal, baseline, python, evals, repeat); err != nil {
				return err
			}
		case "t":
			if err := benchTracing(ctx, log, shoal, python, evals, repeat); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown scenario %q", s)
		}
	}
	return nil
}

// benchEndToEnd is figures (b) and (d): evaluations per second at 3 and 12 tasks in flight,
// and the latency budget of a candidate.
func benchEndToEnd(ctx context.Context, log *slog.Logger, shoal, baseline, python string, evals, repeat int) error {
	evaluate, err := evaluateTime(ctx, python)
	if err != nil {
		return err
	}
	log.Info("evaluate() of the polyfit cascade outside shoal", "ms", fmt.Sprintf("%.2f", float64(evaluate.Microseconds())/1000))
	binaries := []string{shoal}
	if baseline != "" {
		binaries = append(binaries, baseline)
	}
	fmt.Printf("\n### (b) End to end: `shoal up`, polyfit with a 2-stage cascade (evaluate() %.2f ms), zero-latency stand-in, %d evaluations\n\n",
		float64(evaluate.Microseconds())/1000, evals)
	fmt.Println("| binary | tasks in flight | evaluations/s (each run) | median | wall s (median run) |")
	fmt.Println("|---|---|---|---|---|")
	budgets := map[string][]hops{}
	for _, inflight := range []int{3, 12} {
		// Each repeat runs every binary in turn, so that they share whatever else the
		// machine is doing.
		rates, walls := map[string][]float64{}, map[string][]float64{}
		for i := range repeat {
			for _, bin := range binaries {
				r, err := runUp(ctx, bin, upShape{iterations: evals, concurrency: inflight * 2 / 3, generators: 1}, standin.Config{Slots: 64}, evaluate)
				if err != nil {
					return fmt.Errorf("%s, %d in flight, run %d: %w", bin, inflight, i+1, err)
				}
				log.Info("run", "binary", bin, "in_flight", inflight, "evals_per_s", fmt.Sprintf("%.1f", r.rate), "wall", r.wall.Round(time.Millisecond), "best", r.best)
				log.Info("budget", "binary", bin, "in_flight", inflight, "hops", describe(r.budget))
				rates[bin] = append(rates[bin], r.rate)
				walls[bin] = append(walls[bin], r.wall.Seconds())
				key := fmt.Sprintf("%s|%d", bin, inflight)
				budgets[key] = append(budgets[key], r.budget...)
			}
		}
		for _, bin := range binaries {
			fmt.Printf("| %s | %d | %s | %.1f | %.1f |\n", bin, inflight, joinf(rates[bin], "%.1f"), quantile(rates[bin], 0.5), quantile(walls[bin], 0.5))
		}
	}
	for _, inflight := range []int{3, 12} {
		fmt.Printf("\n### (d) Latency budget of one candidate, %d tasks in flight (ms, all runs pooled)\n\n", inflight)
		head := "| hop |"
		rule := "|---|"
		for _, bin := range binaries {
			head += fmt.Sprintf(" %s p50 | p99 |", bin)
			rule += "---|---|"
		}
		fmt.Println(head)
		fmt.Println(rule)
		for _, f := range hopFields {
			row := "| " + f.name + " |"
			for _, bin := range binaries {
				col := column(budgets[fmt.Sprintf("%s|%d", bin, inflight)], f.get)
				row += fmt.Sprintf(" %.1f | %.1f |", quantile(col, 0.5), quantile(col, 0.99))
			}
			fmt.Println(row)
		}
	}
	return nil
}

func joinf(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, " / ")
}

// benchNoop is figure (a): shoal with a model and an evaluator that cost nothing (the
// zero-latency stand-in, noopEvaluator) against the raw JetStream pipeline of the same shape,
// and what each candidate costs in messages on the bus. With a baseline binary, each repeat
// runs both binaries and the raw pipeline in turn.
func benchNoop(ctx context.Context, log *slog.Logger, shoal, baseline string, evals, repeat int) error {
	binaries := []string{shoal}
	if baseline != "" {
		binaries = append(binaries, baseline)
	}
	// Short runs with the full tap learn the sizes of shoal's bodies for the raw pipeline and
	// count every message on the bus per candidate, at a low and a high number in flight.
	var sizes [3]int
	counts := map[string]map[string]kindCount{} // column → kind → messages per candidate
	var columns []string
	kinds := map[string]bool{}
	for _, inflight := range []int{3, 48} {
		for _, bin := range binaries {
			probe, err := runUp(ctx, bin, upShape{iterations: 300, concurrency: inflight * 2 / 3, noop: true, generators: 1}, standin.Config{Slots: 64}, 0)
			if err != nil {
				return fmt.Errorf("no-op pipeline, probe: %w", err)
			}
			if bin == shoal && inflight == 3 {
				sizes = probe.sizes
			}
			col := fmt.Sprintf("%s, %d in flight", bin, inflight)
			columns = append(columns, col)
			counts[col] = map[string]kindCount{}
			for _, kc := range probe.msgs {
				counts[col][kc.kind] = kc
				kinds[kc.kind] = true
			}
			log.Info("probe", "binary", bin, "in_flight", inflight, "hops", describe(probe.budget))
		}
	}
	log.Info("body sizes", "task", sizes[0], "candidate", sizes[1], "result", sizes[2])
	fmt.Printf("\n### (a) Messages on the bus per candidate, no-op pipeline, 300 evaluations (the tap's own left out)\n\n")
	head, rule := "| message |", "|---|"
	for _, col := range columns {
		head += " " + col + " |"
		rule += "---|"
	}
	fmt.Println(head)
	fmt.Println(rule)
	total := map[string]float64{}
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		row := "| " + k + " |"
		for _, col := range columns {
			kc := counts[col][k]
			row += fmt.Sprintf(" %.2f (%.0f B) |", kc.per, kc.size)
			total[col] += kc.per
		}
		fmt.Println(row)
	}
	row := "| **all** |"
	for _, col := range columns {
		row += fmt.Sprintf(" **%.1f** |", total[col])
	}
	fmt.Println(row)

	fmt.Printf("\n### (a) No-op model and evaluator: shoal against raw JetStream of the same shape, %d evaluations\n\n", evals)
	fmt.Println("| binary | tasks in flight | shoal evaluations/s (each run) | raw JetStream evaluations/s (each run) | shoal / raw (medians) | CPU ms per evaluation, shoal / raw (medians) |")
	fmt.Println("|---|---|---|---|---|---|")
	for _, inflight := range []int{3, 12, 48} {
		mine, raw := map[string][]float64{}, []float64{}
		// CPU milliseconds per evaluation in the steady state: the `shoal up` process (its NATS
		// server included) with the no-op evaluator and the tap in this process, and the raw
		// pipeline (all of it, in this process).
		mineCPU, rawCPU := map[string][]float64{}, []float64{}
		for i := range repeat {
			for _, bin := range binaries {
				r, err := runUp(ctx, bin, upShape{iterations: evals, concurrency: inflight * 2 / 3, noop: true, light: true, generators: 1}, standin.Config{Slots: 64}, 0)
				if err != nil {
					return fmt.Errorf("no-op pipeline, %s, %d in flight, run %d: %w", bin, inflight, i+1, err)
				}
				cpu := r.cpuPerEval
				log.Info("no-op run", "binary", bin, "in_flight", inflight, "evals_per_s", fmt.Sprintf("%.1f", r.rate), "cpu_ms_per_eval", fmt.Sprintf("%.2f", cpu))
				mine[bin] = append(mine[bin], r.rate)
				mineCPU[bin] = append(mineCPU[bin], cpu)
			}
			rr, rawMS, err := rawPipeline(ctx, evals, inflight, sizes)
			if err != nil {
				return fmt.Errorf("raw pipeline, %d in flight, run %d: %w", inflight, i+1, err)
			}
			log.Info("raw run", "in_flight", inflight, "evals_per_s", fmt.Sprintf("%.1f", rr), "cpu_ms_per_eval", fmt.Sprintf("%.2f", rawMS))
			raw = append(raw, rr)
			rawCPU = append(rawCPU, rawMS)
		}
		for _, bin := range binaries {
			fmt.Printf("| %s | %d | %s | %s | %.0f %% | %.2f / %.2f |\n", bin, inflight, joinf(mine[bin], "%.0f"), joinf(raw, "%.0f"),
				100*quantile(mine[bin], 0.5)/quantile(raw, 0.5), quantile(mineCPU[bin], 0.5), quantile(rawCPU, 0.5))
		}
	}
	return nil
}

// benchSaturation is figure (c): how busy shoal keeps a 64-slot model server, with 1, 2 and
// 4 generator replicas, at 200 ms and 2 s a request. Evaluation is free (noopEvaluator) so
// that only the planner, the generators and the archive stand between the server and its
// next request; the server's standalone maximum is every slot busy all the time.
func benchSaturation(ctx context.Context, log *slog.Logger, shoal string, evals, repeat int) error {
	fmt.Printf("\n### (c) Saturation of a 64-slot stand-in model server (busy fraction of its slots, steady state)\n\n")
	fmt.Println("| latency per request | generator replicas | evaluations | busy fraction (each run) | median |")
	fmt.Println("|---|---|---|---|---|")
	for _, latency := range []time.Duration{200 * time.Millisecond, 2 * time.Second} {
		// Enough evaluations for about 20 rounds of the server's 64 slots.
		n := max(evals, 64*20)
		if latency >= time.Second {
			n = 64 * 8
		}
		for _, gens := range []int{1, 2, 4} {
			var busy []float64
			for i := range repeat {
				r, err := runUp(ctx, shoal, upShape{iterations: n, concurrency: 64, noop: true, light: true, generators: gens},
					standin.Config{Slots: 64, Latency: latency}, 0)
				if err != nil {
					return fmt.Errorf("saturation, %v, %d generators, run %d: %w", latency, gens, i+1, err)
				}
				log.Info("saturation run", "latency", latency, "generators", gens, "busy", fmt.Sprintf("%.3f", r.busy.BusyFraction), "rate", fmt.Sprintf("%.1f", r.rate), "queue_ms", r.busy.MeanQueueMS)
				busy = append(busy, 100*r.busy.BusyFraction)
			}
			fmt.Printf("| %v | %d | %d | %s | %.1f %% |\n", latency, gens, n, joinf(busy, "%.1f %%"), quantile(busy, 0.5))
		}
	}
	return nil
}
