package lease_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/gpu/placement"
)

// stressOps is how many operations (claims, renewals, readies, releases, crashes) the
// claimers of the concurrency test perform in all; each is followed by a full check of the
// ledger.
const stressOps = 10000

// stressBudget bounds the test's time instead: a slow or loaded machine (the race detector on
// two busy cores runs ~40 operations a second) stops starting operations after it, having
// done fewer, so the package stays well inside go test's timeout. stressMinOps is the least
// a run must have done to count as a stress test at all.
const (
	stressBudget = 75 * time.Second
	stressMinOps = 500
)

const stressClaimers = 32

// stressModels mix groups of 1, 2 and 4 cards with shares of one card, and each but the last
// has a smaller variant to fall back to.
var stressModels = []struct {
	name     string
	variants []gpu.Variant
}{
	{"big", []gpu.Variant{
		{Name: "fp16", NeedMiB: 280 * gpu.GiB, GroupSizes: []int{4}},
		{Name: "q8", NeedMiB: 140 * gpu.GiB, GroupSizes: []int{2, 4}},
	}},
	{"mid", []gpu.Variant{
		{Name: "q8", NeedMiB: 100 * gpu.GiB, PerGPUOverheadMiB: 2 * gpu.GiB}, // 2 cards
		{Name: "q4", NeedMiB: 50 * gpu.GiB, PerGPUOverheadMiB: 2 * gpu.GiB},  // 1 card
	}},
	{"small", []gpu.Variant{
		{Name: "q8", NeedMiB: 30 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB},
		{Name: "q4", NeedMiB: 16 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB},
	}},
	{"tiny", []gpu.Variant{
		{Name: "q4", NeedMiB: 6 * gpu.GiB, PerGPUOverheadMiB: 512},
	}},
}

// stressMix assigns models to claimers: a few large ones, many small ones, as on a real host.
var stressMix = []int{0, 1, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3}

// stress is the shared state of the concurrency test's claimers.
type stress struct {
	t        *testing.T
	kv       jetstream.KeyValue
	host     string
	inv      gpu.Inventory
	ttl      time.Duration
	ops      int64
	until    time.Time              // no operation starts after it (stressBudget)
	variants map[string]gpu.Variant // model/variant → variant
	active   []atomic.Int32         // per model: replicas claiming or holding

	next                                                               atomic.Int64
	claims, grants, timeouts, renews, readies, releases, crashes, lost atomic.Int64
	checks                                                             atomic.Int64

	mu      sync.Mutex
	crashed map[string]time.Time // holder → when it crashed
}

// TestConcurrentClaimsKeepLedgerSound is the lease client's invariant under concurrency: 32
// claimers claim, renew, mark ready, release and crash at random against one host's ledger,
// and after every operation the ledger is read and checked: no GPU holds more live shares
// than its usable memory, every allocation is a complete group for its variant, no holder
// holds two allocations, a holder that believes its lease live finds it in the ledger as
// granted, and a crashed holder's memory is free within TTL + 1 s.
func TestConcurrentClaimsKeepLedgerSound(t *testing.T) {
	kv := startKV(t)
	s := &stress{
		t: t, kv: kv, host: "stress", ttl: 2 * time.Second, ops: stressOps,
		variants: map[string]gpu.Variant{},
		active:   make([]atomic.Int32, len(stressModels)),
		crashed:  map[string]time.Time{},
	}
	if testing.Short() {
		s.ops = stressOps / 10
	}
	s.inv = declared(t, s.host, "8x80GiB:nvlink-pairs")
	s.inv.ReserveMiB = 512
	for _, m := range stressModels {
		for _, v := range m.variants {
			s.variants[m.name+"/"+v.Name] = v
		}
	}

	start := time.Now()
	s.until = start.Add(stressBudget)
	var wg sync.WaitGroup
	for i := range stressClaimers {
		wg.Go(func() { s.claimer(t.Context(), i) })
	}
	wg.Wait()
	took := time.Since(start)
	done := min(s.next.Load(), s.ops)
	t.Logf("%d operations by %d claimers in %s: %.0f ops/s, %d ledger checks", done, stressClaimers,
		took.Round(time.Millisecond), float64(done)/took.Seconds(), s.checks.Load())
	t.Logf("claims %d (granted %d, gave up waiting %d), renewals %d, readies %d, releases %d, crashes %d, leases lost to late renewal %d",
		s.claims.Load(), s.grants.Load(), s.timeouts.Load(), s.renews.Load(), s.readies.Load(), s.releases.Load(),
		s.crashes.Load(), s.lost.Load())
	if done < stressMinOps {
		t.Errorf("only %d operations in the %s budget, want at least %d", done, stressBudget, stressMinOps)
	}
	if s.grants.Load() < done/10 {
		t.Errorf("only %d grants in %d operations: claimers starved", s.grants.Load(), done)
	}

	// Everyone released or crashed: once the crashed leases expire, the host is free.
	time.Sleep(s.ttl + 100*time.Millisecond)
	led := mustRead(t, kv, s.host)
	if live := led.Live(time.Now()); len(live) != 0 {
		t.Errorf("live leases after every claimer stopped and a TTL passed: %+v", live)
	}
}

// claimer runs one generator replica's life, over and over: claim; then renew, ready,
// release or crash (after which it comes back as a new holder).
func (s *stress) claimer(ctx context.Context, i int) {
	rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
	mi := stressMix[i%len(stressMix)]
	model := stressModels[mi]
	life := 0
	newClient := func() (*lease.Client, string) {
		holder := fmt.Sprintf("c%02d.%d", i, life)
		life++
		c, err := lease.New(s.kv, lease.Config{
			Host: s.host, Holder: holder, Model: model.name, TTL: s.ttl,
			Replicas: func() int { return int(s.active[mi].Load()) },
		})
		if err != nil {
			panic(err) // the config is the test's own
		}
		return c, holder
	}
	c, holder := newClient()
	defer func() { c.Close() }()
	var l *lease.Lease
	loading := false
	drop := func() { l, loading = nil, false; s.active[mi].Add(-1) }

	for time.Now().Before(s.until) && s.next.Add(1) <= s.ops {
		switch {
		case l == nil:
			s.claims.Add(1)
			s.active[mi].Add(1)
			cctx, cancel := context.WithTimeout(ctx, time.Duration(300+rng.IntN(2700))*time.Millisecond)
			got, err := c.Claim(cctx, s.inv, model.variants)
			cancel()
			switch {
			case err == nil:
				s.grants.Add(1)
				l, loading = got, true
			case errors.Is(err, context.DeadlineExceeded):
				s.timeouts.Add(1)
				s.active[mi].Add(-1)
			default:
				s.t.Errorf("%s: claim: %v", holder, err)
				s.active[mi].Add(-1)
				return
			}
		case isClosed(l.Lost()):
			// A renewal came too late (a slow machine): the holder stops and lets go.
			s.lost.Add(1)
			if err := l.Release(ctx); err != nil {
				s.t.Errorf("%s: release after loss: %v", holder, err)
			}
			drop()
		default:
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond) // the holder's own work
			var err error
			switch r := rng.IntN(100); {
			case loading && r < 70:
				s.readies.Add(1)
				if err = l.Ready(ctx); err == nil {
					loading = false
				}
			case r < 86:
				s.renews.Add(1)
				err = l.Renew(ctx)
			case r < 98:
				s.releases.Add(1)
				if err = l.Release(ctx); err == nil {
					drop()
				}
			default:
				s.crashes.Add(1)
				c.Close()
				s.mu.Lock()
				s.crashed[holder] = time.Now()
				s.mu.Unlock()
				drop()
				c, holder = newClient()
			}
			if err != nil && !errors.Is(err, lease.ErrLost) {
				s.t.Errorf("%s: %v", holder, err)
				return
			}
		}
		s.check(ctx, holder, l)
		if s.t.Failed() {
			return
		}
	}
	if l != nil {
		if err := l.Release(ctx); err != nil {
			s.t.Errorf("%s: final release: %v", holder, err)
		}
		s.active[mi].Add(-1)
	}
}

// check reads the ledger and verifies every invariant; holder and l are the calling
// claimer's view of its own lease (l nil when it holds none).
func (s *stress) check(ctx context.Context, holder string, l *lease.Lease) {
	s.checks.Add(1)
	led, err := lease.Read(ctx, s.kv, s.host)
	if errors.Is(err, lease.ErrNoLedger) {
		return
	}
	if err != nil {
		s.t.Errorf("read: %v", err)
		return
	}
	now := time.Now()
	t := s.t
	where := fmt.Sprintf("ledger revision %d, after an operation of %s", led.Revision, holder)

	// No GPU holds more live shares than its usable memory.
	used := led.Used(now)
	for _, g := range s.inv.GPUs {
		if usable := g.TotalMiB - s.inv.ReserveMiB; used[g.UUID] > usable {
			t.Errorf("%s: GPU %d holds %d MiB of live shares, usable %d", where, g.Index, used[g.UUID], usable)
		}
	}
	if over := placement.Over(s.inv, led.Allocations, now); len(over) > 0 {
		t.Errorf("%s: %v", where, over)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	holders := map[string]bool{}
	for _, a := range led.Allocations {
		// No holder holds two allocations, live or expired.
		if holders[a.Holder] {
			t.Errorf("%s: %s holds two allocations", where, a.Holder)
		}
		holders[a.Holder] = true
		// Every allocation is a whole group: as many distinct GPUs as one of the variant's
		// group sizes, each with the variant's full per-GPU footprint.
		v, ok := s.variants[a.Model+"/"+a.Variant]
		if !ok {
			t.Errorf("%s: %s holds unknown variant %s/%s", where, a.Holder, a.Model, a.Variant)
			continue
		}
		n := len(a.Shares)
		sizes := v.GroupSizes
		if len(sizes) == 0 {
			sizes = []int{1, 2, 4, 8}
		}
		per := (v.NeedMiB+gpu.MiB(n)-1)/gpu.MiB(max(n, 1)) + v.PerGPUOverheadMiB
		distinct := map[string]bool{}
		for _, sh := range a.Shares {
			distinct[sh.UUID] = true
			if sh.MiB < per {
				t.Errorf("%s: %s's share on %s is %d MiB, its %s needs %d per GPU on %d GPUs", where, a.Holder, sh.UUID, sh.MiB, a.Variant, per, n)
			}
		}
		if !slices.Contains(sizes, n) || len(distinct) != n {
			t.Errorf("%s: %s holds a half group: %d shares on %d GPUs, group sizes %v", where, a.Holder, n, len(distinct), sizes)
		}
		// A crashed holder's memory is free within TTL + 1 s: its entry expires no later
		// than one TTL after its last renewal, which came before the crash.
		if at, ok := s.crashed[a.Holder]; ok {
			if a.Expires.After(at.Add(s.ttl)) {
				t.Errorf("%s: %s crashed at %s but its lease runs until %s, past the TTL", where, a.Holder,
					at.Format(time.StampMilli), a.Expires.Format(time.StampMilli))
			}
			if a.Expires.After(now) && now.Sub(at) > s.ttl+time.Second {
				t.Errorf("%s: %s crashed %s ago and still holds its GPUs", where, a.Holder, now.Sub(at))
			}
		}
	}

	// Fencing: a holder that believes its lease live (not past the expiry it last wrote)
	// finds it in the ledger, with the GPUs it was granted.
	if l == nil {
		return
	}
	i := slices.IndexFunc(led.Allocations, func(a gpu.Allocation) bool { return a.Holder == holder && a.Revision == l.Revision() })
	if i < 0 {
		if exp := l.Expires(); exp.After(now) {
			t.Errorf("%s: %s's lease is gone from the ledger while it runs until %s", where, holder, exp.Format(time.StampMilli))
		}
		return
	}
	if got, want := uuids(led.Allocations[i].Shares), l.CUDAVisibleDevices(); got != want {
		t.Errorf("%s: ledger grants %s %q, its lease says %q", where, holder, got, want)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// BenchmarkClaimLatency: claimers share a host (8×80 GiB), each claiming a one-card share of
// 10 GiB, marking it ready and releasing it, in a loop with no pause. The host has room for
// all of them, but a card takes one load at a time, so with 32 claimers most claims also
// wait in the queue for another's load to be ready. Reports the claim latency's p50, p90 and
// p99, and the claims per second; one claimer alone gives the uncontended latency.
func BenchmarkClaimLatency(b *testing.B) {
	for _, n := range []int{1, stressClaimers} {
		b.Run(fmt.Sprintf("claimers=%d", n), func(b *testing.B) { benchmarkClaims(b, n) })
	}
}

func benchmarkClaims(b *testing.B, claimers int) {
	kv := startKV(b)
	const host = "bench"
	inv := declared(b, host, "8x80GiB:nvlink-pairs")
	v := gpu.Variant{Name: "q4", NeedMiB: 10 * gpu.GiB}
	clients := make([]*lease.Client, claimers)
	for i := range clients {
		clients[i] = newClient(b, kv, host, fmt.Sprintf("g%02d", i), clientOpts{model: fmt.Sprintf("m%d", i%4), ttl: 15 * time.Second})
	}
	var (
		next      atomic.Int64
		mu        sync.Mutex
		latencies []time.Duration
		wg        sync.WaitGroup
	)
	ctx := b.Context()
	b.ResetTimer()
	start := time.Now()
	for _, c := range clients {
		wg.Go(func() {
			var mine []time.Duration
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				l, err := c.Claim(ctx, inv, []gpu.Variant{v})
				if err != nil {
					b.Errorf("claim: %v", err)
					return
				}
				mine = append(mine, time.Since(t0))
				if err := l.Ready(ctx); err != nil {
					b.Errorf("ready: %v", err)
				}
				if err := l.Release(ctx); err != nil {
					b.Errorf("release: %v", err)
				}
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	took := time.Since(start)
	b.StopTimer()
	if len(latencies) == 0 {
		return
	}
	slices.Sort(latencies)
	q := func(p float64) float64 {
		return float64(latencies[min(int(p*float64(len(latencies))), len(latencies)-1)].Microseconds())
	}
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.90), "p90-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(len(latencies))/took.Seconds(), "claims/s")
}
