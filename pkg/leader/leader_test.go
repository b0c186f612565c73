package leader_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/leader"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
)

func TestMain(m *testing.M) { natstest.Main(m) }

// replica is one process's view of the owners bucket, on its own connection, so that closing
// the connection is what a process crash looks like to the others.
type replica struct {
	nc *nats.Conn
	kv jetstream.KeyValue
}

func newReplica(t *testing.T, env *natstest.TestEnv, name string) *replica {
	t.Helper()
	nc, err := env.Server.Connect(name)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), env.Names.OwnersBucket())
	if err != nil {
		t.Fatalf("owners bucket: %v", err)
	}
	return &replica{nc: nc, kv: kv}
}

type won struct {
	lease *leader.Lease
	err   error
	at    time.Time
}

// campaign runs Campaign in the background; the lease, once won, is released when the test
// ends.
func campaign(t *testing.T, ctx context.Context, r *replica, key, holder string, ttl time.Duration) <-chan won {
	t.Helper()
	out := make(chan won, 1)
	go func() {
		l, err := leader.Campaign(ctx, r.kv, key, holder, ttl)
		out <- won{l, err, time.Now()}
	}()
	return out
}

func release(t *testing.T, l *leader.Lease) {
	t.Helper()
	t.Cleanup(func() {
		if err := l.Release(context.Background()); err != nil {
			t.Errorf("release %s: %v", l.Holder(), err)
		}
	})
}

// TestTakeoverAfterDeath: when the holder's process dies (no more renewals), exactly one of
// the standbys takes over within one TTL (plus scheduling margin) of the last renewal, and
// only after the old holder has stopped acting as owner.
func TestTakeoverAfterDeath(t *testing.T) {
	const ttl = time.Second
	env := natstest.StartTestEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	key := leader.Key("planner", "r1")

	holderReplica := newReplica(t, env, "holder")
	first, err := leader.Campaign(ctx, holderReplica.kv, key, "holder", ttl)
	if err != nil {
		t.Fatalf("first campaign: %v", err)
	}
	standbys := []<-chan won{
		campaign(t, ctx, newReplica(t, env, "standby-a"), key, "standby-a", ttl),
		campaign(t, ctx, newReplica(t, env, "standby-b"), key, "standby-b", ttl),
	}
	// Standbys keep waiting while the holder renews, across several TTLs.
	time.Sleep(2500 * time.Millisecond)
	for _, s := range standbys {
		select {
		case w := <-s:
			t.Fatalf("a standby won (%v) while the holder was renewing", w.err)
		default:
		}
	}
	if first.Revision() < 5 {
		t.Errorf("holder at revision %d after 2.5 TTLs; want renewals every TTL/3", first.Revision())
	}

	lostAt := make(chan time.Time, 1)
	go func() { <-first.Lost(); lostAt <- time.Now() }()
	died := time.Now()
	holderReplica.nc.Close() // the process dies: no renewal gets through any more
	var w won
	var other <-chan won
	select {
	case w = <-standbys[0]:
		other = standbys[1]
	case w = <-standbys[1]:
		other = standbys[0]
	case <-time.After(5 * time.Second):
		t.Fatal("no standby took over within 5s of the holder's death")
	}
	if w.err != nil {
		t.Fatalf("takeover: %v", w.err)
	}
	release(t, w.lease)
	// The last renewal was at most TTL/3 before the death; allow 2s for a loaded machine.
	if took := w.at.Sub(died); took > ttl+2*time.Second {
		t.Errorf("takeover %v after the holder died, want within TTL %v + 2s", took, ttl)
	}
	// Fencing: the old holder knew it had lost the lease before anyone else held it.
	select {
	case at := <-lostAt:
		if !at.Before(w.at) {
			t.Errorf("the dead holder noticed its loss %v after the takeover", at.Sub(w.at))
		}
	default:
		t.Fatal("the dead holder's lease is not marked lost although a standby holds the key")
	}
	if !errors.Is(first.Err(), leader.ErrLost) {
		t.Errorf("dead holder's Err = %v, want ErrLost", first.Err())
	}
	observer := newReplica(t, env, "observer")
	rec, rev, err := leader.Owner(ctx, observer.kv, key)
	if err != nil || rec.Holder != w.lease.Holder() || rev < w.lease.Revision() {
		t.Errorf("Owner = %q at revision %d (%v), want %q at revision >= %d", rec.Holder, rev, err, w.lease.Holder(), w.lease.Revision())
	}
	// The other standby keeps waiting: the new holder renews.
	select {
	case w2 := <-other:
		t.Fatalf("a second standby won too (%v)", w2.err)
	case <-time.After(2 * ttl):
	}
}

// TestReleaseHandsOver: a holder that shuts down releases its lease and a standby takes over
// at once, long before the TTL would have freed it.
func TestReleaseHandsOver(t *testing.T) {
	const ttl = 10 * time.Second
	env := natstest.StartTestEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	key := leader.Key("archive", "r1")
	first, err := leader.Campaign(ctx, newReplica(t, env, "holder").kv, key, "holder", ttl)
	if err != nil {
		t.Fatalf("first campaign: %v", err)
	}
	standby := campaign(t, ctx, newReplica(t, env, "standby"), key, "standby", ttl)
	time.Sleep(200 * time.Millisecond) // the standby is watching

	released := time.Now()
	if err := first.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	if !errors.Is(first.Err(), leader.ErrReleased) {
		t.Errorf("released lease's Err = %v, want ErrReleased", first.Err())
	}
	select {
	case <-first.Lost():
	default:
		t.Error("Lost is not closed after Release")
	}
	if err := first.Release(ctx); err != nil {
		t.Errorf("second Release = %v, want nil", err)
	}
	select {
	case w := <-standby:
		if w.err != nil {
			t.Fatalf("standby: %v", w.err)
		}
		release(t, w.lease)
		if took := w.at.Sub(released); took > 3*time.Second {
			t.Errorf("standby took over %v after the release, want at once (well under the %v TTL)", took, ttl)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("the standby did not take over within 5s of a release (TTL %v)", ttl)
	}
}

// TestOneHolderAtATime: many replicas campaigning for one key in turn never hold it at the
// same time, and no two holdings share a revision.
func TestOneHolderAtATime(t *testing.T) {
	const replicas, rounds = 5, 8
	env := natstest.StartTestEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	key := leader.Key("planner", "busy")

	var holding atomic.Int32
	var mu sync.Mutex
	revisions := map[uint64]string{}
	var wg sync.WaitGroup
	for i := range replicas {
		r := newReplica(t, env, "replica")
		name := string(rune('a' + i))
		wg.Go(func() {
			for range rounds {
				l, err := leader.Campaign(ctx, r.kv, key, name, 2*time.Second)
				if err != nil {
					t.Errorf("%s: campaign: %v", name, err)
					return
				}
				if n := holding.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				mu.Lock()
				if prev, dup := revisions[l.Revision()]; dup {
					t.Errorf("revision %d held by %s and %s", l.Revision(), prev, name)
				}
				revisions[l.Revision()] = name
				mu.Unlock()
				time.Sleep(2 * time.Millisecond) // act as owner
				holding.Add(-1)
				if err := l.Release(ctx); err != nil {
					t.Errorf("%s: release: %v", name, err)
				}
			}
		})
	}
	wg.Wait()
	if len(revisions) != replicas*rounds {
		t.Errorf("%d distinct holdings, want %d", len(revisions), replicas*rounds)
	}
}

// TestCampaignStops: a campaign ends with its context, and bad arguments are refused.
func TestCampaignStops(t *testing.T) {
	env := natstest.StartTestEnv(t)
	r := newReplica(t, env, "r")
	key := leader.Key("planner", "r1")
	l, err := leader.Campaign(t.Context(), r.kv, key, "holder", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	release(t, l)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := leader.Campaign(ctx, r.kv, key, "standby", time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("campaign against a live holder = %v, want context.DeadlineExceeded", err)
	}
	if _, err := leader.Campaign(t.Context(), r.kv, key, "", time.Second); err == nil {
		t.Error("campaign with no holder name succeeded")
	}
	if _, err := leader.Campaign(t.Context(), r.kv, key, "x", time.Millisecond); err == nil {
		t.Error("campaign with a 1ms TTL succeeded")
	}
	if _, _, err := leader.Owner(t.Context(), r.kv, leader.Key("planner", "none")); !errors.Is(err, leader.ErrNoOwner) {
		t.Errorf("Owner of a free key = %v, want ErrNoOwner", err)
	}
}

// TestLostWhenOverwritten: a holder whose key was taken by someone else (here, an operator's
// put) learns it at its next renewal and stops renewing, without overwriting the new value.
func TestLostWhenOverwritten(t *testing.T) {
	const ttl = 600 * time.Millisecond
	env := natstest.StartTestEnv(t)
	r := newReplica(t, env, "r")
	key := leader.Key("archive", "r1")
	l, err := leader.Campaign(t.Context(), r.kv, key, "holder", ttl)
	if err != nil {
		t.Fatal(err)
	}
	release(t, l)
	rev, err := r.kv.Put(t.Context(), key, []byte(`{"v":1,"holder":"operator"}`))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Lost():
	case <-time.After(ttl):
		t.Fatalf("the holder did not notice within its TTL that the key was taken")
	}
	if !errors.Is(l.Err(), leader.ErrLost) {
		t.Errorf("Err = %v, want ErrLost", l.Err())
	}
	time.Sleep(ttl / 2)
	rec, cur, err := leader.Owner(t.Context(), r.kv, key)
	if err != nil || rec.Holder != "operator" || cur != rev {
		t.Errorf("owner %q at revision %d (%v), want the operator's write at %d left alone", rec.Holder, cur, err, rev)
	}
}
