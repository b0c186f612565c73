// Package examples embeds shoal's example problems, so `shoal up` with no arguments evolves
// one on a bare machine.
package examples

import (
	"embed"
	"fmt"
	"io/fs"
)

//go:embed function_minimization
var problems embed.FS

// Default is the problem `shoal up` runs when given none.
const Default = "function_minimization"

// Problem returns the files of the named example: initial_program.py, evaluator.py,
// config.yaml.
func Problem(name string) (fs.FS, error) {
	sub, err := fs.Sub(problems, name)
	if err != nil {
		return nil, fmt.Errorf("example %q: %w", name, err)
	}
	if _, err := fs.Stat(sub, "config.yaml"); err != nil {
		return nil, fmt.Errorf("example %q does not exist", name)
	}
	return sub, nil
}
