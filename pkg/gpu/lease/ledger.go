package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/placement"
)

// Ledger is one host's value in the gpu-leases bucket: every live lease on its GPUs and every
// claimer waiting for them. It is only ever written whole, by compare-and-set.
type Ledger struct {
	V    int    `json:"v"`
	Host string `json:"host"`
	// Inventory is the GPUs the ledger is for, as the last claimer saw them.
	Inventory   gpu.Inventory    `json:"inventory"`
	Allocations []gpu.Allocation `json:"allocations"`
	Queue       []Queued         `json:"queue"`
	UpdatedAt   time.Time        `json:"updated_at"`

	// Revision is the KV revision this ledger was read at or written as; 0 when the host
	// has no ledger yet.
	Revision uint64 `json:"-"`
}

// Queued is a claimer waiting in a host's queue. Like a lease it expires unless renewed, so a
// crashed waiter does not hold up the claims behind it.
type Queued struct {
	Holder  string      `json:"holder"`
	Model   string      `json:"model"`
	Variant gpu.Variant `json:"variant"`
	Since   time.Time   `json:"since"`
	Expires time.Time   `json:"expires"`
}

// ledgerVersion is the only ledger version this build reads and writes.
const ledgerVersion = 1

// Key is the key of host's ledger in the gpu-leases bucket: the host name with every
// character a KV key cannot hold replaced by '_'.
func Key(host string) string {
	if host == "" {
		return "_"
	}
	b := []byte(host)
	for i, ch := range b {
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9',
			ch == '-', ch == '_', ch == '=', ch == '/':
		case ch == '.' && i > 0 && i < len(b)-1 && b[i-1] != '.':
			// A dot separates key tokens; none may be empty.
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

// Read returns host's ledger as stored, expired entries included: use Live and Expired to
// tell them apart. A host nobody has claimed on returns ErrNoLedger.
func Read(ctx context.Context, kv jetstream.KeyValue, host string) (*Ledger, error) {
	l, err := (&store{kv: kv, host: host, key: Key(host)}).read(ctx)
	if err != nil {
		return nil, err
	}
	if l.Revision == 0 {
		return nil, fmt.Errorf("read ledger of %s: %w", host, ErrNoLedger)
	}
	return l, nil
}

// Live returns the allocations that still hold their GPUs at now.
func (l *Ledger) Live(now time.Time) []gpu.Allocation {
	var out []gpu.Allocation
	for _, a := range l.Allocations {
		if a.Expires.After(now) {
			out = append(out, a)
		}
	}
	return out
}

// Expired returns the allocations past their expiry at now: their GPUs are free, and the next
// write drops them.
func (l *Ledger) Expired(now time.Time) []gpu.Allocation {
	var out []gpu.Allocation
	for _, a := range l.Allocations {
		if !a.Expires.After(now) {
			out = append(out, a)
		}
	}
	return out
}

// Used returns the memory that live leases hold on each GPU, by UUID.
func (l *Ledger) Used(now time.Time) map[string]gpu.MiB {
	used := map[string]gpu.MiB{}
	for _, a := range l.Live(now) {
		for _, s := range a.Shares {
			used[s.UUID] += s.MiB
		}
	}
	return used
}

// Waiters returns the live queue in order, as placement takes it.
func (l *Ledger) Waiters(now time.Time) []placement.Waiter {
	var out []placement.Waiter
	for _, q := range l.Queue {
		if q.Expires.After(now) {
			out = append(out, placement.Waiter{Holder: q.Holder, Model: q.Model, Variant: q.Variant, Since: q.Since})
		}
	}
	return out
}

// prune drops every allocation and waiter past its expiry.
func (l *Ledger) prune(now time.Time) {
	l.Allocations = slices.DeleteFunc(l.Allocations, func(a gpu.Allocation) bool { return !a.Expires.After(now) })
	l.Queue = slices.DeleteFunc(l.Queue, func(q Queued) bool { return !q.Expires.After(now) })
}

// allocation returns the index of holder's allocation, or -1.
func (l *Ledger) allocation(holder string) int {
	return slices.IndexFunc(l.Allocations, func(a gpu.Allocation) bool { return a.Holder == holder })
}

// queued returns the index of holder's queue entry, or -1.
func (l *Ledger) queued(holder string) int {
	return slices.IndexFunc(l.Queue, func(q Queued) bool { return q.Holder == holder })
}

func decodeLedger(data []byte) (*Ledger, error) {
	var l Ledger
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLedger, err)
	}
	if l.V != ledgerVersion {
		return nil, fmt.Errorf("%w: v=%d, this build reads v=%d", ErrLedger, l.V, ledgerVersion)
	}
	return &l, nil
}

// store reads and writes one host's ledger.
type store struct {
	kv   jetstream.KeyValue
	host string
	key  string
	// contention is how many conflicts in a row this client's writes met lately: a write
	// that conflicts backs off from there, so the writers of a busy ledger stay spread out
	// instead of colliding anew on every write. It rises with each conflict and falls by one
	// with each write.
	contention atomic.Int32
	// lastLook is how long the last read, decode and edit took, in nanoseconds.
	lastLook atomic.Int64
}

// look is how long reading and deciding on the ledger takes: the last look's duration, 100 µs
// before the first.
func (s *store) look() time.Duration {
	if d := time.Duration(s.lastLook.Load()); d > 0 {
		return d
	}
	return 100 * time.Microsecond
}

// read returns the ledger, or an empty one at revision 0 when the host has none.
func (s *store) read(ctx context.Context) (*Ledger, error) {
	e, err := s.kv.Get(ctx, s.key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &Ledger{V: ledgerVersion, Host: s.host}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ledger of %s: %w", s.host, err)
	}
	l, err := decodeLedger(e.Value())
	if err != nil {
		return nil, fmt.Errorf("read ledger of %s: %w", s.host, err)
	}
	if l.Host != s.host {
		return nil, fmt.Errorf("read ledger of %s: %w: key %s holds host %q", s.host, ErrLedger, s.key, l.Host)
	}
	l.Revision = e.Revision()
	return l, nil
}

// change is every write to a ledger: read it, drop what has expired, let fn edit it, and
// write it back only if the ledger is still at the revision read (compare-and-set). When
// another writer got there first it re-reads and calls fn again, after a jittered backoff.
// fn returns false to leave the ledger unwritten. change returns the ledger as written (or
// as read, when fn declined), with its revision.
func (s *store) change(ctx context.Context, fn func(l *Ledger, now time.Time) (bool, error)) (*Ledger, error) {
	b := backoff{n: int(s.contention.Load())}
	for {
		began := time.Now()
		l, err := s.read(ctx)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		l.prune(now)
		write, err := fn(l, now)
		s.lastLook.Store(int64(time.Since(began)))
		if err != nil || !write {
			return l, err
		}
		l.V, l.Host, l.UpdatedAt = ledgerVersion, s.host, now
		data, err := json.Marshal(l)
		if err != nil {
			return nil, fmt.Errorf("write ledger of %s: %w", s.host, err)
		}
		var rev uint64
		if l.Revision == 0 {
			rev, err = s.kv.Create(ctx, s.key, data)
		} else {
			rev, err = s.kv.Update(ctx, s.key, data, l.Revision)
		}
		if err == nil {
			s.contention.Store(int32(max(b.n-1, 0)))
			l.Revision = rev
			return l, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, fmt.Errorf("write ledger of %s: %w", s.host, err)
		}
		if err := b.wait(ctx, time.Since(began)); err != nil {
			return nil, err
		}
	}
}

// backoff is exponential with full jitter, in units of one read-modify-write round: at level
// n a conflict waits a random time below round × 2ⁿ (at most 100 ms) and raises the level, so
// that writers that collided spread out over about as many rounds as there are of them,
// whether a round takes 100 µs (loopback) or 10 ms (a remote server, a race-instrumented
// test).
type backoff struct{ n int }

func (b *backoff) wait(ctx context.Context, round time.Duration) error {
	limit := min(max(round, 100*time.Microsecond)<<b.n, 100*time.Millisecond)
	b.n = min(b.n+1, 6)
	t := time.NewTimer(rand.N(limit) + 1)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// jitter spreads periodic work of many holders: d ± 10%.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d - d/10 + rand.N(d/5+1)
}
