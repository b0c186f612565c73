package evaluator

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
)

// BenchmarkCascade measures what the evaluator adds to each candidate on the real path, as a
// run pays it: an OpenEvolve-layout problem (testdata/openevolve_cascade: a two-stage cascade
// whose stages cost about a millisecond), its bundle fetched from the bundles store and
// checked for every candidate, the run's spec from the runs bucket, and candidates arriving
// back to back (each slot takes the next as soon as its last one is scored), one or two at
// once, on the warm path. It reports, per candidate, the wall time from the spec lookup to
// the verdict (p50, p90), the same less the time the stages themselves took (the
// evaluator's overhead), and candidates per second.
//
//	go test -run '^$' -bench Cascade -benchtime 400x ./services/evaluator
func BenchmarkCascade(b *testing.B) {
	for _, slots := range []int{1, 2} {
		b.Run(fmt.Sprintf("slots=%d", slots), func(b *testing.B) { benchCascade(b, slots) })
	}
}

func benchCascade(b *testing.B, slots int) {
	env := natstest.StartTestEnv(b)
	ctx := context.Background()
	cache, err := os.MkdirTemp("", "shoal-evaluator-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bundle.RemoveCache(cache) })
	const run = "bench"
	data, digest, err := bundle.Pack(testdata(b, "openevolve_cascade"))
	if err != nil {
		b.Fatal(err)
	}
	store, err := env.JS.ObjectStore(ctx, env.Names.BundlesStore())
	if err != nil {
		b.Fatal(err)
	}
	if err := bundle.Put(ctx, store, digest, data); err != nil {
		b.Fatal(err)
	}
	specs, err := runs.Open(ctx, env.JS, env.Names)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := specs.CreateSpec(ctx, &protocol.RunSpec{
		Meta:         protocol.Meta{ID: run, Run: run},
		Config:       "evaluator:\n  timeout: 30\n  cascade_evaluation: true\n  cascade_thresholds: [0.5]\n",
		BundleDigest: digest,
		ProgramName:  "initial_program.py",
		CreatedAt:    time.Now().UTC(),
	}); err != nil {
		b.Fatal(err)
	}
	svc, err := New(Config{Names: env.Names, ID: "bench", Concurrency: slots, CacheDir: cache}, env.Conn, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	w, _, err := svc.start(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer w.scorer.close()
	seed, err := os.ReadFile(testdata(b, "openevolve_cascade/initial_program.py"))
	if err != nil {
		b.Fatal(err)
	}
	one := func(i int) (wall, stages, fetch time.Duration) {
		code := strings.Replace(string(seed), "return 1.0", fmt.Sprintf("return %d.5", i%100), 1)
		start := time.Now()
		spec, err := w.runs.Spec(ctx, run)
		if err != nil {
			b.Fatal(err)
		}
		dir, err := bundle.Fetch(ctx, w.bundles, spec.BundleDigest, w.cacheDir)
		if err != nil {
			b.Fatal(err)
		}
		fetch = time.Since(start)
		v, err := w.scorer.score(ctx, job{cfg: spec.Config, bundleDir: dir, programExt: ".py", code: code})
		if err != nil || v.Status != protocol.StatusOK || v.Stage != 2 {
			b.Fatalf("score: %v, %+v", err, v)
		}
		return time.Since(start), v.evalTime, fetch
	}
	one(0) // the run's first candidate starts the warm interpreter
	walls := make([]time.Duration, b.N)
	overs := make([]time.Duration, b.N)
	fetches := make([]time.Duration, b.N)
	var next sync.Mutex
	n := 0
	b.ResetTimer()
	begin := time.Now()
	var wg sync.WaitGroup
	for range slots {
		wg.Go(func() {
			for {
				next.Lock()
				i := n
				n++
				next.Unlock()
				if i >= b.N {
					return
				}
				wall, stages, fetch := one(i)
				walls[i], overs[i], fetches[i] = wall, wall-stages, fetch
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	pct := func(ds []time.Duration, p int) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[(len(s)-1)*p/100]
	}
	b.ReportMetric(ms(pct(walls, 50)), "p50-ms")
	b.ReportMetric(ms(pct(walls, 90)), "p90-ms")
	b.ReportMetric(ms(pct(overs, 50)), "p50-overhead-ms")
	b.ReportMetric(ms(pct(overs, 90)), "p90-overhead-ms")
	b.ReportMetric(ms(pct(fetches, 50)), "p50-spec+fetch-ms")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "candidates/s")
	b.ReportMetric(0, "ns/op")
}
