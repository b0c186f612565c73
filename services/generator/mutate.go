package generator

import (
	"github.com/shoal-run/shoal/services/generator/internal/mutate"
)

// ErrNoChange is returned by Mutate when no operator could change the program.
var ErrNoChange = mutate.ErrNoChange

// Mutate is the mutate backend's operator on its own: one to three changes (mostly numeric
// perturbations) to the EVOLVE-BLOCK regions of parent, every random choice drawn from seed,
// so equal inputs give equal mutants. It returns the mutant and a summary of what changed.
// It exists for baselines that need mutants without a run (random search in bench/search);
// a run's generator applies the same operator to the parent and inspirations of each task.
func Mutate(parent, language string, seed int64) (code, summary string, err error) {
	return mutate.Mutate(mutate.Input{Parent: parent, Language: language, Seed: seed})
}
