package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoal-run/shoal/pkg/gpu"
)

// Lease is a group of GPU shares granted to one holder. It lasts while renewed: Claim starts
// a loop that renews it every Config.Renew until Release, until it is lost, or until the
// Client is closed. The holder acts on the GPUs only until Lost is closed. Its methods are
// safe to call concurrently.
type Lease struct {
	c       *Client
	variant gpu.Variant
	alloc   gpu.Allocation // as granted
	rev     uint64         // the grant's identity in the ledger (Allocation.Revision)

	lost     chan struct{}
	lostOnce sync.Once
	stop     chan struct{} // closed by Release: the renew loop ends
	stopOnce sync.Once
	done     chan struct{} // closed when the renew loop has ended

	mu       sync.Mutex
	expires  time.Time // the expiry last written: past it the lease is lost
	released bool
}

func newLease(c *Client, v gpu.Variant, a gpu.Allocation) *Lease {
	a.Shares = slices.Clone(a.Shares)
	return &Lease{
		c: c, variant: v, alloc: a, rev: a.Revision,
		lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
		expires: a.Expires,
	}
}

// Variant is the variant the lease was granted for.
func (l *Lease) Variant() gpu.Variant { return l.variant }

// Shares are the memory the lease holds on each GPU of its group, in group order.
func (l *Lease) Shares() []gpu.Share { return slices.Clone(l.alloc.Shares) }

// CUDAVisibleDevices is the value of CUDA_VISIBLE_DEVICES for the model server: the UUIDs of
// the group's GPUs, comma-joined, in group order (UUIDs, because CUDA and NVML number
// devices differently).
func (l *Lease) CUDAVisibleDevices() string {
	ids := make([]string, len(l.alloc.Shares))
	for i, s := range l.alloc.Shares {
		ids[i] = s.UUID
	}
	return strings.Join(ids, ",")
}

// Revision identifies the grant: the ledger revision the granting write was made over, kept
// in the entry as Allocation.Revision and unchanged by renewals.
func (l *Lease) Revision() uint64 { return l.rev }

// Expires is the expiry last written to the ledger. Until then the GPUs are the holder's even
// if renewals fail; after it they may be someone else's.
func (l *Lease) Expires() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expires
}

// Lost is closed when the lease is found gone from the ledger, replaced, or expired: the
// holder must stop its server at once, then call Release.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Renew extends the lease by Config.TTL now; the renew loop calls it one Config.Renew after
// the entry was last written. A holder may call it before acting, to check that the lease is
// still its own. It returns ErrLost, and closes Lost, when the entry is gone, replaced, or
// expired.
func (l *Lease) Renew(ctx context.Context) error {
	return l.update(ctx, "renew", nil)
}

// Ready marks the lease READY once its server is healthy: from then on other loads may start
// on its GPUs. It renews the lease too.
func (l *Lease) Ready(ctx context.Context) error {
	return l.update(ctx, "ready", func(a *gpu.Allocation) { a.State = gpu.LeaseReady })
}

// update rewrites the lease's entry by CAS, renewing its expiry. The write must land before
// the expiry last written: after it, the GPUs may have been granted to someone else.
func (l *Lease) update(ctx context.Context, what string, edit func(*gpu.Allocation)) error {
	select {
	case <-l.lost:
		return fmt.Errorf("%s lease %d of %s: %w", what, l.rev, l.c.cfg.Holder, ErrLost)
	default:
	}
	until := l.Expires()
	dctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()
	var expires time.Time
	_, err := l.c.store.change(dctx, func(led *Ledger, now time.Time) (bool, error) {
		i := l.index(led) // an expired entry was pruned: it is not found
		if i < 0 {
			return false, ErrLost
		}
		if edit != nil {
			edit(&led.Allocations[i])
		}
		expires = now.Add(l.c.cfg.TTL)
		led.Allocations[i].Expires = expires
		return true, nil
	})
	if errors.Is(err, ErrLost) || (err != nil && !time.Now().Before(until)) {
		l.markLost(what)
		return fmt.Errorf("%s lease %d of %s: %w", what, l.rev, l.c.cfg.Holder, ErrLost)
	}
	if err != nil {
		return fmt.Errorf("%s lease %d of %s: %w", what, l.rev, l.c.cfg.Holder, err)
	}
	l.mu.Lock()
	l.expires = expires
	l.mu.Unlock()
	return nil
}

// index finds the lease's entry: same holder, same grant.
func (l *Lease) index(led *Ledger) int {
	return slices.IndexFunc(led.Allocations, func(a gpu.Allocation) bool {
		return a.Holder == l.alloc.Holder && a.Revision == l.rev
	})
}

func (l *Lease) markLost(what string) {
	l.lostOnce.Do(func() {
		close(l.lost)
		l.c.cfg.Log.Warn("gpu lease lost", "host", l.c.cfg.Host, "holder", l.alloc.Holder,
			"gpu", l.CUDAVisibleDevices(), "revision", l.rev, "during", what)
	})
}

// Release gives the GPUs back and stops the renewals. It is idempotent, and safe after the
// lease was lost (it then removes the entry if a late renewal left one).
func (l *Lease) Release(ctx context.Context) error {
	l.stopOnce.Do(func() { close(l.stop) })
	select {
	case <-l.done:
	case <-ctx.Done():
		return fmt.Errorf("release lease %d of %s: %w", l.rev, l.c.cfg.Holder, ctx.Err())
	}
	l.mu.Lock()
	released := l.released
	l.mu.Unlock()
	if released {
		return nil
	}
	_, err := l.c.store.change(ctx, func(led *Ledger, _ time.Time) (bool, error) {
		i := l.index(led)
		if i < 0 {
			return false, nil
		}
		led.Allocations = slices.Delete(led.Allocations, i, i+1)
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("release lease %d of %s: %w", l.rev, l.c.cfg.Holder, err)
	}
	l.mu.Lock()
	l.released = true
	l.mu.Unlock()
	l.c.cfg.Log.Info("gpu lease released", "host", l.c.cfg.Host, "holder", l.alloc.Holder,
		"gpu", l.CUDAVisibleDevices(), "revision", l.rev)
	return nil
}

// ended reports whether the lease no longer renews: released, lost, or its client closed.
func (l *Lease) ended() bool {
	select {
	case <-l.done:
		return true
	case <-l.lost:
		return true
	default:
		return false
	}
}

// renewLoop renews the lease one Config.Renew after its entry was last written (a Ready or
// the holder's own Renew counts, so a busy holder costs no extra writes), sooner after a
// failure, until Release, loss, or Close.
func (l *Lease) renewLoop(ctx context.Context) {
	defer close(l.done)
	cfg := l.c.cfg
	var retry time.Duration
	for {
		wait := time.Until(l.Expires().Add(cfg.Renew - cfg.TTL))
		if retry > 0 {
			wait = retry
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-l.c.closed:
			t.Stop()
			return
		case <-l.stop:
			t.Stop()
			return
		case <-t.C:
		}
		if retry == 0 && time.Until(l.Expires()) > cfg.TTL-cfg.Renew {
			continue // written meanwhile
		}
		err := l.Renew(ctx)
		switch {
		case err == nil:
			retry = 0
		case errors.Is(err, ErrLost):
			return
		default:
			// The server may be briefly unreachable: try again soon, until the expiry.
			cfg.Log.Warn("gpu lease renew", "host", cfg.Host, "holder", l.alloc.Holder, "err", err)
			retry = max(min(cfg.Renew, time.Until(l.Expires())/4), 10*time.Millisecond)
		}
	}
}
