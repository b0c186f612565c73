// Package lease is the GPU lease client: generator replicas on a host negotiate that host's
// GPUs among themselves through the gpu-leases KV bucket, with no coordinator.
//
// # The ledger
//
// Each host has one key in the bucket (Key: the host name, sanitized to KV key characters)
// whose value is that host's Ledger: the inventory it is for, every allocation (holder, model,
// variant, its share of each GPU of its group, LOADING or READY, expiry) and the queue of
// claimers waiting. Every change is a read-modify-write with compare-and-set: kv.Create when
// the key is absent (ErrKeyExists: someone else created it, retry), else kv.Update at the
// revision read (ErrKeyRevisionMismatch: someone else wrote, retry), with jittered
// exponential backoff. Each write drops the entries past their expiry.
//
// A claim is atomic: the placement (placement.Admit) picks every GPU of a group, and the one CAS
// that writes the allocation grants them all or, losing the race, none.
//
// # Expiry and fencing
//
// Expiry lives inside the entry (Allocation.Expires) and the holder renews it by CAS every
// Config.Renew (TTL/3). The key's own TTL is not used: kv.Update drops it, and it would expire
// the whole host's ledger, not one lease. An entry past its expiry is free: placement ignores
// it and the next write removes it, so a crashed holder's GPUs are free within one TTL.
//
// A lease is identified by its holder and its Revision: the ledger revision the granting write
// was made over, distinct for every grant on a host. When a renewal finds its entry gone,
// replaced by another grant, or already expired, or when renewals fail until the expiry the
// holder last wrote has passed, Lease.Lost is closed: the holder must stop its server, because
// its GPUs may already be someone else's. Expiry is judged by the clock of whoever reads the
// ledger; the claimers of one host share its clock.
//
// # Loading, waiting and variants
//
// A new lease is LOADING: placement starts no second load on its GPUs until the holder calls
// Lease.Ready (two servers starting together on one card mis-size each other's KV cache).
//
// A claimer first picks the most preferred variant of its model such that all Config.Replicas
// replicas fit next to the other models' leases (placement.ChooseVariant), then asks
// placement.Admit whether it may have it now. If not, it enqueues itself in the ledger, which
// makes claims head-of-line with backfill (a large claim is not starved by a stream of small
// ones), and waits: it watches the key's revisions and tries again when it changes (after a short
// settling time that grows with the queue, so that many waiters on a busy ledger do not
// spend the host's CPU decoding it), and on a timer for expiries, which free GPUs without a
// write. Each try chooses the variant afresh, so a claimer falls back to a smaller variant,
// or returns to a larger one, as the ledger changes. A waiter's queue entry expires like a
// lease unless renewed, so a crashed waiter blocks no one for long; a waiter whose context
// ends removes itself.
//
// # Contention
//
// All claimers of a host write one key. A writer that loses the compare-and-set backs off
// for a random time in units of its own read-modify-write round, from a level that it
// remembers between writes, so that a crowd of writers spreads out instead of colliding
// again on each write. The holder's renewals are due one Config.Renew after its entry was
// last written, so a Ready or an explicit Renew saves one. With 32 claimers on one host the
// ledger is about 9 KB.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/placement"
)

// Config is one holder's view: who it is, what it serves, and how long its leases last.
type Config struct {
	// Host is the host whose GPUs are claimed.
	Host string
	// Holder is this generator replica's id, unique among the holders of the host.
	Holder string
	// Model is the model name from the run config.
	Model string
	// TTL is how long a lease outlives its holder's last renewal. Default 15s.
	TTL time.Duration
	// Renew is how often the holder renews. Default TTL/3.
	Renew time.Duration
	// Replicas reports how many replicas of Model are live, this one included; variants are
	// chosen so that all of them fit. Default: 1.
	Replicas func() int
	// Log receives lease events. Default: discarded.
	Log *slog.Logger
}

func (c *Config) setDefaults() {
	if c.TTL == 0 {
		c.TTL = 15 * time.Second
	}
	if c.Renew == 0 {
		c.Renew = c.TTL / 3
	}
	if c.Replicas == nil {
		c.Replicas = func() int { return 1 }
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Validate reports what a user must fix in cfg.
func (c Config) Validate() error {
	var errs []error
	if c.Host == "" {
		errs = append(errs, errors.New("host is empty"))
	}
	if c.Holder == "" {
		errs = append(errs, errors.New("holder is empty"))
	}
	if c.TTL < 0 {
		errs = append(errs, fmt.Errorf("ttl %s is negative", c.TTL))
	}
	if c.Renew < 0 || (c.TTL > 0 && c.Renew >= c.TTL) {
		errs = append(errs, fmt.Errorf("renew every %s must be positive and shorter than the ttl %s", c.Renew, c.TTL))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gpu lease config: %w", err)
	}
	return nil
}

// Client claims GPUs of one host for one holder. It holds at most one lease at a time.
type Client struct {
	cfg    Config
	store  *store
	closed chan struct{}
	close  sync.Once

	mu       sync.Mutex
	held     *Lease // the live lease, if any
	claiming bool   // a Claim is under way
}

// New returns a client for cfg.Holder on cfg.Host, over the gpu-leases bucket kv.
func New(kv jetstream.KeyValue, cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Client{cfg: cfg, store: &store{kv: kv, host: cfg.Host, key: Key(cfg.Host)}, closed: make(chan struct{})}, nil
}

// Close stops the client: a waiting Claim returns ErrClosed, and the held lease is no longer
// renewed but not released, so it expires within Config.TTL, as if the holder had crashed.
// Shut down by releasing first. Close returns once the renewals have stopped.
func (c *Client) Close() {
	c.close.Do(func() { close(c.closed) })
	c.mu.Lock()
	held := c.held
	c.mu.Unlock()
	if held != nil {
		<-held.done
	}
}

// Claim returns a lease on GPUs of inv for one of variants (in order of preference), waiting
// in the host's queue until one can be granted. It returns ErrNeverFits at once when no
// variant would fit even on idle GPUs, and ctx.Err() when ctx ends first, after taking itself
// out of the queue. ctx bounds the wait only: the lease is renewed until Release, its loss,
// or Close.
func (c *Client) Claim(ctx context.Context, inv gpu.Inventory, variants []gpu.Variant) (*Lease, error) {
	if err := c.startClaim(); err != nil {
		return nil, err
	}
	defer func() {
		c.mu.Lock()
		c.claiming = false
		c.mu.Unlock()
	}()
	feasible, err := c.feasible(inv, variants)
	if err != nil {
		return nil, err
	}
	since := time.Now()
	var (
		watcher jetstream.KeyWatcher
		logged  string
	)
	defer func() {
		if watcher != nil {
			natsx.StopWatch(watcher)
		}
	}()
	for {
		t, err := c.try(ctx, inv, feasible, since)
		if err != nil {
			// The write may have landed although its reply did not.
			c.abandon(ctx)
			return nil, fmt.Errorf("claim on %s for %s: %w", c.cfg.Host, c.cfg.Holder, err)
		}
		if t.lease != nil {
			c.mu.Lock()
			c.held = t.lease
			c.mu.Unlock()
			go t.lease.renewLoop(context.WithoutCancel(ctx))
			if c.isClosed() {
				_ = t.lease.Release(context.WithoutCancel(ctx))
				return nil, fmt.Errorf("claim on %s for %s: %w", c.cfg.Host, c.cfg.Holder, ErrClosed)
			}
			c.cfg.Log.Info("gpu lease granted", "host", c.cfg.Host, "holder", c.cfg.Holder,
				"model", c.cfg.Model, "variant", t.lease.variant.Name, "gpu", t.lease.CUDAVisibleDevices(),
				"revision", t.lease.rev, "waited", time.Since(since))
			return t.lease, nil
		}
		if t.reason != logged {
			c.cfg.Log.Info("gpu lease waiting", "host", c.cfg.Host, "holder", c.cfg.Holder,
				"model", c.cfg.Model, "variant", t.variant.Name, "reason", t.reason)
			logged = t.reason
		}
		if watcher == nil {
			// The watch delivers the current revision first, so a change between the try
			// and now is not missed. Only revisions: waiters read the ledger when they look,
			// which is less often than it changes.
			if watcher, err = c.store.kv.Watch(ctx, c.store.key, jetstream.MetaOnly()); err != nil {
				c.abandon(ctx)
				return nil, fmt.Errorf("claim on %s for %s: watch ledger: %w", c.cfg.Host, c.cfg.Holder, err)
			}
		}
		if err := waitForChange(ctx, c.closed, watcher, t.revision, time.Until(t.wake), settle(t.waiters, c.store.look())); err != nil {
			c.abandon(ctx)
			return nil, err
		}
	}
}

// startClaim refuses a claim while the client holds a live lease or is claiming already:
// a second grant to the holder would evict the first.
func (c *Client) startClaim() error {
	if c.isClosed() {
		return fmt.Errorf("claim on %s for %s: %w", c.cfg.Host, c.cfg.Holder, ErrClosed)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.claiming || (c.held != nil && !c.held.ended()) {
		return fmt.Errorf("claim on %s for %s: %w", c.cfg.Host, c.cfg.Holder, ErrHeld)
	}
	c.claiming = true
	return nil
}

func (c *Client) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// feasible keeps the variants that would fit the host with all its GPUs free; waiting for
// the others would never end.
func (c *Client) feasible(inv gpu.Inventory, variants []gpu.Variant) ([]gpu.Variant, error) {
	if len(variants) == 0 {
		return nil, fmt.Errorf("claim on %s for %s: no variants given", c.cfg.Host, c.cfg.Holder)
	}
	var ok []gpu.Variant
	var reasons []string
	for _, v := range variants {
		if _, why, fits := placement.Fit(inv, nil, v, time.Now()); fits {
			ok = append(ok, v)
		} else {
			reasons = append(reasons, v.Name+": "+why)
		}
	}
	if len(ok) == 0 {
		return nil, fmt.Errorf("claim on %s for %s: %w: %s", c.cfg.Host, c.cfg.Holder, ErrNeverFits, strings.Join(reasons, "; "))
	}
	return ok, nil
}

// attempt is the outcome of one try: a lease, or the variant waited for, why, the ledger
// revision the decision was made on, and when to look again even if the ledger does not
// change.
type attempt struct {
	lease    *Lease
	variant  gpu.Variant
	reason   string
	revision uint64
	wake     time.Time
	waiters  int // how many wait in the queue
}

// try is one round of the claim: in one CAS, either grant a variant or (re)enqueue.
func (c *Client) try(ctx context.Context, inv gpu.Inventory, variants []gpu.Variant, since time.Time) (attempt, error) {
	var t attempt
	var granted *gpu.Allocation
	led, err := c.store.change(ctx, func(l *Ledger, now time.Time) (bool, error) {
		t, granted = attempt{}, nil
		write := false
		// An allocation of ours here is a past life's (a crash, or a grant whose reply was
		// lost): it is freed, so no holder ever holds two.
		if i := l.allocation(c.cfg.Holder); i >= 0 {
			l.Allocations = slices.Delete(l.Allocations, i, i+1)
			write = true
		}
		v := c.choose(inv, l, variants, now)
		shares, why, ok := placement.Admit(inv, l.Allocations, l.Waiters(now), c.cfg.Holder, v, now)
		qi := l.queued(c.cfg.Holder)
		if ok {
			if qi >= 0 {
				l.Queue = slices.Delete(l.Queue, qi, qi+1)
			}
			l.Allocations = append(l.Allocations, gpu.Allocation{
				Holder: c.cfg.Holder, Model: c.cfg.Model, Variant: v.Name, Shares: shares,
				State: gpu.LeaseLoading, Expires: now.Add(c.cfg.TTL), Revision: l.Revision,
			})
			granted = &l.Allocations[len(l.Allocations)-1]
			t.variant = v
			l.Inventory = inv
			return true, nil
		}
		t.variant, t.reason = v, why
		// The queue entry is renewed when half its TTL is left. A change of variant is
		// written at once when it is a fallback (the entry then reserves less for this
		// waiter, which may let others in); a return to a preferred variant waits for the
		// renewal, so that a choice flapping with the ledger does not write at every change.
		renewBy := now.Add(c.cfg.TTL / 2)
		switch {
		case qi < 0:
			l.Queue = append(l.Queue, Queued{Holder: c.cfg.Holder, Model: c.cfg.Model, Variant: v,
				Since: since, Expires: now.Add(c.cfg.TTL)})
			write = true
		case !now.Before(l.Queue[qi].Expires.Add(-c.cfg.TTL/2)) || variantIndex(variants, v) > variantIndex(variants, l.Queue[qi].Variant):
			l.Queue[qi].Variant = v
			l.Queue[qi].Expires = now.Add(c.cfg.TTL)
			write = true
		default:
			renewBy = l.Queue[qi].Expires.Add(-c.cfg.TTL / 2)
		}
		if write {
			l.Inventory = inv
		}
		t.wake = wakeAt(l, renewBy)
		t.waiters = len(l.Queue)
		return write, nil
	})
	if err != nil {
		return attempt{}, err
	}
	t.revision = led.Revision
	if granted != nil {
		a := *granted
		t.lease = newLease(c, t.variant, a)
	}
	return t, nil
}

// choose picks the variant to claim now: the most preferred one with which all replicas of
// the model fit next to the other models' leases, or else ChooseVariant's best fallback (the
// one that places the most replicas).
func (c *Client) choose(inv gpu.Inventory, l *Ledger, variants []gpu.Variant, now time.Time) gpu.Variant {
	var others []gpu.Allocation
	for _, a := range l.Allocations {
		if a.Model != c.cfg.Model {
			others = append(others, a)
		}
	}
	if i, _ := placement.ChooseVariant(inv, others, variants, max(c.cfg.Replicas(), 1), now); i >= 0 {
		return variants[i]
	}
	return variants[len(variants)-1] // unreachable: every variant given fits the empty host
}

// variantIndex is v's place in the order of preference; -1 when v is not among variants.
func variantIndex(variants []gpu.Variant, v gpu.Variant) int {
	return slices.IndexFunc(variants, func(w gpu.Variant) bool { return w.Name == v.Name })
}

// wakeAt is when a waiter must look again although the ledger has not changed: to renew its
// queue entry, or when an entry expires and frees its GPUs or its place in the queue.
func wakeAt(l *Ledger, renewBy time.Time) time.Time {
	wake := renewBy
	for _, a := range l.Allocations {
		if a.Expires.Before(wake) {
			wake = a.Expires
		}
	}
	for _, q := range l.Queue {
		if q.Expires.Before(wake) {
			wake = q.Expires
		}
	}
	return wake.Add(time.Millisecond)
}

// settle is how long a waiter lets writes to the ledger pass before it looks again: about
// 8 looks per waiter in the queue, a look (read, decode, placement) lasting what the last one
// took, within 1 ms to 250 ms. Every change wakes every waiter; this way all of them together
// spend at most about an eighth of one core looking, however long the queue and however busy
// the ledger, on a fast machine or a slow one. A grant is late by about that much.
func settle(waiters int, look time.Duration) time.Duration {
	return jitter(min(max(time.Duration(8*waiters)*look, time.Millisecond), 250*time.Millisecond))
}

// waitForChange returns when the ledger has changed past revision and settled, or when d has
// passed, or with an error when ctx ends or the client is closed.
func waitForChange(ctx context.Context, closed <-chan struct{}, w jetstream.KeyWatcher, revision uint64, d, settle time.Duration) error {
	t := time.NewTimer(max(d, time.Millisecond))
	defer t.Stop()
	var settled <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return ErrClosed
		case <-t.C:
			return nil
		case <-settled:
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil { // the watch ends with ctx
					return ctx.Err()
				}
				return errors.New("ledger watch closed")
			}
			// nil ends the initial values; an old revision is what was already tried (the
			// watch's first value, or this waiter's own write).
			if e == nil || e.Revision() <= revision {
				continue
			}
			if settled == nil {
				settled = time.After(settle)
			}
		}
	}
}

// abandon undoes what a failed or given-up claim may have left in the ledger: its queue
// entry, and a grant whose reply was lost (the client holds no lease while it claims, so any
// allocation of its holder is such an orphan). It runs after ctx has ended, so it has a few
// seconds of its own; if it fails, the entries expire within the TTL.
func (c *Client) abandon(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := c.store.change(ctx, func(l *Ledger, _ time.Time) (bool, error) {
		n := len(l.Queue) + len(l.Allocations)
		l.Queue = slices.DeleteFunc(l.Queue, func(q Queued) bool { return q.Holder == c.cfg.Holder })
		l.Allocations = slices.DeleteFunc(l.Allocations, func(a gpu.Allocation) bool { return a.Holder == c.cfg.Holder })
		return len(l.Queue)+len(l.Allocations) != n, nil
	})
	if err != nil {
		c.cfg.Log.Warn("gpu claim abandon", "host", c.cfg.Host, "holder", c.cfg.Holder, "err", err)
	}
}
