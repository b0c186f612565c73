// Command search measures search quality: the best score that shoal's evolution (planner,
// mutate generator, evaluator, archive, all in this process over embedded NATS) reaches
// after each evaluation, against random search with the same budget, averaged over seeds.
//
//	go run ./bench/search -evals 300 -seeds 5 -plot docs/bench-search.svg
//
// Random search spends the same number of evaluations on independent mutations of the seed
// program (the mutate backend's operator, one seed each), published as candidates into the
// same pipeline, so the same evaluator and sandbox score both methods.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-search:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		problems = flag.String("problems", "function_minimization,circle_packing", "comma-separated examples to measure")
		examples = flag.String("examples", "examples", "directory holding the examples")
		evals    = flag.Int("evals", 300, "evaluations per run (max_iterations)")
		seeds    = flag.Int("seeds", 5, "runs per problem and method, with random_seed 1..seeds")
		plotPath = flag.String("plot", "", "write the plot here: SVG, or PNG when the name ends in .png")
		verbose  = flag.Bool("v", false, "log the services' warnings to stderr")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	cfg := benchConfig{evals: *evals}
	for i := 1; i <= *seeds; i++ {
		cfg.seeds = append(cfg.seeds, int64(i))
	}
	var order []string
	for _, name := range strings.Split(*problems, ",") {
		p, err := loadProblem(name, filepath.Join(*examples, name))
		if err != nil {
			return err
		}
		cfg.problems = append(cfg.problems, p)
		order = append(order, name)
	}
	handler := slog.Handler(slog.NewTextHandler(io.Discard, nil))
	if *verbose {
		handler = slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})
	}
	cfg.log = slog.New(handler)
	work, err := os.MkdirTemp("", "shoal-bench-search-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cfg.workDir = work
	cfg.progress = func(s string) { fmt.Fprintln(os.Stderr, s) }

	start := time.Now()
	out, err := runBench(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Printf("search quality: best combined_score after N evaluations, mean ± sd over %d seeds (%s in all)\n\n",
		len(cfg.seeds), time.Since(start).Round(time.Second))
	printTable(os.Stdout, order, out, checkpoints(cfg.evals))
	if *plotPath != "" {
		f, err := os.Create(*plotPath)
		if err != nil {
			return err
		}
		if err := writePlot(f, strings.HasSuffix(*plotPath, ".png"), order, out, len(cfg.seeds)); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Printf("\nplot written to %s\n", *plotPath)
	}
	return nil
}

// checkpoints are the table's evaluation counts: the seed, then doublings up to the budget.
func checkpoints(evals int) []int {
	points := []int{0}
	for k := 10; k < evals; k *= 2 {
		points = append(points, k)
	}
	return append(points, evals)
}

func printTable(w io.Writer, order []string, out outcome, points []int) {
	fmt.Fprintf(w, "%-22s %6s  %-17s  %-17s  %s\n", "problem", "evals", "evolution", "random", "evolution − random")
	for _, name := range order {
		evo, rnd := summarize(out[name][evolution]), summarize(out[name][random])
		for _, k := range points {
			fmt.Fprintf(w, "%-22s %6d  %.4f ± %.4f    %.4f ± %.4f    %+.4f\n",
				name, k, evo.mean[k], evo.sd[k], rnd.mean[k], rnd.sd[k], evo.mean[k]-rnd.mean[k])
		}
	}
}
