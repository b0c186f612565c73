package runs_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
)

func TestMain(m *testing.M) { natstest.Main(m) }

var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func openStore(t *testing.T) (*runs.Store, context.Context) {
	t.Helper()
	env := natstest.StartTestEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	s, err := runs.Open(ctx, env.JS, env.Names)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s, ctx
}

func spec(run, config string) *protocol.RunSpec {
	return &protocol.RunSpec{Meta: protocol.Meta{ID: run, Run: run}, Config: config, ConfigDigest: "sha256-c",
		BundleDigest: "sha256-b", ProgramName: "initial_program.py", CreatedAt: now}
}

// TestSpec: a run's spec is written once, and its config never changes under a reader.
func TestSpec(t *testing.T) {
	s, ctx := openStore(t)

	created, err := s.CreateSpec(ctx, spec("r1", "max_iterations: 5\n"))
	if err != nil || !created {
		t.Fatalf("first CreateSpec = %v, %v; want true, nil", created, err)
	}
	created, err = s.CreateSpec(ctx, spec("r1", "max_iterations: 50\n"))
	if err != nil || created {
		t.Fatalf("second CreateSpec = %v, %v; want false, nil", created, err)
	}

	sp, err := s.Spec(ctx, "r1")
	if err != nil {
		t.Fatalf("Spec: %v", err)
	}
	want := spec("r1", "max_iterations: 5\n")
	want.V = protocol.Version
	if !reflect.DeepEqual(sp.RunSpec, *want) {
		t.Errorf("Spec = %+v, want %+v (the first spec written)", sp.RunSpec, *want)
	}
	if sp.Config == nil || sp.Config.MaxIterations != 5 {
		t.Fatalf("Spec config = %+v, want MaxIterations 5", sp.Config)
	}

	// Even if the key is overwritten behind the store's back, a reader keeps the spec it saw.
	if _, err := s.KV().Put(ctx, protocol.RunConfigKey("r1"), []byte("garbage")); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	again, err := s.Spec(ctx, "r1")
	if err != nil || again != sp {
		t.Errorf("Spec after overwrite = %p, %v; want the cached %p", again, err, sp)
	}

	tests := []struct {
		name, run, config string
		wantUnknown       bool
	}{
		{"unknown run", "nope", "", true},
		{"config a parser rejects", "bad", "max_iterations: [1]\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.config != "" {
				if _, err := s.CreateSpec(ctx, spec(tt.run, tt.config)); err != nil {
					t.Fatalf("CreateSpec: %v", err)
				}
			}
			sp, err := s.Spec(ctx, tt.run)
			if err == nil {
				t.Fatalf("Spec(%s) = %+v, want an error", tt.run, sp)
			}
			if got := errors.Is(err, runs.ErrUnknownRun); got != tt.wantUnknown {
				t.Errorf("Spec(%s) = %v; errors.Is(ErrUnknownRun) = %v, want %v", tt.run, err, got, tt.wantUnknown)
			}
		})
	}
}

func TestRecords(t *testing.T) {
	s, ctx := openStore(t)
	state := &protocol.RunState{Meta: protocol.Meta{ID: "r1", Run: "r1"}, Iterations: 7, ByModel: map[string]int64{"m": 7},
		Seeds: 1, Failed: 2, Population: 6, BestID: "c.r1.t5", BestScore: 0.8, SeedScore: 0.1, LastSeq: 9, UpdatedAt: now}
	planner := &protocol.PlannerState{Meta: protocol.Meta{ID: "r1", Run: "r1"}, Status: protocol.RunStopping,
		StopReason: "max_iterations", Issued: 7, IssuedByModel: map[string]int64{"m": 7}, StartedAt: now, UpdatedAt: now.Add(time.Minute)}
	best := &protocol.BestProgram{Meta: protocol.Meta{ID: "r1", Run: "r1"}, ProgramName: "initial_program.py", UpdatedAt: now,
		Program: protocol.Program{ID: "c.r1.t5", Code: "print(2)", Score: 0.8, Status: protocol.StatusOK, Metrics: map[string]float64{"s": 0.8}}}

	tests := []struct {
		name        string
		get         func(run string) (any, error)
		put         func() error
		want        any
		absent      any  // what get returns before put; nil: an error
		absentIsErr bool // the error before put wraps ErrUnknownRun
	}{
		{"state", func(run string) (any, error) { return s.State(ctx, run) }, func() error { return s.PutState(ctx, state) }, state, nil, true},
		{"planner", func(run string) (any, error) { return s.Planner(ctx, run) }, func() error { return s.PutPlanner(ctx, planner) }, planner,
			&protocol.PlannerState{Meta: protocol.Meta{Run: "r1"}}, false},
		{"best", func(run string) (any, error) { return s.Best(ctx, run) }, func() error { return s.PutBest(ctx, best) }, best, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.get("r1")
			switch {
			case tt.absentIsErr && !errors.Is(err, runs.ErrUnknownRun):
				t.Errorf("before any write: %+v, %v; want an error wrapping ErrUnknownRun", got, err)
			case !tt.absentIsErr && (err != nil || !reflect.DeepEqual(got, tt.absent)):
				t.Errorf("before any write: %+v, %v; want %+v, nil", got, err, tt.absent)
			}
			if err := tt.put(); err != nil {
				t.Fatalf("put: %v", err)
			}
			got, err = tt.get("r1")
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestList(t *testing.T) {
	s, ctx := openStore(t)
	t.Run("empty bucket", func(t *testing.T) {
		ids, err := s.List(ctx)
		if err != nil || len(ids) != 0 {
			t.Errorf("List = %q, %v; want none, nil", ids, err)
		}
	})
	for _, run := range []string{"b-run", "a-run", "c-run"} {
		if _, err := s.CreateSpec(ctx, spec(run, "max_iterations: 5\n")); err != nil {
			t.Fatalf("CreateSpec(%s): %v", run, err)
		}
	}
	for _, run := range []string{"a-run", "d-run"} { // d-run has state but was never seeded
		if err := s.PutState(ctx, &protocol.RunState{Meta: protocol.Meta{Run: run}}); err != nil {
			t.Fatalf("PutState: %v", err)
		}
		if err := s.PutPlanner(ctx, &protocol.PlannerState{Meta: protocol.Meta{Run: run}}); err != nil {
			t.Fatalf("PutPlanner: %v", err)
		}
		if err := s.PutBest(ctx, &protocol.BestProgram{Meta: protocol.Meta{Run: run}}); err != nil {
			t.Fatalf("PutBest: %v", err)
		}
	}
	t.Run("seeded runs", func(t *testing.T) {
		ids, err := s.List(ctx)
		if want := []string{"a-run", "b-run", "c-run"}; err != nil || !reflect.DeepEqual(ids, want) {
			t.Errorf("List = %q, %v; want %q, nil", ids, err, want)
		}
	})
}

// TestUpdateControl: writers of a run's control (two `shoal run extend` at once) never lose
// each other's change.
func TestUpdateControl(t *testing.T) {
	s, ctx := openStore(t)
	c, err := s.Control(ctx, "r1")
	if err != nil || c.Paused || c.Extensions != 0 {
		t.Fatalf("control of a run nobody steered = %+v, %v; want zero", c, err)
	}
	const writers = 8
	errs := make(chan error, writers)
	for range writers {
		go func() {
			_, err := s.UpdateControl(ctx, "r1", func(c *protocol.RunControl) {
				c.ExtraIterations += 10
				c.Extensions++
			})
			errs <- err
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.UpdateControl(ctx, "r1", func(c *protocol.RunControl) { c.Paused = true }); err != nil {
		t.Fatal(err)
	}
	c, err = s.Control(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if c.ExtraIterations != 10*writers || c.Extensions != writers || !c.Paused || c.Run != "r1" {
		t.Errorf("control = %+v; want %d extra iterations from %d extensions, paused", c, 10*writers, writers)
	}
}
