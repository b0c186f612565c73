package main

import (
	"fmt"
	"math"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// curve is one run's best score after k evaluations of generated candidates, k = 0..evals;
// curve[0] is the seed's score. Only results with status ok count, as in the archive.
// Candidates skipped as too like an evaluated program (novelty rejection) were never
// evaluated and are left out, so curves compare at equal evaluations.
type curve []float64

// bestCurve folds a run's results, in RESULTS order, into its curve over evals evaluations.
func bestCurve(results []protocol.Result, evals int) (curve, error) {
	c := make(curve, 0, evals+1)
	seeded := false
	best := math.Inf(-1)
	for _, r := range results {
		ok := r.Status == protocol.StatusOK
		if r.Candidate.IsSeed() {
			if seeded {
				return nil, fmt.Errorf("run %s has two seed results", r.Run)
			}
			seeded = true
			if ok {
				best = max(best, r.Score)
			}
			continue
		}
		if !seeded {
			return nil, fmt.Errorf("run %s: result %s before the seed's", r.Run, r.ID)
		}
		if r.Candidate.Novelty {
			continue // skipped before evaluation (database.novelty_threshold): not an evaluation
		}
		if len(c) == 0 {
			c = append(c, finite(best))
		}
		if len(c) > evals {
			break
		}
		if ok {
			best = max(best, r.Score)
		}
		c = append(c, finite(best))
	}
	if !seeded {
		return nil, fmt.Errorf("no seed result")
	}
	if len(c) == 0 {
		c = append(c, finite(best))
	}
	if got := len(c) - 1; got < evals {
		return nil, fmt.Errorf("%d evaluations, want %d", got, evals)
	}
	return c, nil
}

// finite maps "nothing valid yet" to 0, the score of an invalid program.
func finite(v float64) float64 {
	if math.IsInf(v, -1) {
		return 0
	}
	return v
}

// stats is the mean and sample standard deviation of several runs' curves at each point.
type stats struct {
	mean, sd []float64
}

func summarize(curves []curve) stats {
	n := len(curves[0])
	s := stats{mean: make([]float64, n), sd: make([]float64, n)}
	for k := range n {
		sum := 0.0
		for _, c := range curves {
			sum += c[k]
		}
		m := sum / float64(len(curves))
		ss := 0.0
		for _, c := range curves {
			ss += (c[k] - m) * (c[k] - m)
		}
		s.mean[k] = m
		if len(curves) > 1 {
			s.sd[k] = math.Sqrt(ss / float64(len(curves)-1))
		}
	}
	return s
}
