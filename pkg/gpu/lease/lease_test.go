package lease_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
)

// startKV starts a provisioned embedded JetStream and returns the gpu-leases bucket. It also
// checks, when the test ends, that no goroutine of this package or of NATS is left behind.
func startKV(t testing.TB) jetstream.KeyValue {
	t.Helper()
	noLeaks(t)
	env := natstest.StartTestEnv(t)
	kv, err := env.JS.KeyValue(context.Background(), env.Names.GPULeasesBucket())
	if err != nil {
		t.Fatalf("open gpu-leases bucket: %v", err)
	}
	return kv
}

// noLeaks fails the test if goroutines started during it are still running once everything
// it cleaned up has stopped. Registered first, it runs last.
func noLeaks(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutines leaked: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func declared(t testing.TB, host, spec string) gpu.Inventory {
	t.Helper()
	inv, err := gpu.ParseDeclared(host, spec)
	if err != nil {
		t.Fatalf("ParseDeclared(%q): %v", spec, err)
	}
	return inv
}

type clientOpts struct {
	model    string
	ttl      time.Duration
	replicas int
}

func newClient(t testing.TB, kv jetstream.KeyValue, host, holder string, o clientOpts) *lease.Client {
	t.Helper()
	if o.model == "" {
		o.model = "m"
	}
	if o.ttl == 0 {
		o.ttl = 2 * time.Second
	}
	cfg := lease.Config{Host: host, Holder: holder, Model: o.model, TTL: o.ttl}
	if o.replicas > 0 {
		cfg.Replicas = func() int { return o.replicas }
	}
	c, err := lease.New(kv, cfg)
	if err != nil {
		t.Fatalf("lease.New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func mustClaim(t testing.TB, c *lease.Client, inv gpu.Inventory, vs ...gpu.Variant) *lease.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.Claim(ctx, inv, vs)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	t.Cleanup(func() { _ = l.Release(context.Background()) })
	return l
}

func mustRead(t testing.TB, kv jetstream.KeyValue, host string) *lease.Ledger {
	t.Helper()
	led, err := lease.Read(context.Background(), kv, host)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return led
}

// entry returns holder's allocation in the ledger.
func entry(t testing.TB, led *lease.Ledger, holder string) gpu.Allocation {
	t.Helper()
	for _, a := range led.Allocations {
		if a.Holder == holder {
			return a
		}
	}
	t.Fatalf("no allocation of %s in the ledger: %+v", holder, led.Allocations)
	return gpu.Allocation{}
}

func uuids(shares []gpu.Share) string {
	ids := make([]string, len(shares))
	for i, s := range shares {
		ids[i] = s.UUID
	}
	return strings.Join(ids, ",")
}

func queued(led *lease.Ledger, holder string) bool {
	return slices.ContainsFunc(led.Queue, func(q lease.Queued) bool { return q.Holder == holder })
}

// eventually polls cond every 10 ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type claimResult struct {
	lease *lease.Lease
	err   error
	at    time.Time
}

// claimAsync claims in the background; the result arrives on the channel.
func claimAsync(ctx context.Context, c *lease.Client, inv gpu.Inventory, vs ...gpu.Variant) <-chan claimResult {
	ch := make(chan claimResult, 1)
	go func() {
		l, err := c.Claim(ctx, inv, vs)
		ch <- claimResult{l, err, time.Now()}
	}()
	return ch
}

var q8pair = gpu.Variant{Name: "q8", NeedMiB: 12800, GroupSizes: []int{2}} // 12.5 GiB on 2 cards

func TestClaimGrantsDisjointGroupsThenQueues(t *testing.T) {
	kv := startKV(t)
	const host = "box"
	inv := declared(t, host, "4x11GiB")
	ctx := t.Context()

	if _, err := lease.Read(ctx, kv, host); !errors.Is(err, lease.ErrNoLedger) {
		t.Fatalf("Read before any claim: err = %v, want ErrNoLedger", err)
	}
	a := mustClaim(t, newClient(t, kv, host, "a", clientOpts{}), inv, q8pair)
	led := mustRead(t, kv, host)
	if got := entry(t, led, "a"); got.State != gpu.LeaseLoading || got.Variant != "q8" || len(got.Shares) != 2 {
		t.Fatalf("first claim wrote %+v, want a LOADING q8 lease on 2 GPUs", got)
	}
	b := mustClaim(t, newClient(t, kv, host, "b", clientOpts{}), inv, q8pair)

	led = mustRead(t, kv, host)
	seen := map[string]string{}
	for _, l := range []struct {
		holder string
		lease  *lease.Lease
	}{{"a", a}, {"b", b}} {
		e := entry(t, led, l.holder)
		if got, want := l.lease.CUDAVisibleDevices(), uuids(e.Shares); got != want {
			t.Errorf("%s: CUDAVisibleDevices = %q, ledger grants %q", l.holder, got, want)
		}
		if n := len(strings.Split(l.lease.CUDAVisibleDevices(), ",")); n != 2 {
			t.Errorf("%s: %d GPUs, want 2", l.holder, n)
		}
		for _, s := range e.Shares {
			if other, dup := seen[s.UUID]; dup {
				t.Errorf("GPU %s granted to both %s and %s", s.UUID, other, l.holder)
			}
			seen[s.UUID] = l.holder
		}
	}

	// The host is full: c waits in the queue.
	c := newClient(t, kv, host, "c", clientOpts{})
	cres := claimAsync(ctx, c, inv, q8pair)
	eventually(t, 2*time.Second, "c is not in the queue", func() bool { return queued(mustRead(t, kv, host), "c") })
	select {
	case r := <-cres:
		t.Fatalf("c was granted %v (err %v) while both pairs are held", r.lease, r.err)
	case <-time.After(300 * time.Millisecond):
	}

	// d gives up waiting and leaves the queue.
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := newClient(t, kv, host, "d", clientOpts{}).Claim(dctx, inv, []gpu.Variant{q8pair}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("d's claim past its deadline: err = %v, want context.DeadlineExceeded", err)
	}
	if queued(mustRead(t, kv, host), "d") {
		t.Errorf("d is still queued after giving up")
	}

	released := time.Now()
	if err := a.Release(ctx); err != nil {
		t.Fatalf("release a: %v", err)
	}
	if err := a.Release(ctx); err != nil {
		t.Errorf("second release of a: %v, want nil (idempotent)", err)
	}
	var r claimResult
	select {
	case r = <-cres:
	case <-time.After(2 * time.Second):
		t.Fatalf("c not granted 2s after a released")
	}
	if r.err != nil {
		t.Fatalf("c's claim: %v", r.err)
	}
	defer r.lease.Release(context.Background())
	t.Logf("c granted %s after a released", r.at.Sub(released))
	if got, want := r.lease.CUDAVisibleDevices(), a.CUDAVisibleDevices(); got != want {
		t.Errorf("c got GPUs %q, want a's former pair %q", got, want)
	}
	led = mustRead(t, kv, host)
	if queued(led, "c") || len(led.Queue) != 0 {
		t.Errorf("queue after c's grant = %+v, want empty", led.Queue)
	}
	if got := uuids(entry(t, led, "c").Shares); got != r.lease.CUDAVisibleDevices() {
		t.Errorf("ledger grants c %q, lease says %q", got, r.lease.CUDAVisibleDevices())
	}
}

func TestClaimFallsBackToTheVariantAllReplicasFit(t *testing.T) {
	q8 := gpu.Variant{Name: "Q8", NeedMiB: 12800}    // 12.5 GiB: 2 cards of 11 GiB
	q4 := gpu.Variant{Name: "Q4", NeedMiB: 7 * 1024} // 1 card
	for _, tc := range []struct {
		replicas    int
		wantVariant string
		wantGPUs    int
	}{
		{replicas: 2, wantVariant: "Q8", wantGPUs: 2},
		{replicas: 4, wantVariant: "Q4", wantGPUs: 1},
	} {
		t.Run(fmt.Sprintf("%d replicas", tc.replicas), func(t *testing.T) {
			kv := startKV(t)
			const host = "box"
			inv := declared(t, host, "4x11GiB")
			leases := make([]*lease.Lease, tc.replicas)
			var wg sync.WaitGroup
			for i := range tc.replicas {
				c := newClient(t, kv, host, fmt.Sprintf("r%d", i), clientOpts{replicas: tc.replicas})
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
					defer cancel()
					l, err := c.Claim(ctx, inv, []gpu.Variant{q8, q4})
					if err != nil {
						t.Errorf("replica %d: %v", i, err)
						return
					}
					leases[i] = l
				})
			}
			wg.Wait()
			used := map[string]bool{}
			for i, l := range leases {
				if l == nil {
					continue
				}
				defer l.Release(context.Background())
				gpus := strings.Split(l.CUDAVisibleDevices(), ",")
				if l.Variant().Name != tc.wantVariant || len(gpus) != tc.wantGPUs {
					t.Errorf("replica %d got %s on %d GPUs, want %s on %d", i, l.Variant().Name, len(gpus), tc.wantVariant, tc.wantGPUs)
				}
				for _, g := range gpus {
					if used[g] {
						t.Errorf("GPU %s granted twice", g)
					}
					used[g] = true
				}
			}
		})
	}
}

func TestCrashedHolderFreesGPUsWithinTTL(t *testing.T) {
	kv := startKV(t)
	const host = "box"
	const ttl = 2 * time.Second
	inv := declared(t, host, "1x11GiB")
	v := gpu.Variant{Name: "q4", NeedMiB: 8 * 1024}
	ctx := t.Context()

	ca := newClient(t, kv, host, "a", clientOpts{ttl: ttl})
	a := mustClaim(t, ca, inv, v)
	if err := a.Ready(ctx); err != nil {
		t.Fatalf("ready: %v", err)
	}
	// While a lives, renewals keep its GPU past the TTL.
	wctx, cancel := context.WithTimeout(ctx, ttl+500*time.Millisecond)
	defer cancel()
	if l, err := newClient(t, kv, host, "early", clientOpts{ttl: ttl}).Claim(wctx, inv, []gpu.Variant{v}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("claim while a renews: lease %v, err %v; want to wait past the TTL", l, err)
	}

	ca.Close() // a crashes: no more renewals, no release
	crashed := time.Now()
	b := mustClaim(t, newClient(t, kv, host, "b", clientOpts{ttl: ttl}), inv, v)
	took := time.Since(crashed)
	t.Logf("b granted %s after a crashed (TTL %s)", took, ttl)
	// The upper bound is generous, for a loaded 2-core machine whose timers run late: what a
	// user notices is that the GPU comes back about a TTL after the crash, not never.
	if limit := 3 * ttl; took > limit {
		t.Errorf("crashed holder's GPU free after %s, want within about the TTL (≤ %s)", took, limit)
	}
	// a's last renewal was at most one renewal period (+10% jitter) before the crash.
	if min := ttl - ttl/3*11/10 - 100*time.Millisecond; took < min {
		t.Errorf("GPU handed over %s after the crash, before a's lease could have expired (≥ %s)", took, min)
	}
	if b.CUDAVisibleDevices() != a.CUDAVisibleDevices() {
		t.Errorf("b got %q, want a's GPU %q", b.CUDAVisibleDevices(), a.CUDAVisibleDevices())
	}
}

func TestReadShowsExpiredLeases(t *testing.T) {
	kv := startKV(t)
	const host = "box"
	inv := declared(t, host, "2x24GiB")
	ca := newClient(t, kv, host, "a", clientOpts{ttl: time.Second})
	a := mustClaim(t, ca, inv, gpu.Variant{Name: "q4", NeedMiB: 4096})
	ca.Close()
	time.Sleep(time.Until(a.Expires()) + 50*time.Millisecond)
	led := mustRead(t, kv, host)
	now := time.Now()
	if live, expired := led.Live(now), led.Expired(now); len(live) != 0 || len(expired) != 1 || expired[0].Holder != "a" {
		t.Errorf("after a's expiry: live %+v, expired %+v; want a shown as expired", live, expired)
	}
	if used := led.Used(now); len(used) != 0 {
		t.Errorf("memory used after expiry: %v, want none", used)
	}
}

// rewrite replaces the host's ledger as another writer would: edit, then CAS.
func rewrite(t testing.TB, kv jetstream.KeyValue, host string, edit func(*lease.Ledger)) {
	t.Helper()
	ctx := context.Background()
	e, err := kv.Get(ctx, lease.Key(host))
	if err != nil {
		t.Fatalf("get ledger: %v", err)
	}
	var led lease.Ledger
	if err := json.Unmarshal(e.Value(), &led); err != nil {
		t.Fatalf("decode ledger: %v", err)
	}
	edit(&led)
	data, err := json.Marshal(&led)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, lease.Key(host), data, e.Revision()); err != nil {
		t.Fatalf("rewrite ledger: %v", err)
	}
}

func TestLostWhenEntryRemovedOrReplaced(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(led *lease.Ledger, holder string)
		kept bool // the holder's entry stays (as another grant) after Release
	}{
		{"removed", func(led *lease.Ledger, holder string) {
			led.Allocations = slices.DeleteFunc(led.Allocations, func(a gpu.Allocation) bool { return a.Holder == holder })
		}, false},
		{"replaced by another grant", func(led *lease.Ledger, holder string) {
			for i := range led.Allocations {
				if led.Allocations[i].Holder == holder {
					led.Allocations[i].Revision += 1000
					led.Allocations[i].Expires = time.Now().Add(time.Minute)
				}
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kv := startKV(t)
			const host = "box"
			const ttl = 3 * time.Second
			renew := ttl / 3
			inv := declared(t, host, "2x24GiB")
			a := mustClaim(t, newClient(t, kv, host, "a", clientOpts{ttl: ttl}), inv, gpu.Variant{Name: "q4", NeedMiB: 4096})

			rewrite(t, kv, host, func(led *lease.Ledger) { tc.edit(led, "a") })
			changed := time.Now()
			select {
			case <-a.Lost():
				took := time.Since(changed)
				t.Logf("Lost closed %s after the entry was %s (renewal every %s)", took, tc.name, renew)
				// One renewal period, with a generous margin for a loaded machine's late timers.
				if limit := 2*renew + time.Second; took > limit {
					t.Errorf("Lost closed after %s, want within about one renewal period (≤ %s)", took, limit)
				}
			case <-time.After(4*renew + 2*time.Second):
				t.Fatalf("Lost not closed %s after the entry was %s", 4*renew+2*time.Second, tc.name)
			}
			ctx := t.Context()
			if err := a.Renew(ctx); !errors.Is(err, lease.ErrLost) {
				t.Errorf("Renew after loss: %v, want ErrLost", err)
			}
			if err := a.Ready(ctx); !errors.Is(err, lease.ErrLost) {
				t.Errorf("Ready after loss: %v, want ErrLost", err)
			}
			if err := a.Release(ctx); err != nil {
				t.Errorf("Release after loss: %v, want nil", err)
			}
			led := mustRead(t, kv, host)
			if got := len(led.Allocations) == 1; got != tc.kept {
				t.Errorf("after Release the ledger holds %+v; want the other grant kept: %v", led.Allocations, tc.kept)
			}
		})
	}
}

func TestLoadingCardTakesNoSecondLoadUntilReady(t *testing.T) {
	kv := startKV(t)
	const host = "box"
	inv := declared(t, host, "1x80GiB")
	small := gpu.Variant{Name: "q4", NeedMiB: 10 * 1024}
	ctx := t.Context()

	a := mustClaim(t, newClient(t, kv, host, "a", clientOpts{model: "a"}), inv, small)
	bres := claimAsync(ctx, newClient(t, kv, host, "b", clientOpts{model: "b"}), inv, small)
	eventually(t, 2*time.Second, "b is not queued", func() bool { return queued(mustRead(t, kv, host), "b") })
	select {
	case r := <-bres:
		t.Fatalf("b granted %v (err %v) on a card where a is still loading", r.lease, r.err)
	case <-time.After(500 * time.Millisecond):
	}

	ready := time.Now()
	if err := a.Ready(ctx); err != nil {
		t.Fatalf("ready: %v", err)
	}
	if got := entry(t, mustRead(t, kv, host), "a").State; got != gpu.LeaseReady {
		t.Errorf("a's state after Ready = %q, want %q", got, gpu.LeaseReady)
	}
	select {
	case r := <-bres:
		if r.err != nil {
			t.Fatalf("b's claim: %v", r.err)
		}
		defer r.lease.Release(context.Background())
		t.Logf("b granted %s after a was ready", r.at.Sub(ready))
		if r.lease.CUDAVisibleDevices() != a.CUDAVisibleDevices() {
			t.Errorf("b on %q, want it to share a's card %q", r.lease.CUDAVisibleDevices(), a.CUDAVisibleDevices())
		}
	case <-time.After(time.Second):
		t.Fatalf("b not granted 1s after a was ready")
	}
}

func TestClaimRefusesAVariantThatNeverFits(t *testing.T) {
	kv := startKV(t)
	const host = "box"
	inv := declared(t, host, "4x11GiB")
	huge := gpu.Variant{Name: "fp16", NeedMiB: 40 * 1024, GroupSizes: []int{1}}
	_, err := newClient(t, kv, host, "a", clientOpts{}).Claim(t.Context(), inv, []gpu.Variant{huge})
	if !errors.Is(err, lease.ErrNeverFits) {
		t.Fatalf("claim of 40 GiB on one 11 GiB card: %v, want ErrNeverFits", err)
	}
	if _, err := lease.Read(t.Context(), kv, host); !errors.Is(err, lease.ErrNoLedger) {
		t.Errorf("a refused claim wrote the ledger (Read: %v)", err)
	}
}

func TestClientHoldsOneLeaseAtATime(t *testing.T) {
	kv := startKV(t)
	const host = "box"
	inv := declared(t, host, "2x24GiB")
	v := gpu.Variant{Name: "q4", NeedMiB: 4096}
	c := newClient(t, kv, host, "a", clientOpts{})
	l := mustClaim(t, c, inv, v)
	if _, err := c.Claim(t.Context(), inv, []gpu.Variant{v}); !errors.Is(err, lease.ErrHeld) {
		t.Fatalf("second claim while holding: %v, want ErrHeld", err)
	}
	if err := l.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, c, inv, v)
	if n := len(mustRead(t, kv, host).Allocations); n != 1 {
		t.Errorf("ledger holds %d allocations after release and re-claim, want 1", n)
	}
}

func TestKeyIsAValidKVKey(t *testing.T) {
	kv := startKV(t)
	for _, tc := range []struct{ host, want string }{
		{"gpu-box-1.example.com", "gpu-box-1.example.com"},
		{"host:8080", "host_8080"},
		{".hidden.", "_hidden_"},
		{"a..b", "a._b"},
		{"", "_"},
		{"héte rack*1>", "h__te_rack_1_"},
	} {
		got := lease.Key(tc.host)
		if got != tc.want {
			t.Errorf("Key(%q) = %q, want %q", tc.host, got, tc.want)
		}
		if _, err := kv.Put(t.Context(), got, []byte("{}")); err != nil {
			t.Errorf("Key(%q) = %q is not a usable key: %v", tc.host, got, err)
		}
	}
}
