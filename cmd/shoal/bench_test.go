package main

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkEndToEndMutate measures the whole pipeline — planner, generator (mutate), evaluator
// (a python3 process per candidate), archive — on one embedded server, reporting iterations
// per second over 100-iteration runs of function_minimization.
func BenchmarkEndToEndMutate(b *testing.B) {
	s := startStack(b)
	dir := exampleDir(b)
	var iterations int64
	start := time.Now()
	for i := range b.N {
		run := fmt.Sprintf("bench-%d", i)
		s.seed(run, dir, fmt.Sprintf(mutateConfig, 100))
		iterations += s.waitDone(run, 5*time.Minute).Iterations
	}
	b.ReportMetric(float64(iterations)/time.Since(start).Seconds(), "iterations/s")
}
