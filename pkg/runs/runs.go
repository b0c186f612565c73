// Package runs reads and writes a run's records in the runs KV bucket: its spec (config and
// evaluator bundle, written once when the run is seeded), the archive's state and the
// planner's state. Specs are cached, since they never change once written.
package runs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// ErrUnknownRun: no spec was ever written for the run.
var ErrUnknownRun = errors.New("unknown run")

// Spec is a run's seeded spec together with its parsed config.
type Spec struct {
	protocol.RunSpec
	Config *runconfig.Config
}

// Store is the runs bucket.
type Store struct {
	kv jetstream.KeyValue

	mu    sync.Mutex
	specs map[string]*Spec
}

// Open binds the runs bucket (provisioned by natsx.Provision).
func Open(ctx context.Context, js jetstream.JetStream, names protocol.Names) (*Store, error) {
	kv, err := js.KeyValue(ctx, names.RunsBucket())
	if err != nil {
		return nil, fmt.Errorf("open runs bucket: %w", err)
	}
	return &Store{kv: kv, specs: map[string]*Spec{}}, nil
}

// KV exposes the bucket for watchers.
func (s *Store) KV() jetstream.KeyValue { return s.kv }

// Spec returns the run's spec and parsed config; ErrUnknownRun if it was never seeded.
func (s *Store) Spec(ctx context.Context, run string) (*Spec, error) {
	s.mu.Lock()
	sp, ok := s.specs[run]
	s.mu.Unlock()
	if ok {
		return sp, nil
	}
	var rs protocol.RunSpec
	if _, err := natsx.GetJSON(ctx, s.kv, protocol.RunConfigKey(run), &rs); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w %q", ErrUnknownRun, run)
		}
		return nil, err
	}
	cfg, _, err := runconfig.Parse([]byte(rs.Config))
	if err != nil {
		return nil, fmt.Errorf("run %s config: %w", run, err)
	}
	sp = &Spec{RunSpec: rs, Config: cfg}
	s.mu.Lock()
	s.specs[run] = sp
	s.mu.Unlock()
	return sp, nil
}

// Seeded reports whether run was ever seeded (its spec is in the bucket), whether or not its
// config still parses: a run nobody seeded has no accounting for a failure to complete.
func (s *Store) Seeded(ctx context.Context, run string) (bool, error) {
	s.mu.Lock()
	_, ok := s.specs[run]
	s.mu.Unlock()
	if ok {
		return true, nil
	}
	_, err := s.kv.Get(ctx, protocol.RunConfigKey(run))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("run %s: %w", run, err)
	}
	return true, nil
}

// CreateSpec writes a run's spec once. It returns false when the run already exists, whatever
// its spec: a run's config never changes under it.
func (s *Store) CreateSpec(ctx context.Context, rs *protocol.RunSpec) (bool, error) {
	data, err := protocol.Encode(rs)
	if err != nil {
		return false, err
	}
	if _, err := s.kv.Create(ctx, protocol.RunConfigKey(rs.Run), data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil
		}
		return false, fmt.Errorf("create run %s: %w", rs.Run, err)
	}
	return true, nil
}

// State returns the archive's state of the run; ErrUnknownRun if none was written yet.
func (s *Store) State(ctx context.Context, run string) (*protocol.RunState, error) {
	var st protocol.RunState
	if _, err := natsx.GetJSON(ctx, s.kv, protocol.RunStateKey(run), &st); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w %q: no state yet", ErrUnknownRun, run)
		}
		return nil, err
	}
	return &st, nil
}

// PutState writes the archive's state of the run.
func (s *Store) PutState(ctx context.Context, st *protocol.RunState) error {
	_, err := natsx.PutJSON(ctx, s.kv, protocol.RunStateKey(st.Run), st)
	return err
}

// Planner returns the planner's state of the run, or a zero state if none was written yet.
func (s *Store) Planner(ctx context.Context, run string) (*protocol.PlannerState, error) {
	st := protocol.PlannerState{Meta: protocol.Meta{Run: run}}
	if _, err := natsx.GetJSON(ctx, s.kv, protocol.RunPlannerKey(run), &st); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, err
	}
	return &st, nil
}

// PutPlanner writes the planner's state of the run.
func (s *Store) PutPlanner(ctx context.Context, st *protocol.PlannerState) error {
	_, err := natsx.PutJSON(ctx, s.kv, protocol.RunPlannerKey(st.Run), st)
	return err
}

// Best returns the best program of the run; ErrUnknownRun if none was folded yet.
func (s *Store) Best(ctx context.Context, run string) (*protocol.BestProgram, error) {
	var b protocol.BestProgram
	if _, err := natsx.GetJSON(ctx, s.kv, protocol.RunBestKey(run), &b); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w %q: no program evaluated yet", ErrUnknownRun, run)
		}
		return nil, err
	}
	return &b, nil
}

// PutBest writes the best program of the run.
func (s *Store) PutBest(ctx context.Context, b *protocol.BestProgram) error {
	_, err := natsx.PutJSON(ctx, s.kv, protocol.RunBestKey(b.Run), b)
	return err
}

// List returns the ids of every seeded run, sorted.
func (s *Store) List(ctx context.Context) ([]string, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	var ids []string
	for k := range lister.Keys() {
		if run, ok := strings.CutSuffix(k, ".config"); ok {
			ids = append(ids, run)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Control returns the user's control of the run, or a zero control (running, no extension)
// if none was written.
func (s *Store) Control(ctx context.Context, run string) (*protocol.RunControl, error) {
	c := protocol.RunControl{Meta: protocol.Meta{ID: run, Run: run}}
	if _, err := natsx.GetJSON(ctx, s.kv, protocol.RunControlKey(run), &c); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, err
	}
	return &c, nil
}

// UpdateControl applies change to the run's control with compare-and-set, retrying when
// another writer got there first, so that two `shoal run extend` at once both count.
func (s *Store) UpdateControl(ctx context.Context, run string, change func(*protocol.RunControl)) (*protocol.RunControl, error) {
	for {
		c := protocol.RunControl{Meta: protocol.Meta{ID: run, Run: run}}
		rev, err := natsx.GetJSON(ctx, s.kv, protocol.RunControlKey(run), &c)
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, err
		}
		change(&c)
		c.ID, c.Run, c.UpdatedAt = run, run, time.Now().UTC()
		data, err := protocol.Encode(&c)
		if err != nil {
			return nil, err
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, protocol.RunControlKey(run), data)
		} else {
			_, err = s.kv.Update(ctx, protocol.RunControlKey(run), data, rev)
		}
		if err == nil {
			return &c, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, fmt.Errorf("control run %s: %w", run, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}
