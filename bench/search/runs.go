package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	standinpkg "github.com/shoal-run/shoal/deploy/standin"
	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/services/generator"
)

// problem is an example in OpenEvolve's layout.
type problem struct {
	name    string
	dir     string
	config  map[string]any
	program string
}

func loadProblem(name, dir string) (*problem, error) {
	text, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
	if err != nil {
		return nil, fmt.Errorf("problem %s: %w", name, err)
	}
	cfg := map[string]any{}
	if err := yaml.Unmarshal(text, &cfg); err != nil {
		return nil, fmt.Errorf("problem %s config: %w", name, err)
	}
	prog, err := os.ReadFile(filepath.Join(dir, "initial_program.py"))
	if err != nil {
		return nil, fmt.Errorf("problem %s: %w", name, err)
	}
	return &problem{name: name, dir: dir, config: cfg, program: string(prog)}, nil
}

// modelConfig is the one model of a run: the mutate backend, or the openai backend at
// apiBase (the stand-in).
type modelConfig struct {
	backend     string
	apiBase     string
	concurrency int
}

// dbOverride replaces the problem's database settings where a field is above 0.
type dbOverride struct {
	islands, population, migrationInterval int
}

// configFor is the problem's config with the budget, seed, model and database of one run.
// The model is shoal's mutate backend or the in-process stand-in, so the comparison never
// depends on a model endpoint outside the benchmark.
func (p *problem) configFor(spec runSpec) ([]byte, error) {
	doc := map[string]any{}
	for k, v := range p.config {
		doc[k] = v
	}
	doc["max_iterations"] = spec.evals
	doc["random_seed"] = spec.seed
	llm, _ := doc["llm"].(map[string]any)
	merged := map[string]any{}
	for k, v := range llm {
		merged[k] = v
	}
	model := map[string]any{"name": "mutate", "backend": "mutate", "concurrency": cmp.Or(spec.model.concurrency, 4)}
	if spec.model.backend == "openai" {
		model = map[string]any{"name": "standin", "backend": "openai", "api_base": spec.model.apiBase,
			"concurrency": cmp.Or(spec.model.concurrency, 4)}
	}
	merged["models"] = []any{model}
	doc["llm"] = merged
	db, _ := doc["database"].(map[string]any)
	mergedDB := map[string]any{}
	for k, v := range db {
		mergedDB[k] = v
	}
	for key, v := range map[string]int{"num_islands": spec.db.islands, "population_size": spec.db.population,
		"migration_interval": spec.db.migrationInterval} {
		if v > 0 {
			mergedDB[key] = v
		}
	}
	doc["database"] = mergedDB
	return yaml.Marshal(doc)
}

// standinConfig is the perturb stand-in of issue 16: one numeric literal of the current
// program moved by a Gaussian step, as a SEARCH/REPLACE edit, with no latency.
func standinConfig(step float64) standinpkg.Config {
	return standinpkg.Config{Model: "standin", Slots: 64, Mode: "perturb", Step: step}
}

// startStandin serves the stand-in on a free local port and returns its API base and a stop.
func startStandin(cfg standinpkg.Config) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("stand-in: %w", err)
	}
	srv := &http.Server{Handler: standinpkg.New(cfg), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // ends with ErrServerClosed on stop
	}()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
	return "http://" + ln.Addr().String() + "/v1", stop, nil
}

// seedRun stores the problem's evaluator bundle and publishes the seed of a new run, as
// `shoal seed` does. It returns the seed candidate's id.
func seedRun(ctx context.Context, s *stack, run string, p *problem, config []byte) (string, error) {
	data, digest, err := bundle.Pack(p.dir, "initial_program.py", "config.yaml")
	if err != nil {
		return "", err
	}
	store, err := s.js.ObjectStore(ctx, s.names.BundlesStore())
	if err != nil {
		return "", fmt.Errorf("bundles store: %w", err)
	}
	if err := bundle.Put(ctx, store, digest, data); err != nil {
		return "", err
	}
	sum := sha256.Sum256(append(append(append([]byte{}, config...), p.program...), run...))
	seed := &protocol.Seed{
		Meta:         protocol.Meta{ID: "seed-" + hex.EncodeToString(sum[:8]), Run: run},
		Config:       string(config),
		BundleDigest: digest,
		Program:      p.program,
		ProgramName:  "initial_program.py",
		CreatedAt:    time.Now().UTC(),
	}
	if _, err := natsx.Publish(ctx, s.js, s.names.Seed(run), seed.ID, seed); err != nil {
		return "", err
	}
	return protocol.SeedCandidateID(run, seed.ID), nil
}

// waitPlannerDone waits until the planner calls the run done: its budget is spent and every
// issued task's result is folded.
func waitPlannerDone(ctx context.Context, s *stack, run string) error {
	return poll(ctx, func() (bool, error) {
		st, err := s.runs.Planner(ctx, run)
		if errors.Is(err, runs.ErrUnknownRun) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if st.Status == protocol.RunFailed {
			return false, fmt.Errorf("run %s failed: %s", run, st.StopReason)
		}
		return st.Status == protocol.RunDone, nil
	})
}

// waitResults waits until RESULTS holds n results of run.
func waitResults(ctx context.Context, s *stack, run string, n uint64) error {
	return poll(ctx, func() (bool, error) {
		got, err := resultCount(ctx, s, run)
		return got >= n, err
	})
}

func resultCount(ctx context.Context, s *stack, run string) (uint64, error) {
	stream, err := s.js.Stream(ctx, s.names.ResultsStream())
	if err != nil {
		return 0, err
	}
	subject := s.names.Result(run)
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	return info.State.Subjects[subject], nil
}

func poll(ctx context.Context, done func() (bool, error)) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// publishRandom publishes evals candidates for run, each an independent mutation of the seed
// program by the mutate backend's operator with its own seed. They enter the pipeline where a
// generator's candidates would, so the same evaluator, sandbox and archive score them; what
// differs from evolution is only that every parent is the seed.
func publishRandom(ctx context.Context, s *stack, run, seedCandidate string, p *problem, evals int, seed int64) error {
	for i := 1; i <= evals; i++ {
		task := protocol.Task{
			Meta:      protocol.Meta{ID: protocol.TaskID(run, int64(i)), Run: run},
			Model:     "random",
			Iteration: int64(i),
			Language:  "python",
			Parent:    protocol.Program{ID: seedCandidate},
		}
		c := task.Candidate("bench-search")
		// The planner's seed per task, so both methods draw from the same family of seeds.
		code, changes, err := generator.Mutate(p.program, "python", seed*1_000_003+int64(i))
		if err != nil {
			c.Reject(err.Error())
		} else {
			c.Code, c.Changes = code, changes
		}
		if _, err := natsx.Publish(ctx, s.js, s.names.Candidate(run), c.ID, c); err != nil {
			return err
		}
	}
	return nil
}

// readResults returns run's results in the order the archive folded them (RESULTS order).
func readResults(ctx context.Context, s *stack, run string) ([]protocol.Result, error) {
	n, err := resultCount(ctx, s, run)
	if err != nil || n == 0 {
		return nil, err
	}
	cons, err := s.js.OrderedConsumer(ctx, s.names.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.names.Result(run)},
	})
	if err != nil {
		return nil, err
	}
	out := make([]protocol.Result, 0, n)
	for uint64(len(out)) < n {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return nil, fmt.Errorf("read results of %s (%d of %d): %w", run, len(out), n, err)
		}
		var r protocol.Result
		if err := protocol.Decode(msg.Data(), &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
