// Package generator turns tasks into candidates. A replica pulls tasks from the planner
// (shoal.task.<run>.<model>), asks the task's model for a program — an OpenAI-compatible
// endpoint, a model server it starts itself on leased GPUs of its host (backend launch), or
// the built-in mutate operators when the model needs no LLM — applies the reply to the
// parent, and publishes the candidate for the evaluators (shoal.candidate.<run>).
//
// Every task yields exactly one candidate with a stable id. A reply that cannot become a
// program (no blocks, no match, an edit outside the evolve blocks, an empty rewrite, a model
// that kept failing) is published as a rejected candidate with the reason, so the archive sees
// every iteration and the user sees why it was lost.
package generator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/novelty"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/pkg/telemetry"
	"github.com/shoal-run/shoal/services/generator/internal/launch"
)

// Config configures one generator replica.
type Config struct {
	Names protocol.Names
	// ID names this replica in the candidates it writes; default generator-<host>-<pid>.
	ID string
	// Models is empty for a replica that serves every model of every run, or holds the one
	// model this replica serves. Replicas of one model share a consumer and split its tasks.
	Models []string
	// Concurrency is how many tasks this replica works on at once; default 256, since a
	// replica mostly waits on model servers, and a serving engine batches hundreds of
	// requests. Each model's own concurrency (llm.models[].concurrency) bounds the requests
	// to its endpoint, and the planner keeps no more tasks in flight than that allows.
	Concurrency int
	// Getenv reads API keys named in run configs ("${VAR}"); default os.Getenv.
	Getenv func(string) string
	// HTTPClient reaches model endpoints; default a client that keeps enough idle
	// connections per host for Concurrency requests.
	HTTPClient *http.Client
	// GPUs are this host's GPUs for models with backend launch: a declared spec such as
	// "4x11GiB" or "2x24GiB:nvlink-pairs", or the path of an inventory file (JSON or YAML).
	// Empty: discovered through NVML; without NVML, launched models are rejected, as they
	// are with "none".
	GPUs string
	// Host names this host in the gpu-inventory and gpu-leases buckets: replicas on one
	// host share its GPUs through it. Default: the inventory file's host, else the hostname.
	Host string
	// LeaseTTL is how long a GPU lease outlives its holder's last renewal: a crashed
	// replica's GPUs are free again after it. Default 15s.
	LeaseTTL time.Duration
	// LaunchIdle is how long a launched model server that no task uses keeps its GPUs (its
	// runs may have ended); the next task starts it again. Default 10 minutes.
	LaunchIdle time.Duration
	// Profiles are the model servers this replica may start for models with backend launch;
	// a run config names one and never brings a command. ProfilesFile is read into Profiles
	// by New (the --profiles flag, SHOAL_PROFILES); set one of the two.
	Profiles     runconfig.Profiles
	ProfilesFile string
	// Telemetry traces each task (the model call and the edit's application spans of their
	// own) and measures model calls, tokens and tasks in flight by model; zero: off.
	Telemetry telemetry.Providers
}

func (c *Config) setDefaults() {
	if c.Names.Prefix == "" {
		c.Names = protocol.NewNames("")
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("generator-%s-%d", host, os.Getpid())
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 256
	}
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 15 * time.Second
	}
	if c.LaunchIdle == 0 {
		c.LaunchIdle = 10 * time.Minute
	}
}

// Validate reports a config a replica cannot run with.
func (c *Config) Validate() error {
	if err := c.Names.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	switch {
	case len(c.Models) > 1:
		return fmt.Errorf("%w: models %q: a replica serves one model or all of them; start one replica per model instead", ErrConfig, c.Models)
	case len(c.Models) == 1 && strings.TrimSpace(c.Models[0]) == "":
		return fmt.Errorf("%w: model name is empty; leave it out to serve every model", ErrConfig)
	case c.Concurrency < 1:
		return fmt.Errorf("%w: concurrency %d: want at least 1", ErrConfig, c.Concurrency)
	case c.LeaseTTL < time.Second:
		return fmt.Errorf("%w: lease ttl %s: want at least 1s", ErrConfig, c.LeaseTTL)
	case c.LaunchIdle < time.Second:
		return fmt.Errorf("%w: launch idle %s: want at least 1s", ErrConfig, c.LaunchIdle)
	case c.ProfilesFile != "" && len(c.Profiles) > 0:
		return fmt.Errorf("%w: both a profiles file and profiles are given; set one", ErrConfig)
	}
	return nil
}

// Consumer settings: a task may wait on a slow model for minutes; heartbeats from the
// pipeline (every 10 s) keep it claimed meanwhile, so AckWait only bounds how long a dead
// replica holds its tasks. It was 5 minutes, and `make chaos` showed a run's last tasks
// waiting that long after their generator was killed.
const (
	ackWait    = 30 * time.Second
	maxDeliver = 5
)

// backend produces the code of one candidate. An error is a rejection whose reason the
// candidate carries, unless ctx ended, in which case the task is handed back.
type backend interface {
	generate(ctx context.Context, task *protocol.Task, model runconfig.Model) (code, summary string, tokens protocol.TokenUsage, err error)
}

// Service is one generator replica.
type Service struct {
	cfg      Config
	js       jetstream.JetStream
	log      *slog.Logger
	http     *http.Client
	ownsHTTP bool
	backends map[string]backend
	inv      gpu.Inventory // this host's GPUs for launched models; empty when it has none
	launch   *launch.Backend
	registry *registry
	limits   limits
	metrics  *metrics
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
		return nil, fmt.Errorf("generator: jetstream: %w", err)
	}
	s := &Service{cfg: cfg, js: js, log: log.With("service", "generator", "replica", cfg.ID), http: cfg.HTTPClient}
	if s.metrics, err = newMetrics(cfg.Telemetry.Meter()); err != nil {
		return nil, err
	}
	if s.http == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = cfg.Concurrency
		s.http, s.ownsHTTP = &http.Client{Transport: tr}, true
	}
	if cfg.ProfilesFile != "" {
		ps, warnings, err := runconfig.LoadProfiles(cfg.ProfilesFile)
		for _, w := range warnings {
			s.log.Warn("launch profiles", "warning", w.String())
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		s.cfg.Profiles = ps
	}
	inv, noGPUs, err := inventory(cfg.GPUs, cfg.Host, s.log)
	if err != nil {
		return nil, err
	}
	openai := openaiBackend{http: s.http, getenv: cfg.Getenv}
	s.inv = inv
	s.launch = launch.New(launch.Config{
		Replica: cfg.ID, LeaseTTL: cfg.LeaseTTL, Idle: cfg.LaunchIdle, Inventory: inv, NoGPUs: noGPUs, Profiles: s.cfg.Profiles,
	}, s.log)
	s.backends = map[string]backend{
		runconfig.BackendMutate: mutateBackend{},
		runconfig.BackendOpenAI: openai,
		runconfig.BackendLaunch: launchBackend{servers: s.launch, openai: openai},
	}
	return s, nil
}

// Run provisions the streams, joins the replicas' shared consumer and turns tasks into
// candidates until ctx ends; then it stops pulling, lets running tasks finish (the pipeline
// bounds the wait) and returns nil.
func (s *Service) Run(ctx context.Context) error {
	if s.ownsHTTP {
		defer s.http.CloseIdleConnections()
	}
	if err := natsx.Provision(ctx, s.js, s.cfg.Names); err != nil {
		return fmt.Errorf("generator: %w", err)
	}
	store, err := runs.Open(ctx, s.js, s.cfg.Names)
	if err != nil {
		return fmt.Errorf("generator: %w", err)
	}
	cons, err := s.consumer(ctx)
	if err != nil {
		return err
	}
	gens, err := s.js.KeyValue(ctx, s.cfg.Names.GeneratorsBucket())
	if err != nil {
		return fmt.Errorf("generator: generators bucket: %w", err)
	}
	s.registry = newRegistry(gens, protocol.Generator{
		Meta: protocol.Meta{ID: s.cfg.ID}, Host: s.host(), Models: s.cfg.Models, Concurrency: s.cfg.Concurrency,
	}, s.log)
	regCtx, stopRegistry := context.WithCancel(ctx)
	regDone := make(chan struct{})
	go func() { defer close(regDone); s.registry.run(regCtx) }()
	defer func() { stopRegistry(); <-regDone }()
	peers := func(host, model string) int { return s.registry.count(ctx, host, model) }
	unobserve, err := s.launch.Observe(s.cfg.Telemetry.Meter())
	if err != nil {
		return fmt.Errorf("generator: %w", err)
	}
	defer unobserve()
	stopServers, err := s.launch.Start(ctx, s.js, s.cfg.Names, peers)
	if err != nil {
		return fmt.Errorf("generator: %w", err)
	}
	s.log.Info("generator started", "models", s.served(), "concurrency", s.cfg.Concurrency)
	stage := s.stage(store).With(func(next func(context.Context, *protocol.Task) (*protocol.Candidate, error)) func(context.Context, *protocol.Task) (*protocol.Candidate, error) {
		return func(ctx context.Context, task *protocol.Task) (*protocol.Candidate, error) {
			s.registry.inFlight.Add(1)
			defer s.registry.inFlight.Add(-1)
			return next(ctx, task)
		}
	})
	err = stage.Run(ctx, cons, pipeline.Config{Name: "generator", Concurrency: s.cfg.Concurrency, Log: s.log})
	// The tasks have drained: now stop the launched servers and release their leases.
	stopServers()
	s.log.Info("generator stopped")
	return err
}

// host names this replica's host in the generators bucket, as in the GPU buckets.
func (s *Service) host() string {
	if h := s.inv.Host; h != "" {
		return h
	}
	if s.cfg.Host != "" {
		return s.cfg.Host
	}
	h, _ := os.Hostname()
	return h
}

func (s *Service) served() string {
	if len(s.cfg.Models) == 0 {
		return "all"
	}
	return s.cfg.Models[0]
}

// consumer ensures the durable consumer this replica shares with the others serving the same
// models.
func (s *Service) consumer(ctx context.Context) (jetstream.Consumer, error) {
	n := s.cfg.Names
	cc := s.consumerConfig()
	what := "every model"
	if len(s.cfg.Models) == 1 {
		what = "model " + s.cfg.Models[0]
	}
	cons, err := natsx.EnsureConsumer(ctx, s.js, n.TasksStream(), cc)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == 10100 {
		return nil, fmt.Errorf("generator: %w: tasks of %s are already taken by another consumer of %s: replicas serving every model and replicas serving one model cannot run side by side", err, what, n.TasksStream())
	}
	if err != nil {
		return nil, fmt.Errorf("generator: %w", err)
	}
	return cons, nil
}

// consumerConfig is the tasks consumer of the replicas serving this replica's models.
func (s *Service) consumerConfig() jetstream.ConsumerConfig {
	n := s.cfg.Names
	name, filter, what := n.GeneratorConsumer(""), n.AllTasks(), "every model"
	if len(s.cfg.Models) == 1 {
		m := s.cfg.Models[0]
		name, filter, what = n.GeneratorConsumer(m), n.TasksForModel(m), "model "+m
	}
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "generators serving " + what,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
	}
}

// stage is the generator's step of the pipeline: a task in, its candidate out. A task no
// delivery could turn into a candidate goes to DEAD and still ends as one abandoned
// candidate, which the evaluators record as a failed result, so the planner's count of the
// run completes.
func (s *Service) stage(store *runs.Store) *pipeline.Stage[protocol.Task, protocol.Candidate] {
	return pipeline.NewStage(pipeline.StageConfig[protocol.Task, protocol.Candidate]{
		Names:     s.cfg.Names,
		JetStream: s.js,
		Subject:   s.cfg.Names.Candidate,
		Telemetry: s.cfg.Telemetry,
		Do: func(ctx context.Context, task *protocol.Task) (*protocol.Candidate, error) {
			return s.candidate(ctx, store, task)
		},
		Failed: func(ctx context.Context, task *protocol.Task, reason string) (*protocol.Candidate, error) {
			// A run that was never seeded has nothing to account (and nobody to read its
			// results): DEAD alone keeps the task.
			if ok, err := store.Seeded(ctx, task.Run); err != nil || !ok {
				return nil, err
			}
			c := task.Candidate(s.cfg.ID)
			c.Abandon(reason)
			return c, nil
		},
	})
}

// candidate turns one task into its candidate. A task of an unknown run is permanent;
// anything a retry may fix is returned for redelivery; everything else becomes a candidate,
// rejected or not.
func (s *Service) candidate(ctx context.Context, store *runs.Store, task *protocol.Task) (*protocol.Candidate, error) {
	start := time.Now()
	spec, err := store.Spec(ctx, task.Run)
	switch {
	case errors.Is(err, runs.ErrUnknownRun) || errors.Is(err, runconfig.ErrInvalid):
		return nil, pipeline.Permanent(fmt.Errorf("task %s: %w", task.ID, err))
	case err != nil:
		return nil, fmt.Errorf("task %s: %w", task.ID, err)
	}
	task.SetDefaults(spec.Config.DiffBasedEvolution, spec.Config.Language)

	code, summary, tokens, err := s.generate(ctx, task, spec.Config)
	if err != nil && (ctx.Err() != nil || errors.Is(err, launch.ErrStopping)) {
		return nil, fmt.Errorf("task %s: %w", task.ID, err) // shutting down: another replica takes it
	}
	if errors.Is(err, launch.ErrHandBack) {
		// Requeued as a new message rather than nak'd: a nak would spend one of the task's
		// MaxDeliver deliveries each time it lands here again, and dead-letter a healthy task.
		// The copy's message id derives from the task's and its hand-back count, so a retried
		// hand-back is stored once; a copy that slips through twice is harmless anyway: the
		// candidate's id derives from the task's, so its result is deduplicated and folded once.
		msgID := task.HandBack()
		if _, err := natsx.Publish(ctx, s.js, s.cfg.Names.Task(task.Run, task.Model), msgID, task); err != nil {
			return nil, fmt.Errorf("task %s: hand back: %w", task.ID, err)
		}
		s.log.Info("task handed back to a replica that serves its model", "task", task.ID, "model", task.Model)
		return nil, nil
	}
	c := task.Candidate(s.cfg.ID)
	c.Tokens = tokens
	if err == nil {
		err = check(code, task.Parent.Code, spec.Config.MaxCodeLength)
	}
	familiar := ""
	if err == nil {
		familiar = tooFamiliar(code, task, spec.Config.Database.NoveltyThreshold)
	}
	switch {
	case err != nil:
		c.Reject(err.Error())
	case familiar != "":
		// Skipped before evaluation, and recorded as a rejected result so the run's count
		// completes; the archive counts it in RunState.NoveltyRejected.
		c.Reject(familiar)
		c.Novelty = true
	default:
		c.Code, c.Changes = code, summary
	}
	c.GenerateMS = time.Since(start).Milliseconds()
	if span := trace.SpanFromContext(ctx); span.IsRecording() { // the stage's
		span.SetAttributes(telemetry.Candidate.String(c.ID), telemetry.GenAIRequestModel.String(task.Model), attribute.String("shoal.rejected", c.Rejected))
	}
	log := s.log.With("run", task.Run, "candidate", c.ID, "model", task.Model, "ms", c.GenerateMS)
	if c.Rejected != "" {
		log.Info("candidate rejected", "reason", c.Rejected)
	} else {
		log.Debug("candidate published", "changes", c.Changes)
	}
	return c, nil
}

// generate finds the task's model in the run's config and asks its backend for code, holding
// one of the model's concurrency slots for this run meanwhile.
func (s *Service) generate(ctx context.Context, task *protocol.Task, cfg *runconfig.Config) (string, string, protocol.TokenUsage, error) {
	var none protocol.TokenUsage
	model, ok := cfg.ModelByName(task.Model)
	if !ok {
		return "", "", none, fmt.Errorf("model %q is not in the run's config", task.Model)
	}
	b, ok := s.backends[model.Backend]
	if !ok {
		return "", "", none, fmt.Errorf("model %q: backend %q is not one this generator knows", model.Name, model.Backend)
	}
	if task.Mode != protocol.ModeDiff && task.Mode != protocol.ModeRewrite {
		return "", "", none, fmt.Errorf("task mode %q is neither %q nor %q", task.Mode, protocol.ModeDiff, protocol.ModeRewrite)
	}
	release, err := s.limits.acquire(ctx, task.Run+"\x00"+model.Name, model.Concurrency)
	if err != nil {
		return "", "", none, err
	}
	defer release()
	return s.call(ctx, b, task, model)
}

// call asks b for the task's code, as one span and one measurement of a model call
// (gen_ai.*): the model, the tokens in and out, how long it took and how it failed. The
// backend puts its retries and the edit's application on the span.
func (s *Service) call(ctx context.Context, b backend, task *protocol.Task, model runconfig.Model) (string, string, protocol.TokenUsage, error) {
	start := time.Now()
	attrs := []attribute.KeyValue{telemetry.GenAIOperationName.String(telemetry.GenAIOperationChat),
		telemetry.GenAIRequestModel.String(model.Name), telemetry.GenAIProviderName.String(string(model.Backend))}
	ctx, span := telemetry.Start(ctx, "chat "+model.Name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	defer span.End()
	inFlight := metric.WithAttributes(telemetry.GenAIRequestModel.String(model.Name))
	s.metrics.inFlight.Add(ctx, 1, inFlight)
	code, summary, tokens, err := b.generate(ctx, task, model)
	s.metrics.inFlight.Add(context.WithoutCancel(ctx), -1, inFlight)
	span.SetAttributes(telemetry.GenAIUsageInput.Int(tokens.Prompt), telemetry.GenAIUsageOutput.Int(tokens.Completion),
		telemetry.Task.String(task.ID))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "no program from the model")
		attrs = append(attrs, telemetry.ErrorType.String("reply"))
	}
	s.metrics.call(context.WithoutCancel(ctx), time.Since(start), tokens, attrs)
	return code, summary, tokens, err
}

// tooFamiliar says why code is not worth evaluating under database.novelty_threshold: it is
// at least that similar to its parent or to a program its island evaluated lately (the
// sketches the task carries); "" when it is new enough or the threshold is 0.
func tooFamiliar(code string, task *protocol.Task, threshold float64) string {
	if threshold <= 0 {
		return ""
	}
	sk := novelty.Of(code)
	if v := novelty.Similarity(sk, novelty.Of(task.Parent.Code)); v >= threshold {
		return fmt.Sprintf("novelty: %.3f similar to its parent %s (database.novelty_threshold %g)", v, task.Parent.ID, threshold)
	}
	if i, v := novelty.Closest(sk, task.Seen); i >= 0 && v >= threshold {
		return fmt.Sprintf("novelty: %.3f similar to the %s latest program island %d evaluated (database.novelty_threshold %g)",
			v, ordinal(i+1), task.Island, threshold)
	}
	return ""
}

func ordinal(n int) string {
	switch {
	case n%100 >= 11 && n%100 <= 13:
		return fmt.Sprintf("%dth", n)
	case n%10 == 1:
		return fmt.Sprintf("%dst", n)
	case n%10 == 2:
		return fmt.Sprintf("%dnd", n)
	case n%10 == 3:
		return fmt.Sprintf("%drd", n)
	}
	return fmt.Sprintf("%dth", n)
}

// check rejects code that is no use to evaluate.
func check(code, parent string, maxLen int) error {
	if strings.TrimSpace(code) == "" {
		return errors.New("the reply produced an empty program")
	}
	if n := utf8.RuneCountInString(code); maxLen > 0 && n > maxLen {
		return fmt.Errorf("program is %d characters, over max_code_length %d", n, maxLen)
	}
	if sameProgram(code, parent) {
		return errors.New("no change: the program is identical to its parent")
	}
	return nil
}

// sameProgram ignores trailing whitespace and trailing blank lines, which change nothing a
// program does.
func sameProgram(a, b string) bool {
	norm := func(s string) string {
		lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
		for i, l := range lines {
			lines[i] = strings.TrimRight(l, " \t")
		}
		return strings.TrimRight(strings.Join(lines, "\n"), "\n")
	}
	return norm(a) == norm(b)
}

// limits bounds the requests in flight to each (run, model), so that a replica working on many
// tasks does not send a model endpoint more than the run's config allows.
type limits struct {
	mu   sync.Mutex
	sems map[string]chan struct{}
}

func (l *limits) acquire(ctx context.Context, key string, n int) (release func(), err error) {
	if n <= 0 {
		return func() {}, nil
	}
	l.mu.Lock()
	if l.sems == nil {
		l.sems = map[string]chan struct{}{}
	}
	sem, ok := l.sems[key]
	if !ok {
		sem = make(chan struct{}, n)
		l.sems[key] = sem
	}
	l.mu.Unlock()
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
