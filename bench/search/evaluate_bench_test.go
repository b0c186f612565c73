package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// BenchmarkExampleEvaluation is the time per evaluated candidate of each example through the
// evaluator service (sandbox, python3, the example's evaluator), with the service's default
// concurrency: what bounds the evaluations a `make bench-search` run gets per second.
func BenchmarkExampleEvaluation(b *testing.B) {
	for _, name := range []string{"function_minimization", "circle_packing", "bin_packing"} {
		b.Run(name, func(b *testing.B) {
			p, err := loadProblem(name, filepath.Join(examplesDir, name))
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			s, err := startStack(ctx, b.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)), svcArchive, svcEvaluator)
			if err != nil {
				b.Fatal(err)
			}
			defer s.close()
			config, err := p.configFor(runSpec{evals: 1, seed: 1})
			if err != nil {
				b.Fatal(err)
			}
			run := runToken(name) + "-bench"
			if _, err := seedRun(ctx, s, run, p, config); err != nil {
				b.Fatal(err)
			}
			if err := waitResults(ctx, s, run, 1); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range b.N {
				// A comment makes each program distinct; the evaluator scores it like the seed.
				id := fmt.Sprintf("%s-%d", run, i)
				seed := &protocol.Seed{Meta: protocol.Meta{ID: id, Run: run}, Program: p.program + "\n# " + id + "\n", CreatedAt: time.Now().UTC()}
				if _, err := natsx.Publish(ctx, s.js, s.names.Seed(run), id, seed); err != nil {
					b.Fatal(err)
				}
			}
			if err := waitResults(ctx, s, run, uint64(b.N)+1); err != nil {
				b.Fatal(err)
			}
		})
	}
}
