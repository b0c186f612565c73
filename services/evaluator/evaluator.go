// Package evaluator is shoal's evaluator service: it takes candidates from the CANDIDATES
// work queue, scores each in a sandbox with its run's evaluator (an OpenEvolve-style Python
// file, or any command printing a JSON object of metrics), and publishes one result per
// candidate to RESULTS. A broken or hostile candidate is a scored failure with a reason,
// never a crashed service.
package evaluator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/pkg/telemetry"

	"github.com/shoal-run/shoal/services/evaluator/internal/harness"
	"github.com/shoal-run/shoal/services/evaluator/internal/sandbox"
)

// Config configures one evaluator replica. Replicas with the same Names share the work.
type Config struct {
	Names protocol.Names
	// ID names this replica in results and logs; default evaluator-<hostname>-<pid>.
	ID string
	// Concurrency is how many candidates are evaluated at once; default runtime.NumCPU().
	Concurrency int
	// Python is the interpreter that runs Python evaluators; default "python3". It is
	// resolved to its real path at start, so that evaluators see it as sys.executable.
	Python string
	// CacheDir holds fetched bundles, the harness and the per-evaluation work dirs;
	// default <os.TempDir()>/shoal-evaluator.
	CacheDir string
	// MaxOutputBytes caps what is kept of each of a candidate's stdout and stderr; default
	// 64 KiB.
	MaxOutputBytes int
	// OutputLimitBytes is how much a candidate may write to stdout and stderr together: past
	// it, it is killed and its result failed; default 64 MiB, less than zero no limit.
	OutputLimitBytes int64
	// MemoryLimitMB bounds each candidate's memory (address space, and its cgroup's
	// memory.max where cgroups v2 are delegated) when its run sets no
	// evaluator.memory_limit_mb; default sandbox.DefaultMemoryLimitMB (2 GiB), less than zero
	// no limit.
	MemoryLimitMB int
	// ScratchMB bounds what each candidate may write to its work dir and /tmp together (a
	// tmpfs of its own); default sandbox.DefaultScratchMB (256 MiB).
	ScratchMB int
	// Cold starts a fresh interpreter for every candidate instead of forking it from a warm
	// one that has imported the run's evaluator; slower, for comparison and debugging.
	Cold bool
	// Telemetry traces each evaluation (its sandbox run a span of its own) and measures
	// evaluation time and the sandbox limits hit; zero: off.
	Telemetry telemetry.Providers
}

func (c *Config) setDefaults() {
	if c.Names.Prefix == "" {
		c.Names = protocol.NewNames("")
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("evaluator-%s-%d", host, os.Getpid())
	}
	if c.Concurrency == 0 {
		c.Concurrency = runtime.NumCPU()
	}
	if c.Python == "" {
		c.Python = "python3"
	}
	if c.CacheDir == "" {
		c.CacheDir = filepath.Join(os.TempDir(), "shoal-evaluator")
	}
	if c.MaxOutputBytes == 0 {
		c.MaxOutputBytes = 64 << 10
	}
	if c.OutputLimitBytes == 0 {
		c.OutputLimitBytes = sandbox.DefaultOutputLimitBytes
	}
	if c.MemoryLimitMB == 0 {
		c.MemoryLimitMB = sandbox.DefaultMemoryLimitMB
	}
	if c.ScratchMB == 0 {
		c.ScratchMB = sandbox.DefaultScratchMB
	}
}

// Validate reports the first setting that cannot work, in words a user can act on.
func (c *Config) Validate() error {
	if err := c.Names.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("%w: concurrency %d must be at least 1", ErrConfig, c.Concurrency)
	}
	if c.MaxOutputBytes < 1024 {
		return fmt.Errorf("%w: max output %d bytes must be at least 1024", ErrConfig, c.MaxOutputBytes)
	}
	if c.ScratchMB < 1 {
		return fmt.Errorf("%w: work dir limit %d MiB must be at least 1", ErrConfig, c.ScratchMB)
	}
	if !filepath.IsAbs(c.CacheDir) {
		return fmt.Errorf("%w: cache dir %q must be an absolute path", ErrConfig, c.CacheDir)
	}
	return nil
}

// Consumer settings: AckWait covers the gap between heartbeats, not a whole evaluation.
const (
	ackWait    = 60 * time.Second
	maxDeliver = 5
)

// Service is one evaluator replica.
type Service struct {
	cfg Config
	js  jetstream.JetStream
	log *slog.Logger
}

// New checks cfg and binds the service to a NATS connection; Run starts the work.
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
		return nil, fmt.Errorf("evaluator: jetstream: %w", err)
	}
	return &Service{cfg: cfg, js: js, log: log.With("service", "evaluator", "replica", cfg.ID)}, nil
}

// Run provisions the streams it needs, then evaluates candidates until ctx ends, and returns
// nil once the candidates in hand are finished (or handed back after the drain limit). It
// returns an error when it cannot start or its consumer fails.
func (s *Service) Run(ctx context.Context) error {
	w, cons, err := s.start(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // asked to stop while starting
		}
		return err
	}
	defer w.scorer.close()
	s.log.Info("evaluator started", "concurrency", s.cfg.Concurrency, "python", w.scorer.python, "cache_dir", s.cfg.CacheDir, "warm", !s.cfg.Cold,
		"memory_limit_mb", s.cfg.MemoryLimitMB, "work_dir_limit_mb", s.cfg.ScratchMB, "output_limit_bytes", s.cfg.OutputLimitBytes)
	err = w.stage().Run(ctx, cons, pipeline.Config{Name: "evaluator", Concurrency: s.cfg.Concurrency, Log: s.log})
	s.log.Info("evaluator stopped")
	return err
}

func (s *Service) start(ctx context.Context) (*worker, jetstream.Consumer, error) {
	n := s.cfg.Names
	if err := natsx.Provision(ctx, s.js, n); err != nil {
		return nil, nil, err
	}
	store, err := runs.Open(ctx, s.js, n)
	if err != nil {
		return nil, nil, err
	}
	bundles, err := s.js.ObjectStore(ctx, n.BundlesStore())
	if err != nil {
		return nil, nil, fmt.Errorf("open bundles store: %w", err)
	}
	h, err := harness.Install(s.cfg.CacheDir)
	if err != nil {
		return nil, nil, err
	}
	python, err := resolvePython(ctx, s.cfg.Python)
	if err != nil {
		return nil, nil, err
	}
	launcher, err := sandbox.NewLauncher(python, s.cfg.CacheDir, s.log)
	if err != nil {
		return nil, nil, err
	}
	cons, err := natsx.EnsureConsumer(ctx, s.js, n.CandidatesStream(), consumerConfig(n))
	if err != nil {
		return nil, nil, err
	}
	m, err := newMetrics(s.cfg.Telemetry.Meter())
	if err != nil {
		return nil, nil, err
	}
	w := &worker{
		names:    n,
		id:       s.cfg.ID,
		js:       s.js,
		runs:     store,
		bundles:  bundles,
		cacheDir: filepath.Join(s.cfg.CacheDir, "bundles"),
		scorer: &scorer{
			python:        python,
			harness:       h,
			launcher:      launcher,
			workRoot:      filepath.Join(s.cfg.CacheDir, "work"),
			maxOutput:     s.cfg.MaxOutputBytes,
			outputLimit:   s.cfg.OutputLimitBytes,
			memoryLimitMB: s.cfg.MemoryLimitMB,
			scratchMB:     s.cfg.ScratchMB,
			log:           s.log,
			limits:        m.limits,
		},
		log:       s.log,
		telemetry: s.cfg.Telemetry,
		duration:  m.duration,
	}
	if !s.cfg.Cold {
		w.scorer.warm = newWarmPool(launcher, s.log)
	}
	return w, cons, nil
}

// consumerConfig is the candidates consumer all evaluator replicas share.
func consumerConfig(n protocol.Names) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       n.EvaluatorConsumer(),
		FilterSubject: n.AllCandidates(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
	}
}

// resolvePython finds the interpreter's real path by asking it, which also proves it runs:
// a shim (pyenv, asdf) would otherwise run in the sandbox's bare environment on every
// evaluation.
func resolvePython(ctx context.Context, python string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", "import sys; print(sys.executable)").Output()
	if err != nil {
		return "", fmt.Errorf("python interpreter %q does not run (%w); set --python or SHOAL_PYTHON", python, err)
	}
	path := strings.TrimSpace(string(out))
	if path == "" {
		return "", fmt.Errorf("python interpreter %q does not report its path; set --python or SHOAL_PYTHON", python)
	}
	return path, nil
}

// worker handles one candidate message at a time, many at once.
type worker struct {
	names    protocol.Names
	id       string
	js       jetstream.JetStream
	runs     *runs.Store
	bundles  jetstream.ObjectStore
	cacheDir string
	scorer   *scorer
	log      *slog.Logger

	telemetry telemetry.Providers
	// duration is shoal.evaluation.duration, by status.
	duration metric.Float64Histogram
}

// stage is the evaluator's step of the pipeline: a candidate in, its result out. Redelivery is
// harmless: the result's id is derived from the candidate's, so JetStream stores it once. A
// candidate no delivery could evaluate goes to DEAD and still ends as one failed result.
func (w *worker) stage() *pipeline.Stage[protocol.Candidate, protocol.Result] {
	return pipeline.NewStage(pipeline.StageConfig[protocol.Candidate, protocol.Result]{
		Names:     w.names,
		JetStream: w.js,
		Subject:   w.names.Result,
		Do:        w.result,
		Failed: func(ctx context.Context, c *protocol.Candidate, reason string) (*protocol.Result, error) {
			// A run that was never seeded has nothing to account (and nobody to read its
			// results): DEAD alone keeps the candidate.
			if ok, err := w.runs.Seeded(ctx, c.Run); err != nil || !ok {
				return nil, err
			}
			return c.Failed(reason), nil
		},
		// A result over the body limit loses its artifacts (a failed one its code) rather
		// than the result itself.
		Shrink:    (*protocol.Result).Shrink,
		Telemetry: w.telemetry,
	})
}

// result turns one candidate into its result.
func (w *worker) result(ctx context.Context, c *protocol.Candidate) (*protocol.Result, error) {
	start := time.Now()
	res := c.Result(w.id)
	if !c.Done() {
		if err := w.evaluate(ctx, res); err != nil {
			return nil, err
		}
	}
	took := time.Since(start)
	res.EvalMS = took.Milliseconds()
	res.CreatedAt = time.Now().UTC()
	if w.duration != nil {
		w.duration.Record(context.WithoutCancel(ctx), took.Seconds(), metric.WithAttributes(telemetry.Status.String(string(res.Status))))
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(telemetry.Candidate.String(c.ID), telemetry.Status.String(string(res.Status)), telemetry.Score.Float64(res.Score))
	}
	w.log.Info("candidate evaluated", "run", c.Run, "candidate", c.ID, "status", res.Status, "score", res.Score, "stage", res.Stage, "reason", res.Reason, "eval_ms", res.EvalMS)
	return res, nil
}

// evaluate fills res from the run's evaluator. Trouble on the service's side (the run's spec
// or bundle cannot be read) is retried; on the last delivery it becomes a failed result, so
// that every candidate is accounted for in RESULTS.
func (w *worker) evaluate(ctx context.Context, res *protocol.Result) error {
	c := &res.Candidate
	spec, err := w.runs.Spec(ctx, c.Run)
	if errors.Is(err, runs.ErrUnknownRun) {
		return pipeline.Permanent(err)
	}
	var bundleDir string
	if err == nil && spec.BundleDigest != "" {
		bundleDir, err = bundle.Fetch(ctx, w.bundles, spec.BundleDigest, w.cacheDir)
	}
	if err != nil {
		if ctx.Err() != nil || !pipeline.LastDelivery(ctx) {
			return err
		}
		res.Status, res.Reason = protocol.StatusFailed, "evaluator setup: "+err.Error()
		return nil
	}
	sctx, span := telemetry.Start(ctx, "sandbox run", trace.WithAttributes(telemetry.Candidate.String(c.ID), telemetry.Run.String(c.Run)))
	v, err := w.scorer.score(sctx, job{
		cfg:        spec.Config,
		bundleDir:  bundleDir,
		programExt: filepath.Ext(spec.ProgramName),
		code:       c.Code,
	})
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "evaluation not run")
		span.End()
		return err
	}
	if span.IsRecording() {
		span.SetAttributes(telemetry.Status.String(string(v.Status)), attribute.Int("shoal.sandbox.stages", v.Stage), attribute.String("shoal.reason", capText(v.Reason, 200)))
		if v.Status != protocol.StatusOK {
			span.SetStatus(codes.Error, capText(v.Reason, 200))
		}
	}
	span.End()
	res.Status, res.Reason, res.Stage = v.Status, v.Reason, v.Stage
	res.Metrics, res.Artifacts = v.Metrics, v.Artifacts
	if v.Status == protocol.StatusOK {
		res.Score, _ = spec.Config.Fitness(v.Metrics)
	}
	return nil
}

// metrics are the evaluator's instruments.
type metrics struct {
	duration metric.Float64Histogram
	limits   metric.Int64Counter
}

func newMetrics(m metric.Meter) (*metrics, error) {
	d, err := m.Float64Histogram(telemetry.MetricEvalDuration, metric.WithUnit("s"),
		metric.WithDescription("time from a candidate's delivery to its result, by status"))
	if err != nil {
		return nil, fmt.Errorf("evaluator metrics: %w", err)
	}
	l, err := m.Int64Counter(telemetry.MetricSandboxLimits, metric.WithUnit("{candidate}"),
		metric.WithDescription("candidates the sandbox stopped at a limit, by limit (time, output, background_processes, killed)"))
	if err != nil {
		return nil, fmt.Errorf("evaluator metrics: %w", err)
	}
	return &metrics{duration: d, limits: l}, nil
}
