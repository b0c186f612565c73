package mutate

import "errors"

// ErrNoChange: no operator could change the program, which has no numeric literal, no line
// that can move and no inspiration to cross with inside its evolve blocks.
var ErrNoChange = errors.New("mutate: nothing to change")
