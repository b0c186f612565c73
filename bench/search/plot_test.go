package main

import "testing"

// TestPlotIndicesKeepEveryStep: a long curve is thinned for the plot, but each step of the
// best-so-far mean keeps its place (the level before it and the new level), and the last
// evaluation is drawn.
func TestPlotIndicesKeepEveryStep(t *testing.T) {
	const n = 10_000
	mean, sd := make([]float64, n), make([]float64, n)
	steps := []int{17, 4321, 9998}
	level := 0.0
	for k := range n {
		for _, s := range steps {
			if k == s {
				level++
			}
		}
		mean[k] = level
	}
	ks := plotIndices(mean, sd)
	if len(ks) > 2*maxPlotPoints {
		t.Errorf("%d points drawn of %d, want at most %d", len(ks), n, 2*maxPlotPoints)
	}
	drawn := map[int]bool{}
	for i, k := range ks {
		if i > 0 && k <= ks[i-1] {
			t.Fatalf("indices not increasing at %d: %d after %d", i, k, ks[i-1])
		}
		drawn[k] = true
	}
	for _, s := range steps {
		if !drawn[s] || !drawn[s-1] {
			t.Errorf("step at %d not drawn (before: %v, at: %v)", s, drawn[s-1], drawn[s])
		}
	}
	if !drawn[0] || !drawn[n-1] {
		t.Errorf("first or last evaluation not drawn")
	}
	if short := plotIndices(mean[:50], sd[:50]); len(short) != 50 {
		t.Errorf("a curve of 50 drew %d points, want all", len(short))
	}
}
