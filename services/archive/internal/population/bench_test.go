package population

import (
	"fmt"
	"testing"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// BenchmarkFold folds results into a population at its size limit (1000), the archive's
// steady state: every fold ranks and evicts.
func BenchmarkFold(b *testing.B) {
	p := New("r", runconfig.Default())
	for i := range 1000 {
		p.Fold(result(fmt.Sprint(i), i == 0, protocol.StatusOK, float64(i%97)), uint64(i+1))
	}
	rs := make([]*protocol.Result, b.N)
	for i := range rs {
		rs[i] = result(fmt.Sprint("n", i), false, protocol.StatusOK, float64(i%101))
	}
	b.ResetTimer()
	for i, r := range rs {
		p.Fold(r, uint64(1001+i))
	}
}

// BenchmarkSample draws a parent and inspirations from 1000 programs, once per task.
func BenchmarkSample(b *testing.B) {
	p := New("r", runconfig.Default())
	for i := range 1000 {
		p.Fold(result(fmt.Sprint(i), i == 0, protocol.StatusOK, float64(i%97)), uint64(i+1))
	}
	b.ResetTimer()
	for i := range b.N {
		p.Sample(int64(i))
	}
}
