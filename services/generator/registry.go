package generator

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// The registry keeps this replica's entry in the generators bucket fresh, and counts the
// live replicas of a host that serve a model: a launch model's variant is chosen so that all
// of them fit (four replicas of a Q8-or-Q4 model on 4×11 GiB take Q4 on one card each).
const (
	registryBeat  = 5 * time.Second
	registryAlive = 3 * registryBeat // an entry older than this is a dead replica's
	peersCacheFor = 2 * time.Second
)

type registry struct {
	kv       jetstream.KeyValue
	entry    protocol.Generator
	inFlight atomic.Int64
	log      *slog.Logger

	mu        sync.Mutex
	peers     []protocol.Generator
	peersRead time.Time
}

func newRegistry(kv jetstream.KeyValue, entry protocol.Generator, log *slog.Logger) *registry {
	return &registry{kv: kv, entry: entry, log: log}
}

// run writes the entry every registryBeat until ctx ends, then deletes it so peers stop
// counting this replica at once.
func (r *registry) run(ctx context.Context) {
	t := time.NewTicker(registryBeat)
	defer t.Stop()
	for {
		r.put(ctx)
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if err := r.kv.Delete(dctx, protocol.GeneratorKey(r.entry.ID)); err != nil {
				r.log.Warn("remove generator entry", "err", err)
			}
			return
		case <-t.C:
		}
	}
}

func (r *registry) put(ctx context.Context) {
	e := r.entry
	e.InFlight = r.inFlight.Load()
	e.UpdatedAt = time.Now().UTC()
	if _, err := natsx.PutJSON(ctx, r.kv, protocol.GeneratorKey(e.ID), &e); err != nil && ctx.Err() == nil {
		r.log.Warn("write generator entry", "err", err)
	}
}

// count returns how many live replicas on host serve model, this one included.
func (r *registry) count(ctx context.Context, host, model string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.peersRead) > peersCacheFor {
		peers, err := r.read(ctx)
		if err != nil {
			r.log.Warn("read generators", "err", err)
		} else {
			r.peers, r.peersRead = peers, time.Now()
		}
	}
	n := 0
	self := false
	for _, g := range r.peers {
		if g.Host == host && g.Serves(model) && time.Since(g.UpdatedAt) < registryAlive {
			n++
			self = self || g.ID == r.entry.ID
		}
	}
	if !self {
		n++
	}
	return n
}

func (r *registry) read(ctx context.Context) ([]protocol.Generator, error) {
	lister, err := r.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, err
	}
	var out []protocol.Generator
	for key := range lister.Keys() {
		var g protocol.Generator
		if _, err := natsx.GetJSON(ctx, r.kv, key, &g); err != nil {
			continue // deleted meanwhile, or a body this build cannot read
		}
		out = append(out, g)
	}
	return out, nil
}
