package generator_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/services/generator"
	"github.com/shoal-run/shoal/services/generator/internal/launch/launchtest"
)

// startReplica runs another generator replica on e's server until the test ends.
func (e *env) startReplica(t *testing.T, cfg generator.Config) {
	t.Helper()
	cfg.Names = e.Names
	svc, err := generator.New(cfg, e.Conn, slog.New(slog.NewTextHandler(launchtest.Log{T: t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replica %s: Run returned %v", cfg.ID, err)
		}
	})
}

// TestLaunchReplicasChooseTheVariantThatFitsAll is the motivating failure (a): a 12.5 GiB Q8
// model with a 7 GiB Q4 variant on 4× 11 GiB cards. With four generator replicas on the host,
// each counts its peers in the generators bucket, so all four take Q4 on one card each
// instead of two taking Q8 pairs and two waiting forever.
func TestLaunchReplicasChooseTheVariantThatFitsAll(t *testing.T) {
	launchtest.NoLeaks(t)
	dir := t.TempDir()
	launchtest.KillGroups(t, dir)
	server := launchtest.Recorded(dir, "python3 "+launchtest.Standin(t)+" --port {port}")
	ps := launchtest.Profiles(t, launchtest.Profile("standin", server, `
    health_path: /health
    startup_timeout: 60
    variants:
      - {name: q8, need_mib: 12800, per_gpu_overhead_mib: 300, group_sizes: [2]}
      - {name: q4, need_mib: 7168, per_gpu_overhead_mib: 300, group_sizes: [1]}
`))
	cfg := launchConfig(launchModel("coder", "standin"))
	e := start(t, generator.Config{ID: "gen-0", GPUs: "4x11GiB", Host: testHost, Concurrency: 1, Profiles: ps}, map[string]string{"r1": cfg})
	for i := 1; i < 4; i++ {
		e.startReplica(t, generator.Config{ID: fmt.Sprintf("gen-%d", i), GPUs: "4x11GiB", Host: testHost, Concurrency: 1, Profiles: ps})
	}
	gens, err := e.JS.KeyValue(e.ctx, e.Names.GeneratorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	launchtest.WaitFor(t, 10*time.Second, "four replicas registered", func() bool {
		lister, err := gens.ListKeys(e.ctx)
		if err != nil {
			return false
		}
		n := 0
		for range lister.Keys() {
			n++
		}
		return n == 4
	})

	live := func() []gpu.Allocation {
		l, err := lease.Read(e.ctx, leasesKV(t, e), testHost)
		if err != nil {
			return nil
		}
		return l.Live(time.Now())
	}
	// Tasks go to whichever replica pulls first; keep them coming until every replica has
	// started its server.
	for i := 0; len(live()) < 4; i++ {
		if i == 40 {
			t.Fatalf("after %d tasks the ledger holds %+v; want four leases", i, live())
		}
		e.publish(t, promptTask("r1", fmt.Sprintf("r1.t%d", i), "coder"))
		time.Sleep(250 * time.Millisecond)
	}
	used := map[string]bool{}
	for _, a := range live() {
		if a.Variant != "q4" || len(a.Shares) != 1 {
			t.Errorf("lease of %s: variant %s on %d cards; want q4 on one card", a.Holder, a.Variant, len(a.Shares))
		}
		for _, s := range a.Shares {
			if used[s.UUID] {
				t.Errorf("card %s leased twice", s.UUID)
			}
			used[s.UUID] = true
		}
	}
}
