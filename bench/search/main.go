// Command search measures search quality: the best score that shoal's evolution (planner,
// generator, evaluator, archive, all in this process over embedded NATS) reaches after each
// evaluation, against random search with the same budget, averaged over seeds.
//
//	go run ./bench/search -evals 300 -seeds 5 -plot docs/bench-search.svg
//	go run ./bench/search -problems bench/search/testdata/polynomial_fit -methods evolution,standin \
//	    -evals 3000 -seeds 3 -checkpoints 1000,3000 -diagnose
//	go run ./bench/search -problems bench/search/testdata/polynomial_fit -methods weights,bandit ...
//	go run ./bench/search -problems bench/search/testdata/polynomial_fit -methods standin,novelty -standin-digits 2 ...
//
// Methods: evolution is the pipeline with the mutate backend; standin is the pipeline with
// the openai backend against the perturb stand-in model (package deploy/standin, served in
// this process), which answers every prompt with a SEARCH/REPLACE edit moving one numeric
// literal of the current program by a Gaussian step, as a model tuning constants would.
// Novelty is standin with database.novelty_threshold; weights and bandit run two models of
// equal weight, the perturb stand-in and the noise stand-in (a literal thrown far off), with
// llm.model_selection weights or bandit, and report each model's share of the evaluations.
// Random search spends the same number of evaluations on independent mutations of the seed
// program (the mutate backend's operator, one seed each), published as candidates into the
// same pipeline, so the same evaluator and sandbox score every method.
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
	"slices"
	"strconv"
	"strings"
	"sync"
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
		problems    = flag.String("problems", "function_minimization,circle_packing", "comma-separated examples to measure; a name with a / is a directory")
		examples    = flag.String("examples", "examples", "directory holding the examples")
		methodsFlag = flag.String("methods", "evolution,random", "comma-separated methods: evolution (mutate backend), standin (openai backend, perturb stand-in), random, "+
			"novelty (standin with database.novelty_threshold), weights and bandit (a useful and a noise stand-in of equal weight, llm.model_selection weights or bandit)")
		evals       = flag.Int("evals", 300, "evaluations per run (max_iterations)")
		seeds       = flag.Int("seeds", 5, "runs per problem and method, with random_seed 1..seeds")
		points      = flag.String("checkpoints", "", "comma-separated evaluation counts for the table (default: doublings up to -evals)")
		islands     = flag.Int("islands", 0, "database.num_islands for every run (0: the problem's)")
		population  = flag.Int("population", 0, "database.population_size for every run (0: the problem's)")
		migration   = flag.Int("migration-interval", 0, "database.migration_interval for every run (0: the problem's)")
		concurrency = flag.Int("concurrency", 4, "the stand-in model's concurrency (the planner keeps 1.5 times as many tasks in flight); mutate keeps 4")
		step        = flag.Float64("step", 0.1, "the stand-in's relative perturbation (standard deviation)")
		digits      = flag.Int("standin-digits", 0, "significant digits the stand-in writes a moved literal with (0: its 6); fewer make duplicate edits common")
		noveltyThr  = flag.Float64("novelty-threshold", 1, "database.novelty_threshold of the novelty method (1: skip exact duplicates)")
		diag        = flag.Bool("diagnose", false, "print how each method's search spent its evaluations")
		plotPath    = flag.String("plot", "", "write the plot here: SVG, or PNG when the name ends in .png")
		verbose     = flag.Bool("v", false, "log the services' warnings to stderr")
	)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	ms, err := parseMethods(*methodsFlag)
	if err != nil {
		return err
	}
	table := checkpoints(*evals)
	if *points != "" {
		if table, err = parseCheckpoints(*points, *evals); err != nil {
			return err
		}
	}
	cfg := benchConfig{evals: *evals, methods: ms, concurrency: *concurrency, step: *step, digits: *digits, noveltyThreshold: *noveltyThr,
		db: dbOverride{islands: *islands, population: *population, migrationInterval: *migration}}
	var mu sync.Mutex
	diags := map[string]map[method][]diagnosis{}
	if *diag {
		cfg.diagnose = func(problem string, m method, _ int64, d diagnosis) {
			mu.Lock()
			defer mu.Unlock()
			if diags[problem] == nil {
				diags[problem] = map[method][]diagnosis{}
			}
			diags[problem][m] = append(diags[problem][m], d)
		}
	}
	accs := map[string]map[method][]accounting{}
	cfg.account = func(problem string, m method, _ int64, a accounting) {
		mu.Lock()
		defer mu.Unlock()
		if accs[problem] == nil {
			accs[problem] = map[method][]accounting{}
		}
		accs[problem][m] = append(accs[problem][m], a)
	}
	for i := 1; i <= *seeds; i++ {
		cfg.seeds = append(cfg.seeds, int64(i))
	}
	var order []string
	for _, name := range strings.Split(*problems, ",") {
		dir := filepath.Join(*examples, name)
		if strings.Contains(name, "/") {
			dir, name = name, filepath.Base(name)
		}
		p, err := loadProblem(name, dir)
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
	printTable(os.Stdout, order, cfg.methodList(), out, table)
	if slices.ContainsFunc(cfg.methodList(), func(m method) bool { return m == novelty || m == weights || m == bandit }) {
		fmt.Println()
		printAccounting(os.Stdout, order, cfg.methodList(), accs)
	}
	if *diag {
		fmt.Println()
		printDiagnoses(os.Stdout, order, cfg.methodList(), diags)
	}
	if *plotPath != "" {
		f, err := os.Create(*plotPath)
		if err != nil {
			return err
		}
		if err := writePlot(f, strings.HasSuffix(*plotPath, ".png"), order, cfg.methodList(), out, len(cfg.seeds)); err != nil {
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

// parseCheckpoints reads the table's evaluation counts up to evals; 0 (the seed) comes first.
func parseCheckpoints(s string, evals int) ([]int, error) {
	points := []int{0}
	for _, f := range strings.Split(s, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k <= 0 {
			return nil, fmt.Errorf("checkpoint %q: want a count of evaluations", f)
		}
		if k <= evals && k > points[len(points)-1] { // points past the budget are left out
			points = append(points, k)
		}
	}
	return points, nil
}

// printTable writes each method's mean ± sd best score at each checkpoint, and, when random
// search is among the methods, each other method's lead over it.
func printTable(w io.Writer, order []string, methods []method, out outcome, points []int) {
	fmt.Fprintf(w, "%-22s %6s", "problem", "evals")
	for _, m := range methods {
		fmt.Fprintf(w, "  %-17s", m)
	}
	hasRandom := slices.Contains(methods, random) && len(methods) > 1
	if hasRandom {
		for _, m := range methods {
			if m != random {
				fmt.Fprintf(w, "  %-17s", string(m)+" − random")
			}
		}
	}
	fmt.Fprintln(w)
	for _, name := range order {
		sums := map[method]stats{}
		for _, m := range methods {
			sums[m] = summarize(out[name][m])
		}
		for _, k := range points {
			fmt.Fprintf(w, "%-22s %6d", name, k)
			for _, m := range methods {
				fmt.Fprintf(w, "  %.4f ± %.4f   ", sums[m].mean[k], sums[m].sd[k])
			}
			if hasRandom {
				for _, m := range methods {
					if m != random {
						fmt.Fprintf(w, "  %+.4f           ", sums[m].mean[k]-sums[random].mean[k])
					}
				}
			}
			fmt.Fprintln(w)
		}
	}
}
