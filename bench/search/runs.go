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
	"strings"
	"time"

	"github.com/nats-io/nats.go"
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
	name        string
	backend     string
	apiBase     string
	concurrency int
	weight      float64
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
	var models []any
	for _, m := range spec.models {
		model := map[string]any{"name": m.name, "backend": m.backend, "concurrency": cmp.Or(m.concurrency, 4), "weight": cmp.Or(m.weight, 1)}
		if m.backend == "openai" {
			model["api_base"] = m.apiBase
		}
		models = append(models, model)
	}
	merged["models"] = models
	if spec.selection != "" {
		merged["model_selection"] = spec.selection
	}
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
	if spec.noveltyThreshold > 0 {
		mergedDB["novelty_threshold"] = spec.noveltyThreshold
	}
	doc["database"] = mergedDB
	return yaml.Marshal(doc)
}

// standinConfig is the perturb stand-in of issue 16 (one numeric literal of the current
// program moved by a Gaussian step, as a SEARCH/REPLACE edit, with no latency), or in noise
// mode the useless one (the literal thrown far off: it applies and rarely helps). digits is
// how many significant digits a moved literal keeps (0: the stand-in's 6).
func standinConfig(mode string, step float64, digits int) standinpkg.Config {
	return standinpkg.Config{Model: "standin", Slots: 64, Mode: mode, Step: step, Digits: digits}
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

// seedTimeout bounds the wait for a run's first planner state: the archive accepts a seed and
// evaluates it in seconds, so a run with none after this was never started.
const seedTimeout = 2 * time.Minute

// watchSeedRejection listens for the archive's error events of run before its seed is
// published, so that a rejected seed (a config the archive refuses, say) ends the wait for
// the run with the archive's reason instead of hanging. It returns the reasons as they come
// and a stop.
func watchSeedRejection(s *stack, run string) (<-chan string, func(), error) {
	reasons := make(chan string, 1)
	sub, err := s.nc.Subscribe(s.names.Event(run, protocol.EventError), func(m *nats.Msg) {
		var ev protocol.Event
		if protocol.Decode(m.Data, &ev) != nil || !strings.HasPrefix(ev.Message, "seed rejected") {
			return
		}
		select {
		case reasons <- ev.Message:
		default:
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("watch run %s's events: %w", run, err)
	}
	return reasons, func() { _ = sub.Unsubscribe() }, nil
}

// waitPlannerDone waits until the planner calls the run done after its extensions-th
// extension: its budget is spent and every issued task's result is folded. It fails with the
// archive's reason when the archive rejects the run's seed, and when no planner state shows
// up within seedTimeout.
func waitPlannerDone(ctx context.Context, s *stack, run string, extensions int64, rejected <-chan string) error {
	started := time.Now()
	return poll(ctx, func() (bool, error) {
		select {
		case why := <-rejected:
			return false, fmt.Errorf("run %s: %s", run, why)
		default:
		}
		st, err := s.runs.Planner(ctx, run)
		if errors.Is(err, runs.ErrUnknownRun) || err == nil && st.Status == "" {
			if time.Since(started) > seedTimeout {
				return false, fmt.Errorf("run %s has no planner state %s after its seed: was the seed taken? (no rejection was reported)", run, seedTimeout)
			}
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if st.Status == protocol.RunFailed {
			return false, fmt.Errorf("run %s failed: %s", run, st.StopReason)
		}
		return st.Status == protocol.RunDone && st.Extensions >= extensions, nil
	})
}

// spendEvaluations runs run until it has evaluated evals candidates: candidates skipped by
// novelty rejection count against max_iterations but are no evaluations, so each time the
// planner calls the run done short of evals, the budget is extended by the shortfall (as
// `shoal run extend` does).
func spendEvaluations(ctx context.Context, s *stack, run string, evals int, rejected <-chan string) error {
	var extensions int64
	for {
		if err := waitPlannerDone(ctx, s, run, extensions, rejected); err != nil {
			return err
		}
		results, err := readResults(ctx, s, run)
		if err != nil {
			return err
		}
		done := 0
		for _, r := range results {
			if !r.Candidate.IsSeed() && !r.Candidate.Novelty {
				done++
			}
		}
		if done >= evals {
			return nil
		}
		ctl, err := s.runs.UpdateControl(ctx, run, func(c *protocol.RunControl) {
			c.ExtraIterations += int64(evals - done)
			c.Extensions++
		})
		if err != nil {
			return fmt.Errorf("extend run %s: %w", run, err)
		}
		extensions = ctl.Extensions
	}
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
