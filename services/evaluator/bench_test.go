package evaluator

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// BenchmarkWarmVsCold scores the same candidate with the same evaluator (testdata/bench,
// which imports heavy modules at the top) on a fresh interpreter per candidate (cold) and
// forked from a warm one (warm). It reports each path's time per candidate, the overhead
// above the evaluate() body as the evaluation itself measured it, and cold/warm as a ratio.
func BenchmarkWarmVsCold(b *testing.B) {
	bundleDir := testdata(b, "bench")
	cfg := runconfig.Default()
	cfg.Evaluator.Timeout = 30 * time.Second
	j := job{cfg: cfg, bundleDir: bundleDir, programExt: ".py", code: "def run():\n    return 0.5\n"}
	measure := func(s *scorer, n int) (perCandidate, overhead time.Duration) {
		var total, body time.Duration
		for range n {
			start := time.Now()
			v, err := s.score(context.Background(), j)
			total += time.Since(start)
			if err != nil || v.Status != protocol.StatusOK {
				b.Fatalf("score: %v, %+v", err, v)
			}
			body += v.evalTime
		}
		return total / time.Duration(n), (total - body) / time.Duration(n)
	}
	cold, warm := newScorerMode(b, 4096, false), newScorerMode(b, 4096, true)
	measure(warm, 1) // starts the warm interpreter, as the first candidate of a run does
	b.ResetTimer()
	coldPer, coldOver := measure(cold, b.N)
	warmPer, warmOver := measure(warm, b.N)
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(coldPer), "cold-ms/candidate")
	b.ReportMetric(ms(warmPer), "warm-ms/candidate")
	b.ReportMetric(ms(coldOver), "cold-overhead-ms")
	b.ReportMetric(ms(warmOver), "warm-overhead-ms")
	b.ReportMetric(float64(coldPer)/float64(warmPer), "cold/warm")
	b.ReportMetric(0, "ns/op")
}
