// Package archive owns a run's population. It folds the RESULTS stream, in order, into each
// run's population, keeps the best program and the run's counters in the runs bucket, answers
// the planner's sample requests, and turns seeds into a run's first candidates.
//
// RESULTS is the source of truth. The archive snapshots each run's population into the
// snapshots object store every checkpoint_interval folded results and on shutdown; on start
// it restores the snapshots and replays RESULTS from the lowest sequence they do not cover,
// skipping what each run's snapshot already holds. The fold is deterministic, so a restart
// ends in exactly the state it left, with no result lost or counted twice.
package archive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-run/shoal/pkg/leader"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/pkg/telemetry"
	"github.com/shoal-run/shoal/services/archive/internal/population"
)

// Config configures an archive replica.
type Config struct {
	Names protocol.Names
	// ID names this replica in logs and events; default the host name.
	ID string
	// FlushInterval is how often ownership is checked and any state still unwritten is
	// written; default 250ms. A fold does not wait for it: each fold asks for a flush at
	// once, and folds that land while one is being written share the next.
	FlushInterval time.Duration
	// OwnerTTL is how long a dead replica keeps its runs: a standby takes them over within
	// it; default 5s.
	OwnerTTL time.Duration
	// Telemetry traces each fold (a span in its candidate's trace) and counts the candidates
	// folded by status, the best score of each run and how far the fold lags RESULTS;
	// zero: off.
	Telemetry telemetry.Providers
}

func (c *Config) setDefaults() {
	if c.Names.Prefix == "" {
		c.Names = protocol.NewNames("")
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("archive-%s-%d", host, os.Getpid())
	}
	if c.OwnerTTL <= 0 {
		c.OwnerTTL = 5 * time.Second
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 250 * time.Millisecond
	}
}

// Validate reports a config a replica cannot run with.
func (c *Config) Validate() error {
	if err := c.Names.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if c.OwnerTTL < time.Second {
		return fmt.Errorf("%w: owner ttl %s: want at least 1s", ErrConfig, c.OwnerTTL)
	}
	return nil
}

// Service is an archive replica.
type Service struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger

	runs      *runs.Store
	bundles   jetstream.ObjectStore
	snapshots jetstream.ObjectStore
	writer    *snapshotWriter
	// owners holds this replica's ownership lease. Every replica folds every run, so a hot
	// standby has the populations ready; only the owner writes run state, snapshots and
	// events, and answers samples. One lease covers all runs: ownership must be settled
	// before the first result of a new run is folded, so that snapshots fall where the
	// fold says, and a per-run lease could only be won after that.
	owners *leader.Set
	// responders are the owner's sample and snapshot subscriptions; only flushLoop (and Run
	// after it) touches them.
	responders []*nats.Subscription

	mu       sync.RWMutex
	pops     map[string]*population.Population
	dirty    map[string]bool
	newBest  map[string]bool
	caughtUp bool
	// flushNow asks flushLoop to write what the fold changed (capacity 1: requests made
	// while a flush is pending are one request).
	flushNow chan struct{}
	// since counts each run's results folded since its last snapshot.
	since map[string]int

	tracer  trace.Tracer
	metrics *metrics
}

// New checks cfg and prepares a replica; Run starts it.
func New(cfg Config, nc *nats.Conn, log *slog.Logger) (*Service, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc == nil {
		return nil, fmt.Errorf("%w: no NATS connection", ErrConfig)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	m, err := newMetrics(cfg.Telemetry.Meter())
	if err != nil {
		return nil, err
	}
	return &Service{
		cfg: cfg, nc: nc, js: js, log: log.With("service", "archive", "replica", cfg.ID),
		pops: map[string]*population.Population{}, dirty: map[string]bool{}, newBest: map[string]bool{}, flushNow: make(chan struct{}, 1),
		since: map[string]int{}, tracer: cfg.Telemetry.Tracer(), metrics: m,
	}, nil
}

// Run folds results, serves samples and takes seeds until ctx ends, then writes what is
// unwritten and hands its runs to a standby, and returns nil. When one of its parts dies (its
// seeds consumer is deleted, the results cannot be read) the others stop too and Run returns
// that error, so the replica is restarted rather than left half alive.
func (s *Service) Run(ctx context.Context) error {
	// stop ends what outlives the group below (the ownership campaign) when a part dies.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if err := natsx.Provision(ctx, s.js, s.cfg.Names); err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	store, err := runs.Open(ctx, s.js, s.cfg.Names)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	s.runs = store
	if s.bundles, err = s.js.ObjectStore(ctx, s.cfg.Names.BundlesStore()); err != nil {
		return fmt.Errorf("archive: open bundles: %w", err)
	}

	if s.snapshots, err = s.js.ObjectStore(ctx, s.cfg.Names.SnapshotsStore()); err != nil {
		return fmt.Errorf("archive: open snapshots: %w", err)
	}
	s.writer = newSnapshotWriter(s.snapshots, s.log)
	ownersKV, err := s.js.KeyValue(ctx, s.cfg.Names.OwnersBucket())
	if err != nil {
		return fmt.Errorf("archive: open owners bucket: %w", err)
	}
	s.owners = leader.NewSet(ownersKV, "archive", s.cfg.ID, s.cfg.OwnerTTL, s.log)
	s.owners.Join(ctx, fleet)

	replayTo, from, err := s.restore(ctx)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	s.log.Info("replaying results", "from_seq", from, "to_seq", replayTo)
	if from > replayTo {
		s.markCaughtUp(ctx)
	}

	occ := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.cfg.Names.AllResults()},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if from > 1 {
		occ.DeliverPolicy, occ.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	results, err := s.js.OrderedConsumer(ctx, s.cfg.Names.ResultsStream(), occ)
	if err != nil {
		return fmt.Errorf("archive: results consumer: %w", err)
	}
	unobserve, err := pipeline.ObserveConsumer(s.cfg.Telemetry.Meter(), results, "archive-fold", 0)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	defer unobserve()
	unobserveBest, err := s.metrics.observeBest(s.bestScores)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	defer unobserveBest()

	seeds, err := natsx.EnsureConsumer(ctx, s.js, s.cfg.Names.SeedsStream(), jetstream.ConsumerConfig{
		Durable:       s.cfg.Names.ArchiveSeedsConsumer(),
		FilterSubject: s.cfg.Names.AllSeeds(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    5,
	})
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}

	// The archive's parts run as one group: if one of them dies (its seeds consumer deleted,
	// the results iterator unable to start), the others stop and Run returns the error, so the
	// replica exits and is restarted rather than folding on while it takes no more seeds.
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		s.writer.run(gctx)
		return nil
	})
	g.Go(func() error {
		if err := pipeline.Consume(gctx, seeds, pipeline.Config{Name: "archive-seeds", Log: s.log, JetStream: s.js, Names: s.cfg.Names}, s.handleSeed); err != nil {
			return fmt.Errorf("archive: seeds: %w", err)
		}
		return nil
	})
	g.Go(func() error { return s.fold(gctx, results, replayTo) })
	g.Go(func() error {
		s.flushLoop(gctx)
		return nil
	})
	err = g.Wait()
	stop()
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	s.flush(final)
	s.snapshotAll(final)
	awaitDrained(final, s.stopResponders())
	s.owners.Close(final) // standbys take over at once
	return err
}

// fold applies results in stream order until ctx ends.
func (s *Service) fold(ctx context.Context, cons jetstream.Consumer, replayTo uint64) error {
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("archive: results: %w", err)
	}
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return fmt.Errorf("archive: results: %w", err)
			}
			s.log.Warn("results iterator", "err", err)
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			s.log.Warn("result without metadata", "subject", msg.Subject(), "err", err)
			continue
		}
		seq := md.Sequence.Stream
		var r protocol.Result
		if err := protocol.Decode(msg.Data(), &r); err != nil {
			s.log.Error("skipping undecodable result", "subject", msg.Subject(), "seq", seq, "err", err)
		} else if !s.isCaughtUp() {
			s.foldOne(ctx, &r, seq) // a replay: its candidates' traces ended long ago
		} else {
			fctx, span := s.tracer.Start(telemetry.Extract(ctx, msg.Headers()), "fold", trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(telemetry.MessagingSystem.String(telemetry.MessagingSystemNATS),
					telemetry.MessagingOperationType.String(telemetry.MessagingOpProcess), telemetry.MessagingDestinationName.String(msg.Subject()),
					telemetry.MessagingMessageID.String(r.ID), telemetry.Candidate.String(r.Candidate.ID), telemetry.Status.String(string(r.Status))))
			s.foldOne(fctx, &r, seq)
			span.End()
		}
		if seq >= replayTo && !s.isCaughtUp() {
			s.log.Info("replay done", "seq", seq)
			s.markCaughtUp(ctx)
		}
	}
}

func (s *Service) foldOne(ctx context.Context, r *protocol.Result, seq uint64) {
	run := r.Run
	if protocol.ValidateRunID(run) != nil {
		s.log.Error("skipping result with invalid run", "run", run, "seq", seq)
		return
	}
	pop := s.population(ctx, run)
	s.mu.Lock()
	out := pop.Fold(r, seq)
	var snap *snapshotJob
	owner := s.owner()
	if !out.Covered && !out.Duplicate {
		s.dirty[run] = true
		if s.since[run]++; owner && s.since[run] >= pop.CheckpointInterval() {
			snap = s.takeSnapshot(run, pop)
		}
	}
	if out.NewBest {
		s.newBest[run] = true
	}
	caughtUp := s.caughtUp
	s.mu.Unlock()
	if snap != nil {
		s.writer.enqueue(snap)
	}
	if caughtUp && owner && !out.Covered && !out.Duplicate {
		// The planner refills a run's tasks when its state moves: write it now, not on
		// the next tick.
		select {
		case s.flushNow <- struct{}{}:
		default:
		}
	}
	if out.Duplicate {
		s.log.Info("duplicate result ignored", "run", run, "candidate", r.Candidate.ID, "seq", seq)
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(telemetry.NewCell.Bool(out.NewCell), attribute.Bool("shoal.elite", out.Elite), telemetry.NewBest.Bool(out.NewBest),
			attribute.Bool("shoal.duplicate", out.Duplicate), attribute.Bool("shoal.covered", out.Covered), telemetry.Score.Float64(r.Score),
			attribute.Int("shoal.migrations", len(out.Migrations)), attribute.Bool("shoal.owner", owner))
	}
	if !caughtUp || !owner {
		return
	}
	// Counted by the owner alone, once caught up: standbys fold the same results, and a
	// replay folds results counted before.
	if !out.Covered && !out.Duplicate {
		s.metrics.folded(ctx, run, r.Status)
	}
	if out.NewBest && r.Status == protocol.StatusOK { // a failed seed is the best only for want of another
		s.event(ctx, run, protocol.EventNewBest, "new best program", r.Candidate.ID, r.Score)
	}
	for _, m := range out.Migrations {
		msg := fmt.Sprintf("island %d copied %d programs to islands %v", m.From, m.Programs, m.To)
		s.event(ctx, run, protocol.EventMigration, msg, r.Candidate.ID, 0)
	}
}

// population returns the run's population, creating it with the run's config (the default
// config when the run's spec cannot be read, so that no result is ever dropped).
func (s *Service) population(ctx context.Context, run string) *population.Population {
	s.mu.RLock()
	pop, ok := s.pops[run]
	s.mu.RUnlock()
	if ok {
		return pop
	}
	cfg := runconfig.Default()
	if spec, err := s.runs.Spec(ctx, run); err == nil {
		cfg = spec.Config
	} else {
		s.log.Warn("run spec unavailable; folding with default config", "run", run, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if pop, ok = s.pops[run]; !ok {
		pop = population.New(run, cfg)
		s.pops[run] = pop
	}
	return pop
}

func (s *Service) isCaughtUp() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.caughtUp
}

func (s *Service) markCaughtUp(ctx context.Context) {
	s.mu.Lock()
	s.caughtUp = true
	s.mu.Unlock()
	s.flush(ctx)
}

func (s *Service) flushLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.flushNow:
			s.flush(ctx)
		case <-t.C:
			s.syncOwnership(ctx)
			if s.isCaughtUp() {
				s.flush(ctx)
			}
		}
	}
}

// fleet names the archive's one ownership lease ("archive.all-runs" in the owners bucket).
const fleet = "all-runs"

// owner reports whether this replica owns the runs now.
func (s *Service) owner() bool { return s.owners.Owns(fleet) }

// syncOwnership acts on ownership changes: the new owner starts answering and writes every
// run's state in full (as a standby it folded without writing); a replica that lost the
// lease stops answering.
func (s *Service) syncOwnership(ctx context.Context) {
	switch owner := s.owner(); {
	case owner && s.responders == nil:
		sample, err := s.nc.QueueSubscribe(s.cfg.Names.AllSamples(), "archive", s.serveSample)
		if err != nil {
			s.log.Error("sample responder", "err", err)
			return
		}
		snap, err := s.nc.QueueSubscribe(s.cfg.Names.AllSnapshots(), "archive", func(m *nats.Msg) { s.serveSnapshot(ctx, m) })
		if err != nil {
			_ = sample.Unsubscribe()
			s.log.Error("snapshot responder", "err", err)
			return
		}
		s.responders = []*nats.Subscription{sample, snap}
		s.mu.Lock()
		for run := range s.pops {
			s.dirty[run], s.newBest[run] = true, true
		}
		s.mu.Unlock()
		s.log.Info("archive owns the runs", "id", s.cfg.ID)
	case !owner && s.responders != nil:
		s.stopResponders()
		s.log.Warn("archive lost ownership; standing by", "id", s.cfg.ID)
	}
}

// stopResponders drains the sample and snapshot subscriptions: requests in hand are still
// answered, none is taken after. It returns the subscriptions, whose drain goes on.
func (s *Service) stopResponders() []*nats.Subscription {
	subs := s.responders
	for _, sub := range subs {
		if err := sub.Drain(); err != nil {
			s.log.Warn("stop responder", "subject", sub.Subject, "err", err)
		}
	}
	s.responders = nil
	return subs
}

// awaitDrained waits, at most until ctx ends, for drained subscriptions to finish the
// requests in hand: a snapshot request writes the snapshots store, which must happen before
// Run returns and its caller closes the connection.
func awaitDrained(ctx context.Context, subs []*nats.Subscription) {
	for _, sub := range subs {
		for sub.IsValid() && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// flush writes the state (and the best program, when it changed) of every run folded since
// the last flush. Writes during replay are skipped: they would only repeat older values.
func (s *Service) flush(ctx context.Context) {
	type pending struct {
		state protocol.RunState
		best  *protocol.Program
	}
	owner := s.owner() // the owner writes; a standby writes everything if it takes over
	s.mu.Lock()
	var todo []pending
	for run := range s.dirty {
		if !owner {
			break
		}
		pop := s.pops[run]
		p := pending{state: pop.State()}
		if s.newBest[run] {
			if b, ok := pop.Best(); ok {
				p.best = &b
			}
		}
		todo = append(todo, p)
	}
	clear(s.dirty)
	clear(s.newBest)
	s.mu.Unlock()
	for _, p := range todo {
		run := p.state.Run
		if p.best != nil {
			name := ""
			if spec, err := s.runs.Spec(ctx, run); err == nil {
				name = spec.ProgramName
			}
			b := &protocol.BestProgram{Meta: protocol.Meta{ID: p.best.ID, Run: run}, Program: *p.best, ProgramName: name, UpdatedAt: time.Now().UTC()}
			if err := s.runs.PutBest(ctx, b); err != nil {
				s.log.Error("write best program", "run", run, "err", err)
			}
		}
		p.state.UpdatedAt = time.Now().UTC()
		if err := s.runs.PutState(ctx, &p.state); err != nil {
			s.log.Error("write run state", "run", run, "err", err)
			s.mu.Lock()
			s.dirty[run] = true
			s.mu.Unlock()
		}
	}
}

// serveSample answers the planner: a parent and inspirations for an island, and one more
// for each of the request's More (a refill's further tasks), in order, as many as fit in
// one reply.
func (s *Service) serveSample(msg *nats.Msg) {
	var req protocol.SampleRequest
	reply := protocol.SampleReply{}
	if err := protocol.Decode(msg.Data, &req); err != nil {
		reply.Error = err.Error()
	} else {
		reply.Run = req.Run
		s.mu.RLock()
		pop, ok := s.pops[req.Run]
		caughtUp := s.caughtUp
		var found bool
		if ok && caughtUp {
			var smp population.Sample
			if smp, found = pop.Sample(req.Island, req.NumInspirations, req.Seed); found {
				reply.Parent, reply.Top, reply.Inspirations, reply.Previous = smp.Parent, smp.Top, smp.Inspirations, smp.Previous
				reply.Seen = smp.Seen
				for _, w := range req.More {
					if smp, ok := pop.Sample(w.Island, req.NumInspirations, w.Seed); ok {
						reply.More = append(reply.More, protocol.Sample{Parent: smp.Parent, Top: smp.Top, Inspirations: smp.Inspirations, Previous: smp.Previous, Seen: smp.Seen})
					}
				}
			}
		}
		s.mu.RUnlock()
		switch {
		case !caughtUp:
			reply.Error = ErrReplaying.Error()
		case !found:
			reply.Error = fmt.Sprintf("run %q has no evaluated program yet", req.Run)
		}
	}
	data, err := encodeSampleReply(&reply, min(protocol.MaxBodyBytes, s.nc.MaxPayload()))
	if err != nil {
		s.log.Error("encode sample reply", "run", req.Run, "err", err)
		return
	}
	if err := msg.Respond(data); err != nil {
		s.log.Warn("sample reply", "run", req.Run, "err", err)
	}
}

// encodeSampleReply encodes reply in at most limit bytes, leaving out the last of its More
// samples until it fits: the planner asks again for those it did not get.
func encodeSampleReply(reply *protocol.SampleReply, limit int64) ([]byte, error) {
	for {
		data, err := protocol.Encode(reply)
		if err == nil && int64(len(data)) <= limit {
			return data, nil
		}
		if len(reply.More) == 0 {
			if err == nil {
				err = fmt.Errorf("sample reply of %d bytes over %d", len(data), limit)
			}
			return nil, err
		}
		reply.More = reply.More[:len(reply.More)/2]
	}
}

// event publishes a run event; events are for watchers, so a failure is logged, not fatal.
func (s *Service) event(ctx context.Context, run, kind, message, candidate string, score float64) {
	ev := &protocol.Event{Meta: protocol.Meta{Run: run}, Kind: kind, Message: message, CandidateID: candidate, Score: score}
	if err := natsx.PublishEvent(ctx, s.js, s.cfg.Names, ev); err != nil {
		s.log.Warn("publish event", "run", run, "kind", kind, "err", err)
	}
}
