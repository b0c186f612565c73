// Package planner paces every run: for each model of a run it keeps about
// sum(concurrency of the live generators serving it) × (1 + slack) tasks in flight, asks the
// archive for parents from the task's island, renders prompts, publishes tasks, obeys the
// user's pause, resume and extend, and stops the run at its budget (iterations, wall time),
// target score or plateau.
//
// The planner keeps no state that matters in memory: what it issued is in the runs bucket and
// what was folded is in the archive's run state, so a restarted planner picks up where it was.
// A refill's tasks are recorded in one write before any is published, and published again
// after a restart; their derived ids make those copies no-ops.
package planner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/shoal-run/shoal/pkg/leader"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/pkg/telemetry"
	"github.com/shoal-run/shoal/services/planner/internal/prompt"
)

// Config configures a planner replica.
type Config struct {
	Names protocol.Names
	// ID names this replica; default planner-<host>-<pid>.
	ID string
	// Slack is the extra fraction of tasks kept in flight beyond the models' concurrency, so
	// a generator never waits for the planner; default 0.5.
	Slack float64
	// Tick is how often every run is re-planned whatever happened, for wall-time budgets
	// and ownership changes; default 1s. A run is also planned as soon as its state or
	// control changes in the runs bucket.
	Tick time.Duration
	// SampleTimeout bounds one sample request to the archive; default 2s.
	SampleTimeout time.Duration
	// OwnerTTL is how long a dead replica keeps its runs: a standby takes each over within
	// it; default 5s.
	OwnerTTL time.Duration
	// Telemetry traces each task from its publish (the root span of its candidate's trace);
	// zero: off.
	Telemetry telemetry.Providers
}

func (c *Config) setDefaults() {
	if c.Names.Prefix == "" {
		c.Names = protocol.NewNames("")
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("planner-%s-%d", host, os.Getpid())
	}
	if c.OwnerTTL <= 0 {
		c.OwnerTTL = 5 * time.Second
	}
	if c.Slack <= 0 {
		c.Slack = 0.5
	}
	if c.Tick <= 0 {
		c.Tick = time.Second
	}
	if c.SampleTimeout <= 0 {
		c.SampleTimeout = 2 * time.Second
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

// Service is a planner replica.
type Service struct {
	cfg  Config
	nc   *nats.Conn
	js   jetstream.JetStream
	log  *slog.Logger
	runs *runs.Store

	plans      map[string]*protocol.PlannerState
	pending    map[string][]issued // tasks recorded in the runs bucket but not yet published, per run
	templates  map[string]*prompt.Templates
	generators map[string]protocol.Generator // the generators bucket, kept by a watch
	warned     map[string]string             // last problem logged per run, so a stuck run logs once
	// noArchive is when, per run, a sample first found no archive answering, until one does.
	noArchive map[string]time.Time
	// owners holds this replica's run ownership leases: only a run's owner plans it; the
	// other replicas are standbys for it. owning is what the loop last saw of each.
	owners *leader.Set
	owning map[string]bool
	// states and controls are the last values of <run>.state and <run>.control, kept by
	// the runs watch while it runs.
	states   map[string]*protocol.RunState
	controls map[string]*protocol.RunControl
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
		return nil, fmt.Errorf("planner: %w", err)
	}
	return &Service{cfg: cfg, nc: nc, js: js, log: log.With("service", "planner", "replica", cfg.ID),
		plans: map[string]*protocol.PlannerState{}, pending: map[string][]issued{}, templates: map[string]*prompt.Templates{},
		generators: map[string]protocol.Generator{}, warned: map[string]string{}, owning: map[string]bool{}, noArchive: map[string]time.Time{},
		states: map[string]*protocol.RunState{}, controls: map[string]*protocol.RunControl{}}, nil
}

// Run plans every run until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := natsx.Provision(ctx, s.js, s.cfg.Names); err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	store, err := runs.Open(ctx, s.js, s.cfg.Names)
	if err != nil {
		return fmt.Errorf("planner: %w", err)
	}
	s.runs = store
	gens, err := s.js.KeyValue(ctx, s.cfg.Names.GeneratorsBucket())
	if err != nil {
		return fmt.Errorf("planner: generators bucket: %w", err)
	}
	ownersKV, err := s.js.KeyValue(ctx, s.cfg.Names.OwnersBucket())
	if err != nil {
		return fmt.Errorf("planner: owners bucket: %w", err)
	}
	s.owners = leader.NewSet(ownersKV, "planner", s.cfg.ID, s.cfg.OwnerTTL, s.log)
	defer func() {
		// Released at once on the way out, so a standby need not wait out the TTL.
		final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		s.owners.Close(final)
	}()
	var gensWatch, runsWatch jetstream.KeyWatcher
	defer func() {
		for _, w := range []jetstream.KeyWatcher{gensWatch, runsWatch} {
			if w != nil {
				natsx.StopWatch(w)
			}
		}
	}()
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	known := map[string]bool{} // every run seen, by listing or by the runs watch
	listed := false            // known is complete since the runs watch started
	for {
		if gensWatch == nil {
			// The generators bucket is watched rather than listed each tick: pacing reads it
			// for every model of every run.
			if gensWatch, err = gens.WatchAll(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("watch generators", "err", err)
			}
		}
		if runsWatch == nil {
			// A run is planned again the moment the archive folds one of its results (its
			// state moves) or the user changes its control, so a freed slot is refilled at
			// once; the tick is only for clocks (wall-time budgets) and new owners.
			// What it carries is kept, so planning reads no key the watch delivered.
			clear(s.states)
			clear(s.controls)
			listed = false
			if runsWatch, err = s.runs.KV().WatchFiltered(ctx, []string{protocol.RunStateKey("*"), protocol.RunControlKey("*")},
				jetstream.UpdatesOnly()); err != nil && ctx.Err() == nil {
				s.log.Warn("watch runs", "err", err)
			}
		}
		if runsWatch == nil {
			clear(s.states) // nothing keeps them current: read the keys
			clear(s.controls)
		}
		if runsWatch == nil || !listed {
			// Listing the bucket costs the server a consumer: list when nothing else tells of
			// new runs, and once when the watch starts; after that its updates name them.
			ids, err := s.runs.List(ctx)
			if err != nil && ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
				s.log.Warn("list runs", "err", err)
			}
			for _, id := range ids {
				known[id] = true
			}
			listed = err == nil && runsWatch != nil
		}
		s.plan(ctx, slices.Sorted(maps.Keys(known)))
		var gensUpdates, runsUpdates <-chan jetstream.KeyValueEntry
		if gensWatch != nil {
			gensUpdates = gensWatch.Updates()
		}
		if runsWatch != nil {
			runsUpdates = runsWatch.Updates()
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case e, ok := <-gensUpdates:
				if !ok {
					gensWatch, gensUpdates = nil, nil // the watch ended (server restart): start another
					continue
				}
				s.noteGenerator(e)
			case e, ok := <-runsUpdates:
				if !ok {
					runsWatch = nil
					break wait
				}
				changed := s.changedRuns(e, runsUpdates)
				for _, id := range changed {
					known[id] = true
				}
				s.plan(ctx, changed)
			case <-t.C:
				break wait
			}
		}
	}
}

// changedRuns is the run of e and of every other update already waiting, each once, so a
// burst of folds plans each run once.
func (s *Service) changedRuns(e jetstream.KeyValueEntry, more <-chan jetstream.KeyValueEntry) []string {
	var ids []string
	add := func(e jetstream.KeyValueEntry) {
		if e == nil {
			return
		}
		run, key, ok := strings.Cut(e.Key(), ".")
		if !ok {
			return
		}
		s.remember(run, key, e)
		if !slices.Contains(ids, run) {
			ids = append(ids, run)
		}
	}
	add(e)
	for {
		select {
		case e, ok := <-more:
			if !ok {
				return ids
			}
			add(e)
		default:
			return ids
		}
	}
}

// remember keeps the state or control value a watch delivered for run; a value that does not
// decode is forgotten, so that planning reads the key itself.
func (s *Service) remember(run, key string, e jetstream.KeyValueEntry) {
	switch key {
	case "state":
		var st protocol.RunState
		if e.Operation() == jetstream.KeyValuePut && protocol.Decode(e.Value(), &st) == nil {
			s.states[run] = &st
		} else {
			delete(s.states, run)
		}
	case "control":
		var ctl protocol.RunControl
		if e.Operation() == jetstream.KeyValuePut && protocol.Decode(e.Value(), &ctl) == nil {
			s.controls[run] = &ctl
		} else {
			delete(s.controls, run)
		}
	}
}

// plan plans each of ids that this replica owns.
func (s *Service) plan(ctx context.Context, ids []string) {
	for _, run := range ids {
		if !s.owns(ctx, run) {
			continue
		}
		err := s.planRun(ctx, run)
		if !s.archiveStarting(run, err) && err != nil && ctx.Err() == nil {
			s.warnOnce(run, "plan run", err)
		}
	}
}

// archiveStarting reports whether err is no archive answering run's samples for less than
// three owner TTLs. An archive that starts with the planner (shoal up, a restart) answers once
// it has restored its snapshots and holds its lease, and a standby takes over within one TTL:
// the run is planned again on the next tick, and only an archive missing for longer is news.
func (s *Service) archiveStarting(run string, err error) bool {
	if !errors.Is(err, nats.ErrNoResponders) {
		delete(s.noArchive, run)
		return false
	}
	since, ok := s.noArchive[run]
	if !ok {
		since = time.Now()
		s.noArchive[run] = since
	}
	return time.Since(since) < 3*s.cfg.OwnerTTL
}

// owns campaigns for run and reports whether this replica plans it now. A change either way
// drops what this replica remembers of the run, so that it plans from the runs bucket, which
// the previous owner kept.
func (s *Service) owns(ctx context.Context, run string) bool {
	s.owners.Join(ctx, run)
	owns := s.owners.Owns(run)
	if owns != s.owning[run] {
		s.owning[run] = owns
		delete(s.plans, run)
		delete(s.pending, run)
		delete(s.states, run)
		delete(s.controls, run)
	}
	return owns
}

// noteGenerator keeps s.generators in step with the generators bucket.
func (s *Service) noteGenerator(e jetstream.KeyValueEntry) {
	if e == nil {
		return // the end of the initial values
	}
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.generators, e.Key())
		return
	}
	var g protocol.Generator
	if err := protocol.Decode(e.Value(), &g); err != nil {
		return // a body this build cannot read: that replica is not counted
	}
	s.generators[e.Key()] = g
}

func (s *Service) warnOnce(run, msg string, err error) {
	if s.warned[run] == err.Error() {
		return
	}
	s.warned[run] = err.Error()
	s.log.Warn(msg, "run", run, "err", err)
}

// planRun moves the run along (pause, resume, extension, stop, done) and tops up its tasks
// in flight while it runs.
func (s *Service) planRun(ctx context.Context, run string) error {
	pst, err := s.plannerState(ctx, run)
	if err != nil {
		return err
	}
	ctl, ok := s.controls[run]
	if !ok {
		if ctl, err = s.runs.Control(ctx, run); err != nil {
			return err
		}
		s.controls[run] = ctl
	}
	if pst.Status == protocol.RunDone && ctl.Extensions <= pst.Extensions || pst.Status == protocol.RunFailed {
		return nil // only an extension wakes a finished run; nothing wakes a failed one
	}
	spec, err := s.runs.Spec(ctx, run)
	if err != nil {
		return err
	}
	st, ok := s.states[run]
	if !ok {
		st, err = s.runs.State(ctx, run)
		if errors.Is(err, runs.ErrUnknownRun) {
			return nil // the seed is still being evaluated
		}
		if err != nil {
			return err
		}
		s.states[run] = st
	}
	if open, err := s.seedGate(ctx, pst, st); !open {
		return err
	}
	if tasks, ok := s.pending[run]; ok {
		if err := s.publishTasks(ctx, spec, tasks, nil); err != nil {
			return err
		}
		delete(s.pending, run)
	}
	if msg := step(spec.Config, pst, st, ctl, time.Now().UTC()); msg != "" {
		if err := s.save(ctx, pst); err != nil {
			return err
		}
		s.log.Info("run state", "run", run, "status", pst.Status, "change", msg, "iterations", st.Iterations, "best_score", st.BestScore)
		s.event(ctx, run, msg)
	}
	if pst.Status != protocol.RunRunning {
		return nil
	}
	return s.issue(ctx, spec, pst, st, ctl)
}

// step moves the run's planner state along after what the user asked (ctl) and what the
// archive folded (st). It returns a message for watchers when the state changed.
func step(cfg *runconfig.Config, pst *protocol.PlannerState, st *protocol.RunState, ctl *protocol.RunControl, now time.Time) string {
	var msgs []string
	if ctl.Extensions > pst.Extensions {
		pst.Extensions, pst.ResumedAt = ctl.Extensions, st.Iterations
		msg := fmt.Sprintf("extended to %s", describeBudget(cfg, ctl))
		if pst.Status == protocol.RunStopping || pst.Status == protocol.RunDone {
			if reason := stopReason(cfg, ctl, pst, st, now); reason != "" {
				msg += ", but " + reason
			} else {
				pst.Status, pst.StopReason, pst.RunningSince = protocol.RunRunning, "", now
				msg += ": running again"
			}
		}
		msgs = append(msgs, msg)
	}
	switch pst.Status {
	case protocol.RunRunning:
		if ctl.Paused {
			leaveRunning(pst, now)
			pst.Status = protocol.RunPaused
			msgs = append(msgs, "paused: tasks in flight finish, no new ones start")
		} else if reason := stopReason(cfg, ctl, pst, st, now); reason != "" {
			leaveRunning(pst, now)
			pst.Status, pst.StopReason = protocol.RunStopping, reason
			msgs = append(msgs, "stopping: "+reason)
		}
	case protocol.RunPaused:
		if !ctl.Paused {
			pst.Status, pst.RunningSince = protocol.RunRunning, now
			msgs = append(msgs, "resumed")
		}
	}
	if pst.Status == protocol.RunStopping && st.Iterations >= pst.Issued {
		pst.Status = protocol.RunDone
		msgs = append(msgs, fmt.Sprintf("done: %s; %d iterations, best score %.6g", pst.StopReason, st.Iterations, st.BestScore))
	}
	return strings.Join(msgs, "; ")
}

// leaveRunning banks the running time, so max_wall_time does not count time paused or
// stopped.
func leaveRunning(pst *protocol.PlannerState, now time.Time) {
	pst.RanFor += now.Sub(pst.RunningSince)
	pst.RunningSince = time.Time{}
}

// ranFor is the run's running time so far.
func ranFor(pst *protocol.PlannerState, now time.Time) time.Duration {
	if pst.Status == protocol.RunRunning && !pst.RunningSince.IsZero() {
		return pst.RanFor + now.Sub(pst.RunningSince)
	}
	return pst.RanFor
}

// maxIterations and maxWallTime are the config's budgets with the user's extensions; 0 is
// no limit, and stays so.
func maxIterations(cfg *runconfig.Config, ctl *protocol.RunControl) int64 {
	if cfg.MaxIterations <= 0 {
		return 0
	}
	return cfg.MaxIterations + ctl.ExtraIterations
}

func maxWallTime(cfg *runconfig.Config, ctl *protocol.RunControl) time.Duration {
	if cfg.MaxWallTime <= 0 {
		return 0
	}
	return cfg.MaxWallTime + ctl.ExtraWallTime
}

func describeBudget(cfg *runconfig.Config, ctl *protocol.RunControl) string {
	parts := []string{}
	if n := maxIterations(cfg, ctl); n > 0 {
		parts = append(parts, fmt.Sprintf("%d iterations", n))
	}
	if d := maxWallTime(cfg, ctl); d > 0 {
		parts = append(parts, "wall time "+d.String())
	}
	if len(parts) == 0 {
		return "no limit"
	}
	return strings.Join(parts, ", ")
}

// stopReason says why a running run must stop, or "" to go on.
func stopReason(cfg *runconfig.Config, ctl *protocol.RunControl, pst *protocol.PlannerState, st *protocol.RunState, now time.Time) string {
	maxIter, maxWall := maxIterations(cfg, ctl), maxWallTime(cfg, ctl)
	patience := int64(cfg.EarlyStoppingPatience)
	switch {
	case maxIter > 0 && pst.Issued >= maxIter:
		return fmt.Sprintf("max_iterations (%d) reached", maxIter)
	case cfg.TargetScore != nil && st.BestID != "" && st.BestScore >= *cfg.TargetScore:
		return fmt.Sprintf("target_score %.6g reached", *cfg.TargetScore)
	case maxWall > 0 && ranFor(pst, now) >= maxWall:
		return fmt.Sprintf("max_wall_time (%s) reached", maxWall)
	case patience > 0 && st.Iterations-max(st.LastImprovement, pst.ResumedAt) >= patience:
		// An extension restarts the plateau clock at ResumedAt, so an extended run gets a
		// fresh window of early_stopping_patience iterations.
		return fmt.Sprintf("plateau: %s did not improve by more than %g in %d iterations (early_stopping_patience)",
			cfg.EarlyStoppingMetric, cfg.ConvergenceThreshold, st.Iterations-max(st.LastImprovement, pst.ResumedAt))
	}
	return ""
}

// maxRefill bounds the tasks of one refill round: one write-ahead record, one sample request
// and one wait for the acks of their publishes.
const maxRefill = 64

// issued is a task recorded in the runs bucket: its number and model.
type issued struct {
	n     int64
	model string
}

// issue publishes tasks until the models have their share in flight (picker) or the budget
// is spent. A refill's tasks are recorded in the runs bucket in one write before any of them
// is published (see pending), their samples are asked for in one request while that write is
// made, and they are published together, each publish acknowledged by JetStream: three
// round trips per refill whatever its size (two one after the other), rather than per task.
func (s *Service) issue(ctx context.Context, spec *runs.Spec, pst *protocol.PlannerState, st *protocol.RunState, ctl *protocol.RunControl) error {
	cfg := spec.Config
	now := time.Now()
	gens := slices.Collect(maps.Values(s.generators))
	picks := newPicker(cfg, gens, pst, st, s.cfg.Slack, now)
	maxIter := maxIterations(cfg, ctl)
	for maxIter <= 0 || pst.Issued < maxIter {
		var tasks []issued
		for (maxIter <= 0 || pst.Issued < maxIter) && len(tasks) < maxRefill {
			n := pst.Issued + 1
			model, ok := picks.next(uint64(cfg.RandomSeed), uint64(n))
			if !ok {
				break
			}
			pst.Issued, pst.LastModel = n, model
			pst.IssuedByModel[model]++
			tasks = append(tasks, issued{n, model})
		}
		if len(tasks) == 0 {
			break
		}
		pst.LastModels = pst.LastModels[:0]
		for _, t := range tasks {
			pst.LastModels = append(pst.LastModels, t.model)
		}
		// The archive picks the parents while the tasks are recorded: two round trips at
		// once instead of one after the other.
		sampled := make(chan sampleResult, 1)
		go func() {
			r, err := s.samplesFor(ctx, spec, tasks)
			sampled <- sampleResult{r, err}
		}()
		if err := s.save(ctx, pst); err != nil {
			<-sampled
			// Whether the record was written is unknown: read it back on the next plan,
			// which publishes its tasks if it was.
			delete(s.plans, spec.Run)
			return err
		}
		s.pending[spec.Run] = tasks
		smp := <-sampled
		if smp.err != nil {
			return smp.err // published again on the next plan
		}
		if err := s.publishTasks(ctx, spec, tasks, smp.samples); err != nil {
			return err
		}
		delete(s.pending, spec.Run)
	}
	delete(s.warned, spec.Run)
	return nil
}

// generatorAlive is how stale a generator's entry may be before the planner stops counting
// it: three of the generators' 5 s heartbeats.
const generatorAlive = 15 * time.Second

// inFlightTarget is how many tasks of model m the planner keeps in flight: the concurrency of
// the live generators serving m (each bounded by the model's own concurrency, which caps a
// replica's requests to it) times 1 + slack, or the model's concurrency when no generator has
// registered yet.
func inFlightTarget(m runconfig.Model, gens []protocol.Generator, slack float64, now time.Time) int64 {
	total := 0
	for _, g := range gens {
		if !g.Serves(m.Name) || now.Sub(g.UpdatedAt) > generatorAlive {
			continue
		}
		c := g.Concurrency
		if m.Concurrency > 0 {
			c = min(c, m.Concurrency)
		}
		total += max(c, 0)
	}
	if total == 0 {
		total = max(m.Concurrency, 1)
	}
	return int64(math.Ceil(float64(total) * (1 + slack)))
}

// pickModel draws a model with a deficit, in proportion to the models' weights.
func pickModel(cfg *runconfig.Config, deficit map[string]int64, seed, n uint64) string {
	rng := rand.New(rand.NewPCG(seed, n))
	var total float64
	for _, m := range cfg.LLM.Models {
		if deficit[m.Name] > 0 {
			total += m.Weight
		}
	}
	r := rng.Float64() * total
	last := ""
	for _, m := range cfg.LLM.Models {
		if deficit[m.Name] <= 0 {
			continue
		}
		last = m.Name
		if r -= m.Weight; r < 0 {
			return m.Name
		}
	}
	return last
}

type sampleResult struct {
	samples []protocol.Sample
	err     error
}

// samplesFor asks the archive for the parent and inspirations of each task, each from its
// island, in as few requests as the archive's replies allow (one, unless the samples do not
// fit in one reply).
func (s *Service) samplesFor(ctx context.Context, spec *runs.Spec, tasks []issued) ([]protocol.Sample, error) {
	cfg := spec.Config
	var out []protocol.Sample
	for len(out) < len(tasks) {
		rest := tasks[len(out):]
		req := &protocol.SampleRequest{Meta: protocol.Meta{Run: spec.Run}, Island: islandOf(rest[0].n, cfg.Database.NumIslands),
			NumInspirations: cfg.Prompt.NumTopPrograms + cfg.Prompt.NumDiversePrograms, Seed: taskSeed(cfg, rest[0].n)}
		for _, t := range rest[1:] {
			req.More = append(req.More, protocol.SampleWant{Island: islandOf(t.n, cfg.Database.NumIslands), Seed: taskSeed(cfg, t.n)})
		}
		reply, err := s.sample(ctx, req)
		if err != nil {
			return nil, err
		}
		got := reply.Samples()
		out = append(out, got[:min(len(got), len(rest))]...)
	}
	return out, nil
}

func taskSeed(cfg *runconfig.Config, n int64) int64 { return cfg.RandomSeed*1_000_003 + n }

// publishTasks publishes tasks with their samples (asked for now when there are fewer
// samples than tasks), all at once, and returns when JetStream has acknowledged every one.
// Publishing a task twice is harmless: its id is derived from (run, n), so JetStream drops
// the copy.
func (s *Service) publishTasks(ctx context.Context, spec *runs.Spec, tasks []issued, samples []protocol.Sample) error {
	if len(samples) < len(tasks) {
		more, err := s.samplesFor(ctx, spec, tasks[len(samples):])
		if err != nil {
			return err
		}
		samples = append(samples[:len(samples):len(samples)], more...)
	}
	msgs := make([]natsx.Outgoing, len(tasks))
	spans := make([]trace.Span, len(tasks))
	for i, t := range tasks {
		task := s.task(ctx, spec, t, &samples[i])
		// One candidate is one trace: it starts here, whatever span ctx holds, and its
		// traceparent rides in the task's headers.
		tctx, span := s.cfg.Telemetry.Tracer().Start(ctx, "plan task", trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindProducer),
			trace.WithAttributes(telemetry.Run.String(spec.Run), telemetry.Task.String(task.ID), telemetry.GenAIRequestModel.String(t.model)))
		spans[i] = span
		msgs[i] = natsx.Outgoing{Subject: s.cfg.Names.Task(spec.Run, t.model), ID: task.ID, Body: task, Header: telemetry.Inject(tctx, nil)}
	}
	err := natsx.PublishAll(ctx, s.js, msgs)
	for _, span := range spans {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "task not published")
		}
		span.End()
	}
	return err
}

// task is task t of the run with its sample.
func (s *Service) task(ctx context.Context, spec *runs.Spec, t issued, sample *protocol.Sample) *protocol.Task {
	cfg := spec.Config
	task := &protocol.Task{
		Meta:      protocol.Meta{ID: protocol.TaskID(spec.Run, t.n), Run: spec.Run},
		Model:     t.model,
		Iteration: t.n,
		Island:    islandOf(t.n, cfg.Database.NumIslands),
		// The parent's code is what an edit applies to; its metrics and artifacts are in
		// the prompt already.
		Parent:    protocol.Program{ID: sample.Parent.ID, Code: sample.Parent.Code, Generation: sample.Parent.Generation, Island: sample.Parent.Island},
		Seed:      taskSeed(cfg, t.n),
		CreatedAt: time.Now().UTC(),
	}
	if cfg.Database.NoveltyThreshold > 0 {
		task.Seen = sample.Seen // the generator skips a child too like one of these
	}
	task.SetDefaults(cfg.DiffBasedEvolution, cfg.Language)
	// A task carries what its backend reads, no more: every stage decodes it, and programs
	// and artifacts make up most of a prompt. The mutate backend reads the inspirations'
	// code and no prompt; a model reads the prompt, which holds the inspirations already.
	if m, ok := cfg.ModelByName(t.model); ok && m.Backend == runconfig.BackendMutate {
		for _, p := range append(append([]protocol.Program(nil), sample.Top...), sample.Inspirations...) {
			task.Inspirations = append(task.Inspirations, protocol.Program{ID: p.ID, Code: p.Code})
		}
	} else {
		task.Messages = prompt.Render(cfg, s.templatesOf(ctx, spec), prompt.Inputs{Parent: sample.Parent, Top: sample.Top,
			Inspirations: sample.Inspirations, Previous: sample.Previous, Mode: task.Mode, Language: task.Language})
	}
	return task
}

// islandOf is the island task n samples from: tasks go round the islands in turn.
func islandOf(n int64, islands int) int {
	if islands <= 1 || n < 1 {
		return 0
	}
	return int((n - 1) % int64(islands))
}

// templatesOf returns the run's parsed prompt templates. Templates that do not parse (shoal
// seed checks them, so only a hand-made seed gets here) give way to the defaults, with one
// error event for the run.
func (s *Service) templatesOf(ctx context.Context, spec *runs.Spec) *prompt.Templates {
	if t, ok := s.templates[spec.Run]; ok {
		return t
	}
	t, err := prompt.New(spec.Templates)
	if err != nil {
		s.log.Error("run templates", "run", spec.Run, "err", err)
		ev := &protocol.Event{Meta: protocol.Meta{Run: spec.Run}, Kind: protocol.EventError, Message: "prompt templates: " + err.Error() + "; using the defaults"}
		if perr := natsx.PublishEvent(ctx, s.js, s.cfg.Names, ev); perr != nil {
			s.log.Warn("publish event", "run", spec.Run, "err", perr)
		}
		t, _ = prompt.New(nil)
	}
	s.templates[spec.Run] = t
	return t
}

// sample sends one sample request to the archive.
func (s *Service) sample(ctx context.Context, req *protocol.SampleRequest) (*protocol.SampleReply, error) {
	run := req.Run
	data, err := protocol.Encode(req)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.SampleTimeout)
	defer cancel()
	msg, err := s.nc.RequestWithContext(rctx, s.cfg.Names.Sample(run), data)
	if err != nil {
		return nil, fmt.Errorf("sample run %s: %w", run, err)
	}
	var reply protocol.SampleReply
	if err := protocol.Decode(msg.Data, &reply); err != nil {
		return nil, fmt.Errorf("sample run %s: %w", run, err)
	}
	if reply.Error != "" {
		return nil, fmt.Errorf("sample run %s: archive: %s", run, reply.Error)
	}
	return &reply, nil
}

// plannerState returns the run's planner state, read from the runs bucket on first sight so a
// restarted planner continues the count it left.
func (s *Service) plannerState(ctx context.Context, run string) (*protocol.PlannerState, error) {
	if pst, ok := s.plans[run]; ok {
		return pst, nil
	}
	pst, err := s.runs.Planner(ctx, run)
	if err != nil {
		return nil, err
	}
	if pst.IssuedByModel == nil {
		pst.IssuedByModel = map[string]int64{}
	}
	switch {
	case pst.Status == "":
		now := time.Now().UTC()
		pst.Status, pst.StartedAt, pst.RunningSince = protocol.RunRunning, now, now
		if err := s.save(ctx, pst); err != nil {
			return nil, err
		}
		s.log.Info("run started", "run", run)
	case pst.Status == protocol.RunRunning && pst.RunningSince.IsZero():
		pst.RunningSince = pst.StartedAt // written by a planner that kept no running time
	}
	if tasks := recorded(pst); len(tasks) > 0 && pst.Status != protocol.RunDone {
		// The last refill may have been recorded and never published: publish it again.
		s.pending[run] = tasks
	}
	s.plans[run] = pst
	return pst, nil
}

// recorded is the last refill the planner state records: tasks Issued-len(LastModels)+1 to
// Issued, or task Issued alone as a planner that recorded one task at a time wrote it.
func recorded(pst *protocol.PlannerState) []issued {
	if pst.Issued <= 0 {
		return nil
	}
	if k := int64(len(pst.LastModels)); k > 0 && k <= pst.Issued {
		tasks := make([]issued, k)
		for i, m := range pst.LastModels {
			tasks[i] = issued{pst.Issued - k + 1 + int64(i), m}
		}
		return tasks
	}
	if pst.LastModel != "" {
		return []issued{{pst.Issued, pst.LastModel}}
	}
	return nil
}

func (s *Service) save(ctx context.Context, pst *protocol.PlannerState) error {
	pst.ID = pst.Run
	pst.UpdatedAt = time.Now().UTC()
	return s.runs.PutPlanner(ctx, pst)
}

func (s *Service) event(ctx context.Context, run, message string) {
	ev := &protocol.Event{Meta: protocol.Meta{Run: run}, Kind: protocol.EventRunState, Message: message}
	if err := natsx.PublishEvent(ctx, s.js, s.cfg.Names, ev); err != nil {
		s.log.Warn("publish event", "run", run, "err", err)
	}
}
