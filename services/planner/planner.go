// Package planner paces every run: for each model of a run it keeps about
// concurrency × (1 + slack) tasks in flight, asks the archive for parents, renders prompts,
// publishes tasks, and stops the run at its budget (iterations, wall time) or target score.
//
// The planner keeps no state that matters in memory: what it issued is in the runs bucket and
// what was folded is in the archive's run state, so a restarted planner picks up where it was.
package planner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/services/planner/internal/prompt"
)

// Config configures a planner replica.
type Config struct {
	Names protocol.Names
	// ID names this replica; default the host name.
	ID string
	// Slack is the extra fraction of tasks kept in flight beyond the models' concurrency, so
	// a generator never waits for the planner; default 0.5.
	Slack float64
	// Tick is how often runs are re-planned; default 200ms.
	Tick time.Duration
	// SampleTimeout bounds one sample request to the archive; default 2s.
	SampleTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Names.Prefix == "" {
		c.Names = protocol.NewNames("")
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = "planner-" + host
	}
	if c.Slack <= 0 {
		c.Slack = 0.5
	}
	if c.Tick <= 0 {
		c.Tick = 200 * time.Millisecond
	}
	if c.SampleTimeout <= 0 {
		c.SampleTimeout = 2 * time.Second
	}
}

// Service is a planner replica.
type Service struct {
	cfg  Config
	nc   *nats.Conn
	js   jetstream.JetStream
	log  *slog.Logger
	runs *runs.Store

	plans  map[string]*protocol.PlannerState
	warned map[string]string // last problem logged per run, so a stuck run logs once
}

// New returns a planner replica; Run starts it.
func New(cfg Config, nc *nats.Conn, log *slog.Logger) (*Service, error) {
	cfg.setDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("planner: %w", err)
	}
	return &Service{cfg: cfg, nc: nc, js: js, log: log.With("service", "planner"),
		plans: map[string]*protocol.PlannerState{}, warned: map[string]string{}}, nil
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
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		ids, err := s.runs.List(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("list runs", "err", err)
		}
		for _, run := range ids {
			if err := s.planRun(ctx, run); err != nil && ctx.Err() == nil {
				s.warnOnce(run, "plan run", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Service) warnOnce(run, msg string, err error) {
	if s.warned[run] == err.Error() {
		return
	}
	s.warned[run] = err.Error()
	s.log.Warn(msg, "run", run, "err", err)
}

// planRun decides whether run stops, and otherwise tops up its tasks in flight.
func (s *Service) planRun(ctx context.Context, run string) error {
	pst, err := s.plannerState(ctx, run)
	if err != nil || pst.Status == protocol.RunDone {
		return err
	}
	spec, err := s.runs.Spec(ctx, run)
	if err != nil {
		return err
	}
	st, err := s.runs.State(ctx, run)
	if errors.Is(err, runs.ErrUnknownRun) {
		return nil // the seed is still being evaluated
	}
	if err != nil {
		return err
	}
	cfg := spec.Config
	if pst.Status == protocol.RunRunning {
		if reason := stopReason(cfg, pst, st); reason != "" {
			pst.Status, pst.StopReason = protocol.RunStopping, reason
			if err := s.save(ctx, pst); err != nil {
				return err
			}
			s.log.Info("run stopping", "run", run, "reason", reason)
			s.event(ctx, run, "stopping: "+reason)
		}
	}
	if pst.Status == protocol.RunStopping {
		if st.Iterations >= pst.Issued {
			pst.Status = protocol.RunDone
			if err := s.save(ctx, pst); err != nil {
				return err
			}
			s.log.Info("run done", "run", run, "iterations", st.Iterations, "best_score", st.BestScore)
			s.event(ctx, run, fmt.Sprintf("done: %s; %d iterations, best score %.6g", pst.StopReason, st.Iterations, st.BestScore))
		}
		return nil
	}
	return s.issue(ctx, spec, pst, st)
}

// stopReason says why a running run must stop, or "" to go on.
func stopReason(cfg *runconfig.Config, pst *protocol.PlannerState, st *protocol.RunState) string {
	switch {
	case cfg.MaxIterations > 0 && pst.Issued >= cfg.MaxIterations:
		return fmt.Sprintf("max_iterations (%d) reached", cfg.MaxIterations)
	case cfg.TargetScore != nil && st.BestID != "" && st.BestScore >= *cfg.TargetScore:
		return fmt.Sprintf("target_score %.6g reached", *cfg.TargetScore)
	case cfg.MaxWallTime > 0 && time.Since(pst.StartedAt) >= cfg.MaxWallTime:
		return fmt.Sprintf("max_wall_time (%s) reached", cfg.MaxWallTime)
	}
	return ""
}

// issue publishes tasks until each model has its share in flight or the budget is spent.
func (s *Service) issue(ctx context.Context, spec *runs.Spec, pst *protocol.PlannerState, st *protocol.RunState) error {
	cfg := spec.Config
	deficit := map[string]int64{}
	for _, m := range cfg.LLM.Models {
		want := int64(math.Ceil(float64(m.Concurrency) * (1 + s.cfg.Slack)))
		inFlight := max(pst.IssuedByModel[m.Name]-st.ByModel[m.Name], 0)
		if d := want - inFlight; d > 0 {
			deficit[m.Name] = d
		}
	}
	for len(deficit) > 0 && (cfg.MaxIterations <= 0 || pst.Issued < cfg.MaxIterations) {
		n := pst.Issued + 1
		model := pickModel(cfg, deficit, uint64(cfg.RandomSeed), uint64(n))
		if err := s.publishTask(ctx, spec, model, n); err != nil {
			return err
		}
		pst.Issued = n
		pst.IssuedByModel[model]++
		if err := s.save(ctx, pst); err != nil {
			return err
		}
		if deficit[model]--; deficit[model] == 0 {
			delete(deficit, model)
		}
	}
	delete(s.warned, spec.Run)
	return nil
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

func (s *Service) publishTask(ctx context.Context, spec *runs.Spec, model string, n int64) error {
	cfg := spec.Config
	taskSeed := cfg.RandomSeed*1_000_003 + n
	sample, err := s.sample(ctx, spec.Run, taskSeed, cfg.Prompt.NumTopPrograms+cfg.Prompt.NumDiversePrograms)
	if err != nil {
		return err
	}
	mode := protocol.ModeRewrite
	if cfg.DiffBasedEvolution {
		mode = protocol.ModeDiff
	}
	task := &protocol.Task{
		Meta:         protocol.Meta{ID: protocol.TaskID(spec.Run, n), Run: spec.Run},
		Model:        model,
		Iteration:    n,
		Island:       sample.Parent.Island,
		Mode:         mode,
		Language:     cfg.Language,
		Parent:       sample.Parent,
		Inspirations: append(append([]protocol.Program(nil), sample.Top...), sample.Inspirations...),
		Seed:         taskSeed,
		CreatedAt:    time.Now().UTC(),
	}
	task.Messages = prompt.Render(cfg, prompt.Inputs{Parent: sample.Parent, Top: sample.Top, Inspirations: sample.Inspirations, Mode: mode, Language: cfg.Language})
	if _, err := natsx.Publish(ctx, s.js, s.cfg.Names.Task(spec.Run, model), task.ID, task); err != nil {
		return err
	}
	return nil
}

// sample asks the archive for a parent and inspirations.
func (s *Service) sample(ctx context.Context, run string, seed int64, n int) (*protocol.SampleReply, error) {
	req := &protocol.SampleRequest{Meta: protocol.Meta{Run: run}, NumInspirations: n, Seed: seed}
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
	if pst.Status == "" {
		pst.Status, pst.StartedAt = protocol.RunRunning, time.Now().UTC()
		if err := s.save(ctx, pst); err != nil {
			return nil, err
		}
		s.log.Info("run started", "run", run)
	}
	s.plans[run] = pst
	return pst, nil
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
