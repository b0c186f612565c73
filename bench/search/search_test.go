package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
)

func polynomialFit(t *testing.T) *problem {
	t.Helper()
	p, err := loadProblem("polynomial_fit", filepath.Join("testdata", "polynomial_fit"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func serveTest(t *testing.T, name, mode string, digits int) modelConfig {
	t.Helper()
	base, stop, err := startStandin(standinConfig(mode, 0.1, digits))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return modelConfig{name: name, backend: "openai", apiBase: base, concurrency: 4, weight: 1}
}

// TestBanditMovesTasksToTheUsefulModel runs the real pipeline with two models of equal
// weight, the perturb stand-in and the noise stand-in, under llm.model_selection: bandit. The
// useful model gets most of the evaluations, the noise model keeps the floor's share, and the
// archive's per-model accounting in the run state matches the results in RESULTS.
func TestBanditMovesTasksToTheUsefulModel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := startTestStack(t, svcArchive, svcEvaluator, svcPlanner, svcGenerator)
	p := polynomialFit(t)
	const evals = 300
	var acc accounting
	spec := runSpec{evals: evals, seed: 7, selection: "bandit",
		models:  []modelConfig{serveTest(t, "useful", "perturb", 0), serveTest(t, "noise", "noise", 0)},
		account: func(_ string, _ method, _ int64, a accounting) { acc = a }}
	if _, err := runOne(ctx, s, p, bandit, spec); err != nil {
		t.Fatal(err)
	}
	useful, noise := acc.byModel["useful"], acc.byModel["noise"]
	if useful+noise != evals {
		t.Fatalf("useful %d + noise %d evaluations, want %d", useful, noise, evals)
	}
	// Equal weights would give each about half; the floor (0.1, split by weight) keeps the
	// noise model at 5 % at least, so it is never starved.
	if share := float64(useful) / evals; share < 0.65 {
		t.Errorf("useful model got %.0f%% of the evaluations, want most of them (noise model: %d)", 100*share, noise)
	}
	if noise < 5 {
		t.Errorf("noise model got %d evaluations of %d: starved, want the floor's share", noise, evals)
	}
	st, err := s.runs.State(ctx, "polynomial-fit-bandit-7")
	if err != nil {
		t.Fatal(err)
	}
	results, err := readResults(ctx, s, "polynomial-fit-bandit-7")
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int64{}
	for _, r := range results {
		if !r.Candidate.IsSeed() {
			count[r.Candidate.Model]++
		}
	}
	for _, m := range []string{"useful", "noise"} {
		if got := st.ByModel[m]; got != count[m] {
			t.Errorf("run state counts %d results of %s, RESULTS holds %d", got, m, count[m])
		}
	}
	if st.Models["useful"].Improvements <= st.Models["noise"].Improvements {
		t.Errorf("improvements: useful %d, noise %d; want the useful model ahead", st.Models["useful"].Improvements, st.Models["noise"].Improvements)
	}
}

// TestNoveltyRejectsDuplicatesAndTheRunCompletes runs the perturb stand-in writing one
// significant digit, so that most of its edits repeat a program already evaluated, with
// database.novelty_threshold 1. Duplicates are skipped as rejected results that say why, the
// run state counts them, and the run still spends its whole budget of evaluations.
func TestNoveltyRejectsDuplicatesAndTheRunCompletes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := startTestStack(t, svcArchive, svcEvaluator, svcPlanner, svcGenerator)
	p := polynomialFit(t)
	const evals = 200
	spec := runSpec{evals: evals, seed: 3, noveltyThreshold: 1, models: []modelConfig{serveTest(t, "standin", "perturb", 1)}}
	if _, err := runOne(ctx, s, p, novelty, spec); err != nil {
		t.Fatal(err)
	}
	run := "polynomial-fit-novelty-3"
	results, err := readResults(ctx, s, run)
	if err != nil {
		t.Fatal(err)
	}
	var skipped, evaluated int64
	for _, r := range results {
		c := &r.Candidate
		switch {
		case c.IsSeed():
		case c.Novelty:
			skipped++
			if r.Status != protocol.StatusRejected || !strings.HasPrefix(r.Reason, "novelty: 1.000 similar") {
				t.Errorf("skipped candidate %s: status %s, reason %q; want rejected, novelty: 1.000 similar …", c.ID, r.Status, r.Reason)
			}
		default:
			evaluated++
		}
	}
	if skipped == 0 {
		t.Fatalf("no candidate skipped in %d results, though the stand-in writes one digit", len(results))
	}
	if evaluated < evals {
		t.Errorf("%d evaluations, want the budget of %d", evaluated, evals)
	}
	st, err := s.runs.State(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	if st.NoveltyRejected != skipped || st.Iterations != skipped+evaluated {
		t.Errorf("run state: novelty_rejected %d, iterations %d; want %d and %d", st.NoveltyRejected, st.Iterations, skipped, skipped+evaluated)
	}
}

// TestWaitFailsWhenTheArchiveRejectsTheSeed: a run whose seed the archive refuses (here an
// unknown llm.model_selection) ends the benchmark's wait with the archive's reason at once,
// where it used to wait for a planner state that never comes.
func TestWaitFailsWhenTheArchiveRejectsTheSeed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := startTestStack(t, svcArchive, svcEvaluator, svcPlanner, svcGenerator)
	p := polynomialFit(t)
	spec := runSpec{evals: 5, seed: 1, selection: "ucb", models: []modelConfig{{name: "mutate", backend: "mutate"}}}
	start := time.Now()
	_, err := runOne(ctx, s, p, weights, spec)
	if err == nil || !strings.Contains(err.Error(), "seed rejected") || !strings.Contains(err.Error(), "llm.model_selection") {
		t.Fatalf("runOne = %v, want the archive's rejection naming llm.model_selection", err)
	}
	if errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Minute {
		t.Errorf("the rejection took %s to surface", time.Since(start))
	}
}
