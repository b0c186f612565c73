package main

import (
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// accounting is what a run spent its candidates on, up to its budget of evaluations: the
// evaluations each model's candidates got, and the candidates novelty rejection skipped
// before evaluation (evaluations saved).
type accounting struct {
	byModel map[string]int
	// newBest counts, per model, the evaluations that raised the run's best.
	newBest map[string]int
	skipped int
}

// accountFor reads a run's results in RESULTS order up to evals evaluations.
func accountFor(results []protocol.Result, evals int) accounting {
	a := accounting{byModel: map[string]int{}, newBest: map[string]int{}}
	n := 0
	best := 0.0
	for _, r := range results {
		c := &r.Candidate
		if c.IsSeed() {
			if r.Status == protocol.StatusOK {
				best = max(best, r.Score)
			}
			continue
		}
		if n >= evals {
			break
		}
		if c.Novelty {
			a.skipped++
			continue
		}
		n++
		a.byModel[c.Model]++
		if r.Status == protocol.StatusOK && r.Score > best {
			best = r.Score
			a.newBest[c.Model]++
		}
	}
	return a
}

// printAccounting writes, per problem and method, each model's share of the evaluations and
// the candidates skipped by novelty rejection, mean ± sd over seeds.
func printAccounting(w io.Writer, order []string, methods []method, accs map[string]map[method][]accounting) {
	fmt.Fprintf(w, "%-22s %-10s %s\n", "problem", "method", "share of evaluations by model; skipped before evaluation (novelty), per run")
	for _, name := range order {
		for _, m := range methods {
			as := accs[name][m]
			if len(as) == 0 {
				continue
			}
			var models []string
			for _, a := range as {
				for model := range a.byModel {
					if !slices.Contains(models, model) {
						models = append(models, model)
					}
				}
			}
			slices.Sort(models)
			line := ""
			for _, model := range models {
				shares := make([]float64, len(as))
				for i, a := range as {
					total := 0
					for _, v := range a.byModel {
						total += v
					}
					shares[i] = 100 * float64(a.byModel[model]) / float64(max(total, 1))
				}
				mean, sd := meanSD(shares)
				bests := make([]float64, len(as))
				for i, a := range as {
					bests[i] = float64(a.newBest[model])
				}
				nb, _ := meanSD(bests)
				line += fmt.Sprintf("%s %.1f ± %.1f %% (%.1f new bests)  ", model, mean, sd, nb)
			}
			skipped := make([]float64, len(as))
			for i, a := range as {
				skipped[i] = float64(a.skipped)
			}
			mean, sd := meanSD(skipped)
			line += fmt.Sprintf("skipped %.1f ± %.1f", mean, sd)
			fmt.Fprintf(w, "%-22s %-10s %s\n", name, m, line)
		}
	}
}

func meanSD(xs []float64) (float64, float64) {
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	m := sum / float64(len(xs))
	ss := 0.0
	for _, x := range xs {
		ss += (x - m) * (x - m)
	}
	if len(xs) < 2 {
		return m, 0
	}
	return m, math.Sqrt(ss / float64(len(xs)-1))
}
