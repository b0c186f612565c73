package population

import (
	"fmt"
	"testing"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// full returns a population of size programs at its population_size limit, the archive's
// steady state, and the results to fold next.
func full(size, next int) (*Population, []*protocol.Result) {
	cfg := runconfig.Default()
	cfg.Database.PopulationSize = size
	rs := synthetic(size+next, cfg.Database.NumIslands)
	p := New("r", cfg)
	i := 0
	for p.Len() < size && i < len(rs) {
		p.Fold(rs[i], uint64(i+1))
		i++
	}
	return p, rs[i:]
}

// BenchmarkFold folds results into a population at its size limit: every fold files a
// program into a grid, updates the elite archive, and evicts one program.
func BenchmarkFold(b *testing.B) {
	for _, size := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("programs=%d", size), func(b *testing.B) {
			p, rs := full(size, 20000)
			seq := uint64(1 << 40)
			b.ResetTimer()
			for i := range b.N {
				r := *rs[i%len(rs)]
				r.Candidate.ID = fmt.Sprint("n", i) // a fresh candidate every time
				seq++
				p.Fold(&r, seq)
			}
		})
	}
}

// BenchmarkSample draws a parent and inspirations from a full population, once per task.
func BenchmarkSample(b *testing.B) {
	for _, size := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("programs=%d", size), func(b *testing.B) {
			p, _ := full(size, 0)
			b.ResetTimer()
			for i := range b.N {
				p.Sample(i, 0, int64(i))
			}
		})
	}
}

// BenchmarkSnapshot encodes a full population, what the archive does every
// checkpoint_interval results.
func BenchmarkSnapshot(b *testing.B) {
	for _, size := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("programs=%d", size), func(b *testing.B) {
			p, _ := full(size, 0)
			b.ResetTimer()
			for range b.N {
				if _, err := p.Snapshot(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
