// Package leader holds run ownership leases: one replica of a role (the archive, the planner)
// owns a run's work at a time, and the others are hot standbys that take over within one
// lease TTL when the owner dies, or at once when it releases on shutdown.
//
// A lease is one key in the owners KV bucket (protocol.Names.OwnersBucket), e.g.
// "planner.<run>" (Key). The holder renews it by compare-and-set every TTL/3; each renewal
// makes a new revision. A standby watches the key and takes it over, again by
// compare-and-set, when it has seen no new revision for a whole TTL, or creates it as soon as
// the key is deleted (a release). No clock is compared between hosts: the holder counts its
// TTL from before each renewal was sent and the standby from after it saw that renewal, and
// the holder gives up at 80% of its TTL, so it has stopped acting before a standby can start.
//
//	lease, err := leader.Campaign(ctx, owners, leader.Key("planner", run), replicaID, 10*time.Second)
//	if err != nil { return err }            // ctx ended before the lease was won
//	defer lease.Release(context.WithoutCancel(ctx))
//	work(ctx, lease.Lost())                 // stop acting as owner when Lost is closed
package leader

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
)

// Record is the value of an ownership key.
type Record struct {
	V int `json:"v"`
	// Holder names the owning replica.
	Holder string `json:"holder"`
	// Token tells this holding apart from any other, even by the same holder name, so a
	// holder recognises its own write when a renewal's reply was lost.
	Token string `json:"token"`
	// TTLMS is the lease's TTL in milliseconds: a standby takes over after seeing no renewal
	// for that long.
	TTLMS      int64     `json:"ttl_ms"`
	AcquiredAt time.Time `json:"acquired_at"`
	RenewedAt  time.Time `json:"renewed_at"`
}

// Key is the ownership key of role for run, e.g. "archive.<run>".
func Key(role, run string) string { return role + "." + run }

// selfFence is the share of the TTL after the last successful renewal's start at which a
// holder stops acting: a standby waits the whole TTL, so the two never overlap even when the
// holder's timers fire late.
const selfFence = 0.8

// Lease is a held ownership key. It renews itself until Release or until it is lost.
type Lease struct {
	kv     jetstream.KeyValue
	key    string
	holder string
	ttl    time.Duration
	rec    Record

	mu       sync.Mutex
	revision uint64
	err      error

	lost     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// Campaign blocks until holder holds key in kv, or ctx ends (then it returns ctx's error).
// ttl is how long a dead holder keeps the key: a standby takes over within ttl of its last
// renewal. ctx bounds only the campaign: the lease is held until Release or until it is lost.
func Campaign(ctx context.Context, kv jetstream.KeyValue, key, holder string, ttl time.Duration) (*Lease, error) {
	if ttl < 30*time.Millisecond {
		return nil, fmt.Errorf("campaign for %s: ttl %s is too short; want at least 30ms", key, ttl)
	}
	if holder == "" {
		return nil, fmt.Errorf("campaign for %s: empty holder name", key)
	}
	// Watch first, so that no change after a failed create goes unseen.
	w, err := kv.Watch(ctx, key, jetstream.MetaOnly())
	if err != nil {
		return nil, fmt.Errorf("campaign for %s: watch: %w", key, err)
	}
	defer natsx.StopWatch(w)

	l := &Lease{kv: kv, key: key, holder: holder, ttl: ttl, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	l.rec = Record{V: 1, Holder: holder, Token: token(), TTLMS: ttl.Milliseconds()}

	var seen uint64             // the newest revision of someone else's holding seen so far
	var expire <-chan time.Time // fires when seen has gone a whole TTL without renewal
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	tryCreate := true
	for {
		if tryCreate {
			tryCreate = false
			sent := time.Now()
			rev, err := kv.Create(ctx, key, l.value(sent))
			if err == nil {
				return l.start(rev, sent), nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				// The server is away: try again shortly, the watch tells of any change.
				expire, timer = resetTimer(timer, ttl/4)
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, fmt.Errorf("campaign for %s: watch closed", key)
			}
			switch {
			case e == nil: // the initial value, if any, has been delivered
				if seen == 0 {
					tryCreate = true
				}
			case e.Operation() != jetstream.KeyValuePut:
				tryCreate = true // released (deleted) or purged: free now
			case e.Revision() > seen:
				seen = e.Revision()
				expire, timer = resetTimer(timer, ttl)
			}
		case <-expire:
			expire = nil
			if seen == 0 {
				tryCreate = true
				continue
			}
			// No renewal for a whole TTL: the holder is gone. Only one standby's
			// compare-and-set at that revision succeeds.
			sent := time.Now()
			rev, err := kv.Update(ctx, key, l.value(sent), seen)
			if err == nil {
				return l.start(rev, sent), nil
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
				tryCreate = true
				continue
			}
			// Someone else won (the watch brings its revision) or the server is away.
			expire, timer = resetTimer(timer, ttl/4)
		}
	}
}

// Lost is closed when the lease is no longer held: a renewal found another holder, no
// renewal got through in time, or Release was called. Err says which.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err is nil while the lease is held, then ErrLost or ErrReleased.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Revision is the key's revision of the latest renewal: it grows with every renewal, and no
// two holdings share one.
func (l *Lease) Revision() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.revision
}

// Key and Holder name the lease.
func (l *Lease) Key() string    { return l.key }
func (l *Lease) Holder() string { return l.holder }

// Release stops renewing and deletes the key, so a standby takes over at once. It returns
// nil when the lease was already lost; calling it again does nothing.
func (l *Lease) Release(ctx context.Context) error {
	first := false
	l.stopOnce.Do(func() { first = true; close(l.stop) })
	<-l.done
	if !first {
		return nil
	}
	l.mu.Lock()
	held := l.err == nil
	rev := l.revision
	if held {
		l.err = ErrReleased
		close(l.lost)
	}
	l.mu.Unlock()
	if !held {
		return nil
	}
	err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		// The key expires to a standby within one TTL anyway.
		return fmt.Errorf("release %s: %w", l.key, err)
	}
	return nil
}

// Owner reads who holds key, with the revision of that holding's latest renewal.
func Owner(ctx context.Context, kv jetstream.KeyValue, key string) (Record, uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Record{}, 0, fmt.Errorf("owner of %s: %w", key, ErrNoOwner)
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("owner of %s: %w", key, err)
	}
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Record{}, 0, fmt.Errorf("owner of %s: %w", key, err)
	}
	return r, e.Revision(), nil
}

func (l *Lease) value(now time.Time) []byte {
	r := l.rec
	r.RenewedAt = now.UTC()
	if r.AcquiredAt.IsZero() {
		r.AcquiredAt = r.RenewedAt
	}
	data, _ := json.Marshal(r) // a struct of strings, ints and times always encodes
	return data
}

func (l *Lease) start(rev uint64, sent time.Time) *Lease {
	l.revision = rev
	l.rec.AcquiredAt = sent.UTC()
	go l.renew(sent)
	return l
}

// renew keeps the lease until Release, or until it is lost.
func (l *Lease) renew(lastSent time.Time) {
	defer close(l.done)
	fence := time.Duration(float64(l.ttl) * selfFence)
	deadline := time.NewTimer(time.Until(lastSent.Add(fence)))
	defer deadline.Stop()
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-deadline.C:
			l.lose()
			return
		case <-tick.C:
		}
		sent := time.Now()
		ctx, cancel := context.WithDeadline(context.Background(), lastSent.Add(fence))
		rev, err := l.kv.Update(ctx, l.key, l.value(sent), l.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			// The reply to a renewal that did get through may have been lost: a newer
			// revision carrying this holding's token is still this holding's.
			if r, cur, gerr := Owner(ctx, l.kv, l.key); gerr == nil && r.Token == l.rec.Token {
				rev, err = cur, nil
			}
		}
		cancel()
		switch {
		case err == nil:
			l.mu.Lock()
			l.revision = rev
			l.mu.Unlock()
			lastSent = sent
			deadline.Reset(time.Until(lastSent.Add(fence)))
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			l.lose() // someone else holds it now
			return
		default:
			// The server is away: keep trying until the deadline says the lease is gone.
		}
	}
}

func (l *Lease) lose() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = ErrLost
		close(l.lost)
	}
}

func resetTimer(t *time.Timer, d time.Duration) (<-chan time.Time, *time.Timer) {
	if t == nil {
		t = time.NewTimer(d)
	} else {
		t.Reset(d)
	}
	return t.C, t
}

func token() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	return hex.EncodeToString(b[:])
}
