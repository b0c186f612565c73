// Package examples embeds shoal's example problems, so `shoal up` with no arguments evolves
// one on a bare machine.
package examples

import (
	"embed"
	"fmt"
	"io/fs"
	"strings"
)

//go:embed function_minimization circle_packing bin_packing
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
		return nil, fmt.Errorf("example %q does not exist (have %s)", name, strings.Join(Names(), ", "))
	}
	return sub, nil
}

// Names lists the embedded examples in directory order.
func Names() []string {
	entries, _ := problems.ReadDir(".") // the embedded root always reads
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names
}
