package leader

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Set is one replica's ownership of many runs for one role: it campaigns for every run it is
// told of, in the background, and says which it owns now. A replica that owns none of them
// is a hot standby for all of them.
type Set struct {
	kv     jetstream.KeyValue
	role   string
	holder string
	ttl    time.Duration
	log    *slog.Logger

	mu    sync.Mutex
	held  map[string]*Lease
	known map[string]bool
	wg    sync.WaitGroup
}

// NewSet returns an empty set for holder in role; leases last ttl past their holder's death.
func NewSet(kv jetstream.KeyValue, role, holder string, ttl time.Duration, log *slog.Logger) *Set {
	return &Set{kv: kv, role: role, holder: holder, ttl: ttl, log: log,
		held: map[string]*Lease{}, known: map[string]bool{}}
}

// Join campaigns for run until ctx ends, unless it already does. Whenever the lease is lost it
// campaigns again, so a replica that was partitioned away becomes a standby, not a stray.
func (s *Set) Join(ctx context.Context, run string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known[run] || ctx.Err() != nil {
		return
	}
	s.known[run] = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.campaign(ctx, run)
	}()
}

func (s *Set) campaign(ctx context.Context, run string) {
	key := Key(s.role, run)
	for {
		l, err := Campaign(ctx, s.kv, key, s.holder, s.ttl)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("ownership campaign", "run", run, "role", s.role, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.ttl / 2):
			}
			continue
		}
		s.mu.Lock()
		s.held[run] = l
		s.mu.Unlock()
		s.log.Info("run owned", "run", run, "role", s.role, "holder", s.holder)
		select {
		case <-l.Lost():
			s.mu.Lock()
			delete(s.held, run)
			s.mu.Unlock()
			s.log.Warn("run ownership lost", "run", run, "role", s.role, "err", l.Err())
		case <-ctx.Done():
			return // Close releases what is held
		}
	}
}

// Owns reports whether this replica holds run's lease now.
func (s *Set) Owns(run string) bool {
	s.mu.Lock()
	l := s.held[run]
	s.mu.Unlock()
	return l != nil && l.Err() == nil
}

// Owned lists the runs held now.
func (s *Set) Owned() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.held))
	for run, l := range s.held {
		if l.Err() == nil {
			out = append(out, run)
		}
	}
	return out
}

// Close waits for the campaigns to end (their ctx must be done) and releases every lease
// held, so that standbys take over at once rather than after a TTL.
func (s *Set) Close(ctx context.Context) {
	s.wg.Wait()
	s.mu.Lock()
	held := s.held
	s.held = map[string]*Lease{}
	s.mu.Unlock()
	for run, l := range held {
		if err := l.Release(ctx); err != nil {
			s.log.Warn("release run ownership", "run", run, "role", s.role, "err", err)
		}
	}
}
