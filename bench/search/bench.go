package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// method is a way to spend a budget of evaluations.
type method string

const (
	evolution method = "evolution" // the full pipeline: planner, mutate generator, archive
	standin   method = "standin"   // the full pipeline with the openai backend against the perturb stand-in
	random    method = "random"    // independent mutations of the seed, same evaluator
)

// methods lists every method, in the table's order.
var methods = []method{evolution, standin, random}

// parseMethods reads a comma-separated list of methods.
func parseMethods(s string) ([]method, error) {
	var out []method
	for _, name := range strings.Split(s, ",") {
		m := method(strings.TrimSpace(name))
		if !slices.Contains(methods, m) {
			return nil, fmt.Errorf("unknown method %q (have evolution, standin, random)", name)
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

// benchConfig says what to measure.
type benchConfig struct {
	problems []*problem
	seeds    []int64
	evals    int
	// methods are measured in this order; default evolution, random.
	methods []method
	// db overrides the problems' database settings where a field is set.
	db dbOverride
	// concurrency is the standin model's concurrency (tasks a generator keeps in flight);
	// default 4, the mutate model's.
	concurrency int
	// step is the stand-in's relative perturbation; default the stand-in's.
	step float64
	// diagnose, when set, hears how each run's search went; it may be called at once from
	// several runs.
	diagnose func(problem string, m method, seed int64, d diagnosis)
	// workDir holds each stack's JetStream store and evaluator cache; removed by the caller.
	workDir string
	log     *slog.Logger
	// progress, when set, hears a line per finished phase.
	progress func(string)
}

// outcome is every run's curve, by problem and method.
type outcome map[string]map[method][]curve

// runBench measures each problem with each method over every seed. The runs of one problem
// and method share one stack and run at once, so the evaluator's workers stay busy; the two
// methods never share a stack, so the planner never plans the random runs.
func runBench(ctx context.Context, cfg benchConfig) (outcome, error) {
	out := outcome{}
	for _, p := range cfg.problems {
		out[p.name] = map[method][]curve{}
		for _, m := range cfg.methodList() {
			start := time.Now()
			curves, err := runMethod(ctx, cfg, p, m)
			if err != nil {
				return nil, fmt.Errorf("%s, %s: %w", p.name, m, err)
			}
			out[p.name][m] = curves
			if cfg.progress != nil {
				cfg.progress(fmt.Sprintf("%s %s: %d runs × %d evaluations in %s", p.name, m, len(curves), cfg.evals, time.Since(start).Round(time.Second)))
			}
		}
	}
	return out, nil
}

func (cfg benchConfig) methodList() []method {
	if len(cfg.methods) == 0 {
		return []method{evolution, random}
	}
	return cfg.methods
}

func runMethod(ctx context.Context, cfg benchConfig, p *problem, m method) (curves []curve, err error) {
	services := []service{svcArchive, svcEvaluator}
	if m != random {
		services = append(services, svcPlanner, svcGenerator)
	}
	model := modelConfig{backend: "mutate"}
	if m == standin {
		// One stand-in serves every seed's run: its replies depend on the prompt and the
		// task's seed, not on which run asked.
		base, stop, err := startStandin(standinConfig(cfg.step))
		if err != nil {
			return nil, err
		}
		defer stop()
		model = modelConfig{backend: "openai", apiBase: base, concurrency: cfg.concurrency}
	}
	store := filepath.Join(cfg.workDir, p.name+"-"+string(m))
	s, err := startStack(ctx, store, cfg.log, services...)
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := s.close(); cerr != nil && err == nil {
			err = cerr
		}
		_ = os.RemoveAll(store)
	}()

	curves = make([]curve, len(cfg.seeds))
	errs := make([]error, len(cfg.seeds))
	var wg sync.WaitGroup
	for i, seed := range cfg.seeds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			curves[i], errs[i] = runOne(ctx, s, p, m, runSpec{evals: cfg.evals, seed: seed, model: model, db: cfg.db, diagnose: cfg.diagnose})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("seed %d: %w", cfg.seeds[i], err)
		}
	}
	return curves, nil
}

// runSpec is what one run is given.
type runSpec struct {
	evals int
	seed  int64
	model modelConfig
	db    dbOverride
	// diagnose, when set, hears how the run's search went.
	diagnose func(problem string, m method, seed int64, d diagnosis)
}

// runOne spends one run's budget and returns its curve.
func runOne(ctx context.Context, s *stack, p *problem, m method, spec runSpec) (curve, error) {
	evals, seed := spec.evals, spec.seed
	run := fmt.Sprintf("%s-%s-%d", runToken(p.name), m, seed)
	config, err := p.configFor(spec)
	if err != nil {
		return nil, err
	}
	seedCandidate, err := seedRun(ctx, s, run, p, config)
	if err != nil {
		return nil, err
	}
	switch m {
	case evolution, standin:
		err = waitPlannerDone(ctx, s, run)
	case random:
		// The seed's result first: a random candidate is a mutation of a program the run holds.
		if err = waitResults(ctx, s, run, 1); err == nil {
			if err = publishRandom(ctx, s, run, seedCandidate, p, evals, seed); err == nil {
				err = waitResults(ctx, s, run, uint64(evals)+1)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", run, err)
	}
	results, err := readResults(ctx, s, run)
	if err != nil {
		return nil, err
	}
	c, err := bestCurve(results, evals)
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", run, err)
	}
	if spec.diagnose != nil {
		spec.diagnose(p.name, m, seed, diagnose(results, evals))
	}
	return c, nil
}

// runToken shortens a problem's name into run ids: function_minimization → function-minimization.
func runToken(name string) string {
	b := []byte(name)
	for i, c := range b {
		if c == '_' {
			b[i] = '-'
		}
	}
	return string(b)
}
