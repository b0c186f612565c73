package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// method is a way to spend a budget of evaluations.
type method string

const (
	evolution method = "evolution" // the full pipeline: planner, mutate generator, archive
	random    method = "random"    // independent mutations of the seed, same evaluator
)

// benchConfig says what to measure.
type benchConfig struct {
	problems []*problem
	seeds    []int64
	evals    int
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
		for _, m := range []method{evolution, random} {
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

func runMethod(ctx context.Context, cfg benchConfig, p *problem, m method) (curves []curve, err error) {
	services := []service{svcArchive, svcEvaluator}
	if m == evolution {
		services = append(services, svcPlanner, svcGenerator)
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
			curves[i], errs[i] = runOne(ctx, s, p, m, cfg.evals, seed)
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

// runOne spends one run's budget and returns its curve.
func runOne(ctx context.Context, s *stack, p *problem, m method, evals int, seed int64) (curve, error) {
	run := fmt.Sprintf("%s-%s-%d", runToken(p.name), m, seed)
	config, err := p.configFor(evals, seed)
	if err != nil {
		return nil, err
	}
	seedCandidate, err := seedRun(ctx, s, run, p, config)
	if err != nil {
		return nil, err
	}
	switch m {
	case evolution:
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
