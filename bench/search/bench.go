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
	// novelty is standin with database.novelty_threshold: candidates too like one their
	// island evaluated are skipped before evaluation.
	novelty method = "novelty"
	// weights and bandit run two models of equal weight, the perturb stand-in ("useful") and
	// the noise stand-in ("noise", wild jumps that rarely help), with llm.model_selection
	// weights or bandit.
	weights method = "weights"
	bandit  method = "bandit"
)

// methods lists every method, in the table's order.
var methods = []method{evolution, standin, random, novelty, weights, bandit}

// parseMethods reads a comma-separated list of methods.
func parseMethods(s string) ([]method, error) {
	var out []method
	for _, name := range strings.Split(s, ",") {
		m := method(strings.TrimSpace(name))
		if !slices.Contains(methods, m) {
			return nil, fmt.Errorf("unknown method %q (have evolution, standin, random, novelty, weights, bandit)", name)
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
	// digits is how many significant digits the stand-in writes; default the stand-in's.
	digits int
	// noveltyThreshold is database.novelty_threshold for the novelty method.
	noveltyThreshold float64
	// account, when set, hears what each run spent its candidates on; it may be called at
	// once from several runs.
	account func(problem string, m method, seed int64, a accounting)
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
	var stops []func()
	services := []service{svcArchive, svcEvaluator}
	if m != random {
		services = append(services, svcPlanner, svcGenerator)
	}
	models := []modelConfig{{name: "mutate", backend: "mutate"}}
	// One stand-in of each kind serves every seed's run: its replies depend on the prompt and
	// the task's seed, not on which run asked.
	serve := func(name, mode string) (modelConfig, error) {
		base, stop, err := startStandin(standinConfig(mode, cfg.step, cfg.digits))
		if err != nil {
			return modelConfig{}, err
		}
		stops = append(stops, stop)
		return modelConfig{name: name, backend: "openai", apiBase: base, concurrency: cfg.concurrency, weight: 1}, nil
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	switch m {
	case standin, novelty:
		one, err := serve("standin", "perturb")
		if err != nil {
			return nil, err
		}
		models = []modelConfig{one}
	case weights, bandit:
		useful, err := serve("useful", "perturb")
		if err != nil {
			return nil, err
		}
		noise, err := serve("noise", "noise")
		if err != nil {
			return nil, err
		}
		models = []modelConfig{useful, noise}
	}
	spec := runSpec{evals: cfg.evals, models: models, db: cfg.db, diagnose: cfg.diagnose, account: cfg.account}
	switch m {
	case novelty:
		spec.noveltyThreshold = cfg.noveltyThreshold
	case bandit:
		spec.selection = "bandit"
	case weights:
		spec.selection = "weights"
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
			spec := spec
			spec.seed = seed
			curves[i], errs[i] = runOne(ctx, s, p, m, spec)
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
	evals  int
	seed   int64
	models []modelConfig
	db     dbOverride
	// selection is llm.model_selection; "" leaves the problem's.
	selection string
	// noveltyThreshold is database.novelty_threshold; 0 leaves the problem's.
	noveltyThreshold float64
	// diagnose, when set, hears how the run's search went.
	diagnose func(problem string, m method, seed int64, d diagnosis)
	// account, when set, hears what the run spent its candidates on.
	account func(problem string, m method, seed int64, a accounting)
}

// runOne spends one run's budget and returns its curve.
func runOne(ctx context.Context, s *stack, p *problem, m method, spec runSpec) (curve, error) {
	evals, seed := spec.evals, spec.seed
	run := fmt.Sprintf("%s-%s-%d", runToken(p.name), m, seed)
	config, err := p.configFor(spec)
	if err != nil {
		return nil, err
	}
	rejected, stopWatch, err := watchSeedRejection(s, run)
	if err != nil {
		return nil, err
	}
	defer stopWatch()
	seedCandidate, err := seedRun(ctx, s, run, p, config)
	if err != nil {
		return nil, err
	}
	switch m {
	case evolution, standin, weights, bandit:
		err = waitPlannerDone(ctx, s, run, 0, rejected)
	case novelty:
		err = spendEvaluations(ctx, s, run, evals, rejected)
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
	if spec.account != nil {
		spec.account(p.name, m, seed, accountFor(results, evals))
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
