package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
)

// feed is the UI's view of a deployment, kept current by watches: the runs bucket (run
// summaries), the RESULTS stream (each run's aggregate) and the GPU buckets (the lease map).
// Every change bumps a version and wakes the event streams, which send what moved.
type feed struct {
	names protocol.Names
	js    jetstream.JetStream
	log   *slog.Logger
	store *runs.Store // specs, for the fold's config

	mu         sync.Mutex
	runs       map[string]*runRecords
	runsVer    uint64
	aggs       map[string]*runAgg
	ledgers    map[string]*lease.Ledger      // by host
	inventory  map[string]gpu.Inventory      // by host, as the generators published it
	generators map[string]protocol.Generator // by replica id
	leasesVer  uint64
	changed    chan struct{} // closed and replaced at every change
	// ready is closed once RESULTS has been read up to where it stood at start.
	ready chan struct{}
}

// runRecords are one run's records in the runs bucket.
type runRecords struct {
	spec    *protocol.RunSpec
	maxIter int64
	state   *protocol.RunState
	planner *protocol.PlannerState
	control *protocol.RunControl
}

func newFeed(names protocol.Names, js jetstream.JetStream, log *slog.Logger) *feed {
	return &feed{
		names: names, js: js, log: log,
		runs: map[string]*runRecords{}, aggs: map[string]*runAgg{},
		ledgers: map[string]*lease.Ledger{}, inventory: map[string]gpu.Inventory{}, generators: map[string]protocol.Generator{},
		changed: make(chan struct{}), ready: make(chan struct{}),
	}
}

// run keeps the feed current until ctx ends or a watch fails.
func (f *feed) run(ctx context.Context) error {
	store, err := runs.Open(ctx, f.js, f.names)
	if err != nil {
		return fmt.Errorf("ui: %w", err)
	}
	f.store = store
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return f.watchKV(ctx, f.names.RunsBucket(), f.putRunRecord) })
	g.Go(func() error { return f.watchKV(ctx, f.names.GPULeasesBucket(), f.putLedger) })
	g.Go(func() error { return f.watchKV(ctx, f.names.GPUInventoryBucket(), f.putInventory) })
	g.Go(func() error { return f.watchKV(ctx, f.names.GeneratorsBucket(), f.putGenerator) })
	g.Go(func() error { return f.readResults(ctx) })
	g.Go(func() error { return f.expireLeases(ctx) })
	return g.Wait()
}

// notProvisioned says what to do when a stream or bucket the UI reads does not exist: the
// seeder may not create them, the services and admin commands do.
func notProvisioned(err error) string {
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) {
		return " (the deployment has not made its streams yet: start its services, or run shoal status as the admin)"
	}
	return ""
}

// wait returns a channel closed at the next change.
func (f *feed) wait() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// notify wakes the event streams; f.mu must be held.
func (f *feed) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// watchKV applies every entry of bucket, current and future, with put (value nil for a
// deleted or expired key).
func (f *feed) watchKV(ctx context.Context, bucket string, put func(key string, value []byte)) error {
	kv, err := f.js.KeyValue(ctx, bucket)
	if err != nil {
		return fmt.Errorf("ui: open %s: %w%s", bucket, err, notProvisioned(err))
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("ui: watch %s: %w", bucket, err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("ui: watch of %s ended", bucket)
			}
			if e == nil {
				continue // the end of the initial values
			}
			var v []byte
			if e.Operation() == jetstream.KeyValuePut {
				v = e.Value()
			}
			f.mu.Lock()
			put(e.Key(), v)
			f.notify()
			f.mu.Unlock()
		}
	}
}

func (f *feed) putRunRecord(key string, value []byte) {
	i := strings.LastIndexByte(key, '.')
	if i < 0 {
		return
	}
	run, kind := key[:i], key[i+1:]
	rec := f.runs[run]
	if rec == nil {
		if value == nil {
			return
		}
		rec = &runRecords{}
		f.runs[run] = rec
	}
	f.runsVer++
	decode := func(v protocol.Message) bool {
		if value == nil {
			return false
		}
		if err := protocol.Decode(value, v); err != nil {
			f.log.Warn("undecodable run record", "key", key, "err", err)
			return false
		}
		return true
	}
	switch kind {
	case "config":
		var rs protocol.RunSpec
		if decode(&rs) {
			rec.spec = &rs
			rec.maxIter = maxIterations(rs.Config)
		}
	case "state":
		var st protocol.RunState
		if decode(&st) {
			rec.state = &st
		}
	case "planner":
		var st protocol.PlannerState
		if decode(&st) {
			rec.planner = &st
		}
	case "control":
		var c protocol.RunControl
		if decode(&c) {
			rec.control = &c
		}
	}
}

func (f *feed) putLedger(key string, value []byte) {
	putEntry(f, f.ledgers, key, value, "lease ledger", func(data []byte) (*lease.Ledger, error) {
		var l lease.Ledger
		return &l, json.Unmarshal(data, &l)
	})
}

func (f *feed) putInventory(key string, value []byte) {
	putEntry(f, f.inventory, key, value, "inventory", func(data []byte) (gpu.Inventory, error) {
		var inv gpu.Inventory
		return inv, json.Unmarshal(data, &inv)
	})
}

func (f *feed) putGenerator(key string, value []byte) {
	putEntry(f, f.generators, key, value, "generator", func(data []byte) (protocol.Generator, error) {
		var g protocol.Generator
		return g, protocol.Decode(data, &g)
	})
}

// putEntry applies one write of a lease-map bucket to m: nil (a delete or purge) removes the
// key, anything else is decoded and stored; an undecodable value is logged and leaves m as it
// was. Each write bumps the lease map's version.
func putEntry[T any](f *feed, m map[string]T, key string, value []byte, what string, decode func([]byte) (T, error)) {
	f.leasesVer++
	if value == nil {
		delete(m, key)
		return
	}
	v, err := decode(value)
	if err != nil {
		f.log.Warn("undecodable "+what, "key", key, "err", err)
		return
	}
	m[key] = v
}

// expireLeases wakes the lease map once a second while any lease is held: an entry past its
// expiry is free even though no write says so.
func (f *feed) expireLeases(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		f.mu.Lock()
		if len(f.ledgers) > 0 {
			f.leasesVer++
			f.notify()
		}
		f.mu.Unlock()
	}
}

// readResults folds RESULTS, from its first message, into each run's aggregate.
func (f *feed) readResults(ctx context.Context) error {
	stream, err := f.js.Stream(ctx, f.names.ResultsStream())
	if err != nil {
		return fmt.Errorf("ui: open results: %w%s", err, notProvisioned(err))
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("ui: results: %w", err)
	}
	readyAt := info.State.LastSeq
	if readyAt == 0 {
		close(f.ready)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{f.names.AllResults()},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("ui: read results: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("ui: read results: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("ui: read results: %w", err)
		}
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		seq := md.Sequence.Stream
		var r protocol.Result
		if err := protocol.Decode(msg.Data(), &r); err != nil || protocol.ValidateRunID(r.Run) != nil {
			f.log.Warn("skipping undecodable result", "subject", msg.Subject(), "seq", seq, "err", err)
		} else {
			f.fold(ctx, &r, seq)
		}
		if readyAt > 0 && seq >= readyAt {
			readyAt = 0
			close(f.ready)
		}
	}
}

func (f *feed) fold(ctx context.Context, r *protocol.Result, seq uint64) {
	f.mu.Lock()
	agg := f.aggs[r.Run]
	f.mu.Unlock()
	if agg == nil {
		// The fold needs the run's config (islands, feature dimensions), as the archive's does.
		agg = newRunAgg(r.Run, f.specConfig(ctx, r.Run))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.aggs[r.Run] == nil {
		f.aggs[r.Run] = agg
	}
	if f.aggs[r.Run].fold(r, seq) {
		f.notify()
	}
}

// runSummary is one row of the runs list: what `shoal status` shows.
type runSummary struct {
	Run         string    `json:"run"`
	Status      string    `json:"status"`
	Evaluations int64     `json:"evaluations"`
	Budget      int64     `json:"budget"` // 0: no max_iterations
	InFlight    int64     `json:"in_flight"`
	Failed      int64     `json:"failed"`
	Population  int       `json:"population"`
	Best        float64   `json:"best"`
	SeedScore   float64   `json:"seed_score"`
	StopReason  string    `json:"stop_reason,omitempty"`
	Updated     time.Time `json:"updated"`
}

// summaries returns every run's summary, newest first; f.mu must be held.
func (f *feed) summaries() []runSummary {
	out := []runSummary{}
	for id, rec := range f.runs {
		if rec.spec == nil {
			continue
		}
		s := runSummary{Run: id, Status: "seeded", Budget: rec.maxIter, Updated: rec.spec.CreatedAt}
		if rec.planner != nil {
			if rec.planner.Status != "" {
				s.Status = string(rec.planner.Status)
			}
			s.StopReason, _, _ = strings.Cut(rec.planner.StopReason, "\n")
			if rec.planner.UpdatedAt.After(s.Updated) {
				s.Updated = rec.planner.UpdatedAt
			}
		}
		if rec.control != nil {
			if s.Budget > 0 {
				s.Budget += rec.control.ExtraIterations
			}
			if rec.control.Paused && s.Status == string(protocol.RunRunning) {
				s.Status = "pausing"
			}
		}
		if st := rec.state; st != nil {
			s.Evaluations, s.Failed, s.Population, s.Best, s.SeedScore = st.Iterations, st.Failed, st.Population, st.BestScore, st.SeedScore
			if rec.planner != nil {
				s.InFlight = max(rec.planner.Issued-st.Iterations, 0)
			}
			if st.UpdatedAt.After(s.Updated) {
				s.Updated = st.UpdatedAt
			}
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b runSummary) int { return b.Updated.Compare(a.Updated) })
	return out
}
