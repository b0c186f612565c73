package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-run/shoal/cmd/shoal/internal/ui"
	"github.com/shoal-run/shoal/examples"
	"github.com/shoal-run/shoal/pkg/daemon"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/telemetry"
	"github.com/shoal-run/shoal/services/archive"
	"github.com/shoal-run/shoal/services/evaluator"
	"github.com/shoal-run/shoal/services/generator"
	"github.com/shoal-run/shoal/services/planner"
)

var allServices = []string{"planner", "generator", "evaluator", "archive"}

type upOptions struct {
	config, evaluator, program string
	run, backend, output       string
	iterations                 int64
	listen                     string
	stateDir                   string
	fresh, noSeed, stay        bool
	only                       []string
	logLevel                   string
	gpus, host                 string
	pprof                      string
	evalConcurrency            int
	profiles                   string // the generator's launch profiles file
	example                    string // an embedded example to evolve (examples.Names)
	ui                         uiFlags
	// replicaID names a planner or archive replica; empty takes the service's default
	// (<service>-<host>-<pid>). Tests that run two replicas in one process set it.
	replicaID string
	// metricsAddr serves the process's Prometheus metrics (--metrics-addr).
	metricsAddr string
	// telemetry gives each service its tracer and meter; nil: off. up sets it from
	// --metrics-addr and the OTEL_* variables; tests hand in their own.
	telemetry func(service string) (telemetry.Providers, error)
}

func upCmd() *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up [problem-dir]",
		Short: "Run NATS and the four services in one process, seed a problem and evolve it",
		Long: `up starts an embedded NATS server with JetStream (or joins --nats-url), runs the planner,
generator, evaluator and archive (or only those named by --only), seeds the problem and shows
its progress (the view of shoal watch) until the run ends: it exits 0 when the run is done,
non-zero with the reason when it failed. With --stay it keeps serving after the run, so other
terminals can still talk to it, until interrupted. With no problem it evolves the embedded
function_minimization example with the mutate backend.

A problem is OpenEvolve's layout: a directory with config.yaml, evaluator.py and
initial_program.py, or the three named by --config, --evaluator and --program.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.stateDir, _ = cmd.Flags().GetString("state-dir")
			dir := ""
			if len(args) == 1 {
				dir = args[0]
			}
			if o.example != "" {
				if dir != "" {
					return errors.New("name a problem directory or --example, not both")
				}
				var err error
				if dir, err = extractExample(o.example, o.stateDir); err != nil {
					return err
				}
			}
			return up(cmd, dir, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "run config (OpenEvolve config.yaml)")
	f.StringVar(&o.evaluator, "evaluator", "", "evaluator file; its directory is shipped to evaluators")
	f.StringVar(&o.program, "program", "", "seed program (initial_program.py)")
	f.StringVar(&o.example, "example", "", "evolve an embedded example ("+strings.Join(examples.Names(), ", ")+"), written under --state-dir")
	f.StringVar(&o.run, "run", "", "run id, [a-z0-9-]{1,64} (default: from the problem's directory)")
	f.StringVar(&o.backend, "backend", "", `"mutate" replaces the config's models, so any problem runs without a model`)
	f.StringVar(&o.output, "output", "", "write best_program.<ext>, best_program_info.json and checkpoints/checkpoint_<n>/ here when the run ends")
	f.Int64Var(&o.iterations, "iterations", 0, "override max_iterations")
	f.StringVar(&o.listen, "listen", "127.0.0.1:4222", "address of the embedded NATS server (port 0 picks one)")
	f.BoolVar(&o.fresh, "fresh", false, "delete the embedded server's stored streams before starting")
	f.BoolVar(&o.stay, "stay", false, "when the run ends, keep serving NATS and the services until interrupted, so other terminals can still talk to them")
	f.BoolVar(&o.noSeed, "no-seed", false, "start the services only and serve until interrupted; seed later with 'shoal seed'")
	f.StringSliceVar(&o.only, "only", nil, "run only these services (planner,generator,evaluator,archive)")
	f.StringVar(&o.logLevel, "log-level", "info", "level of the log file (debug, info, warn, error)")
	f.StringVar(&o.gpus, "gpus", os.Getenv("SHOAL_GPUS"), `GPUs for launch models: empty discovers them with NVML; "4x11GiB" declares them; "none" has none (env SHOAL_GPUS)`)
	f.StringVar(&o.host, "host", os.Getenv("SHOAL_HOST"), "host name in the GPU lease bucket (default: the hostname; env SHOAL_HOST)")
	f.IntVar(&o.evalConcurrency, "eval-concurrency", envInt("SHOAL_EVAL_CONCURRENCY"), "candidates the evaluator runs at once; 0: one per CPU (env SHOAL_EVAL_CONCURRENCY)")
	f.StringVar(&o.metricsAddr, "metrics-addr", os.Getenv("SHOAL_METRICS_ADDR"), "serve Prometheus metrics of all the services on this address at /metrics, e.g. :9464 (env SHOAL_METRICS_ADDR); traces follow OTEL_TRACES_EXPORTER")
	f.StringVar(&o.pprof, "pprof", os.Getenv("SHOAL_PPROF"), "serve Go's profiles (CPU, blocking, mutex) on this address, e.g. 127.0.0.1:6060 (env SHOAL_PPROF)")
	f.StringVar(&o.profiles, "profiles", os.Getenv("SHOAL_PROFILES"), "YAML file of the model-server profiles the generator may launch; run configs name one (env SHOAL_PROFILES)")
	o.ui.add(cmd, "ui", os.Getenv("SHOAL_UI"), "also serve the read-only web UI on this address, e.g. 127.0.0.1:8080 (env SHOAL_UI); logs in as the seeder")
	return cmd
}

func up(cmd *cobra.Command, dir string, o upOptions) error {
	ctx, term := cmd.Context(), cmd.ErrOrStderr()
	w := &syncWriter{w: term}
	if v := os.Getenv("SHOAL_EVAL_CONCURRENCY"); v != "" && !cmd.Flags().Changed("eval-concurrency") {
		if _, err := strconv.Atoi(v); err != nil {
			return fmt.Errorf("SHOAL_EVAL_CONCURRENCY=%q: want a number of candidates", v)
		}
	}
	if o.evalConcurrency < 0 {
		return fmt.Errorf("--eval-concurrency %d: want 0 (one per CPU) or more", o.evalConcurrency)
	}
	services := allServices
	if len(o.only) > 0 {
		for _, s := range o.only {
			if !slices.Contains(allServices, s) {
				return fmt.Errorf("--only: unknown service %q (have %s)", s, strings.Join(allServices, ", "))
			}
		}
		services = o.only
	}
	if err := os.MkdirAll(o.stateDir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(o.stateDir, "shoal.log")
	log, fileLog, closeLog, err := openLog(logPath, o.logLevel, w)
	if err != nil {
		return err
	}
	defer closeLog()
	if o.pprof != "" {
		if err := servePprof(ctx, o.pprof, log); err != nil {
			return err
		}
	}
	// One tracer provider per service, so that each span names its service as it would
	// from a process of its own; one meter provider behind one /metrics for the process.
	// Shut down last: after the services have stopped and their connections drained.
	tel, err := telemetry.New(ctx, telemetry.Config{Version: version, MetricsAddr: o.metricsAddr, Log: log})
	if err != nil {
		return err
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), daemon.TelemetryFlushLimit)
		defer cancel()
		if err := tel.Shutdown(fctx); err != nil {
			log.Warn("telemetry shutdown", "err", err)
		}
	}()
	if addr := tel.MetricsAddr(); addr != "" {
		fmt.Fprintf(w, "metrics on http://%s/metrics\n", addr)
	}
	o.telemetry = func(name string) (telemetry.Providers, error) { return tel.Service(ctx, name, false) }

	url, _ := cmd.Flags().GetString("nats-url")
	prefix, _ := cmd.Flags().GetString("prefix")
	names := protocol.NewNames(prefix)
	connect, url, shutdown, err := startNATS(cmd, url, names, o, log)
	if err != nil {
		return err
	}
	defer shutdown()

	// Every service is built before any starts, so a bad setting stops up before anything
	// runs, with nothing else to say.
	svcs := map[string]func(context.Context) error{}
	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			natsx.Close(nc, daemon.DrainLimit)
		}
	}()
	for _, name := range services {
		nc, err := connect(natsauth.Role(name))
		if err != nil {
			return err
		}
		conns = append(conns, nc)
		if svcs[name], err = newService(name, names, nc, log, o); err != nil {
			return err
		}
	}
	// The web UI logs in as the seeder, as `shoal ui` does, and is built with the services:
	// its address is taken before anything runs.
	var webUI *ui.Server
	var uiAuth natsx.Auth
	if o.ui.addr != "" {
		nc, err := connect(natsauth.Seeder)
		if err != nil {
			return err
		}
		conns = append(conns, nc)
		if uiAuth, err = clientAuth(cmd, natsauth.Seeder); err != nil {
			return err
		}
		if webUI, err = newUI(names, o.ui, uiAuth, nc, fileLog); err != nil {
			return err
		}
		// A UI that fails says so and stops; the run goes on without it.
		svcs["ui"] = func(ctx context.Context) error {
			if err := webUI.Run(ctx); err != nil && ctx.Err() == nil {
				fileLog.Error("web UI stopped", "err", err)
				fmt.Fprintf(w, "\nwarning: the web UI stopped: %v\n", err)
			}
			return nil
		}
	}
	g := startServices(ctx, svcs, fileLog)
	fmt.Fprintf(w, "shoal %s: services %s up on %s; logs in %s\n", version, strings.Join(services, ","), url, logPath)
	if webUI != nil {
		announceUI(w, webUI, uiAuth, cmd)
	}

	if o.noSeed {
		<-g.ctx.Done()
		return g.stop()
	}
	// fail stops the services and ends up with err, or with the error of a service that
	// failed first (which is why err happened: a seed no archive took, a watch cut short).
	fail := func(err error) error {
		if first := g.stop(); first != nil {
			return first
		}
		return err
	}
	nc, err := connect(natsauth.Admin)
	if err != nil {
		return fail(err)
	}
	conns = append(conns, nc)
	c, err := newClient(g.ctx, nc, names)
	if err != nil {
		return fail(err)
	}
	p, err := problemFiles(dir, o.config, o.evaluator, o.program, o.stateDir)
	if err != nil {
		return fail(err)
	}
	run := o.run
	if run == "" {
		run = runIDFor(filepath.Base(filepath.Dir(p.program)))
	}
	warn := func(s string) { fmt.Fprintln(w, "warning:", s) }
	so, err := upSeedOptions(o, services)
	if err != nil {
		return fail(err)
	}
	if _, err := seedProblem(g.ctx, c, run, p, so, warn); err != nil {
		return fail(err)
	}
	fmt.Fprintf(w, "seeded run %s from %s\n", run, p.program)
	unwatch := printEvents(nc, names, run, w)
	defer unwatch()
	outcome, runErr := watchRun(g.ctx, c, run, w, newWatchView(term, 5*time.Second))
	if outcome == watchInterrupted {
		if first := g.stop(); first != nil {
			return first
		}
		fmt.Fprintln(w, "\ninterrupted; the run's state is kept in JetStream")
		return runErr
	}
	if outcome == watchDone && o.output != "" {
		runErr = writeOutput(g.ctx, c, run, o.output, w)
	}
	if o.stay {
		fmt.Fprintf(w, "run %s ended; still serving on %s for shoal status, best, seed and watch (Ctrl-C stops)\n", run, url)
		<-g.ctx.Done()
	}
	return fail(runErr)
}

// serviceGroup runs up's services together, as one errgroup. The first to fail stops the
// others, and its error is the one up reports; what a service returns once they are stopping
// is not an error of its own (a drain cut short, a connection closed), so it goes to the log
// file alone.
type serviceGroup struct {
	// ctx ends when a service fails or up stops them all.
	ctx    context.Context
	cancel context.CancelFunc
	group  *errgroup.Group
}

func startServices(parent context.Context, runs map[string]func(context.Context) error, log *slog.Logger) *serviceGroup {
	base, cancel := context.WithCancel(parent)
	group, ctx := errgroup.WithContext(base)
	for name, run := range runs {
		group.Go(func() error {
			err := run(ctx)
			switch {
			case err == nil:
				return nil
			case ctx.Err() != nil:
				log.Info("service stopped while shutting down", "service", name, "err", err)
				return nil
			}
			log.Error("service stopped", "service", name, "err", err)
			return fmt.Errorf("%s: %w", name, err)
		})
	}
	return &serviceGroup{ctx: ctx, cancel: cancel, group: group}
}

// stop stops every service and waits for them; it returns the first service's failure, if
// one failed.
func (g *serviceGroup) stop() error {
	g.cancel()
	return g.group.Wait()
}

func splitHostPort(addr string) (string, int, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", 0, fmt.Errorf("--listen %q: want host:port", addr)
	}
	var port int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("--listen %q: bad port", addr)
	}
	if port == 0 {
		port = -1 // nats-server's RANDOM_PORT
	}
	return addr[:i], port, nil
}

func newService(name string, names protocol.Names, nc *nats.Conn, log *slog.Logger, o upOptions) (func(context.Context) error, error) {
	var tel telemetry.Providers
	if o.telemetry != nil {
		var err error
		if tel, err = o.telemetry(name); err != nil {
			return nil, err
		}
	}
	switch name {
	case "planner":
		s, err := planner.New(planner.Config{Names: names, ID: o.replicaID, Telemetry: tel}, nc, log)
		if err != nil {
			return nil, err
		}
		return s.Run, nil
	case "generator":
		s, err := generator.New(generator.Config{Names: names, GPUs: o.gpus, Host: o.host, ProfilesFile: o.profiles, Telemetry: tel}, nc, log)
		if err != nil {
			return nil, err
		}
		return s.Run, nil
	case "evaluator":
		s, err := evaluator.New(evaluator.Config{Names: names, Python: os.Getenv("SHOAL_PYTHON"), Concurrency: o.evalConcurrency, Telemetry: tel}, nc, log)
		if err != nil {
			return nil, err
		}
		return s.Run, nil
	case "archive":
		s, err := archive.New(archive.Config{Names: names, ID: o.replicaID, Telemetry: tel}, nc, log)
		if err != nil {
			return nil, err
		}
		return s.Run, nil
	}
	return nil, fmt.Errorf("unknown service %q", name)
}

// printEvents shows the run's error and warning events as they happen.
func printEvents(nc *nats.Conn, names protocol.Names, run string, w io.Writer) func() {
	sub, err := nc.Subscribe(names.RunEvents(run), func(m *nats.Msg) {
		var ev protocol.Event
		if protocol.Decode(m.Data, &ev) != nil {
			return
		}
		if ev.Kind == protocol.EventError || ev.Kind == "warning" {
			fmt.Fprintf(w, "\n%s: %s\n", ev.Kind, ev.Message)
		}
	})
	if err != nil {
		return func() {}
	}
	return func() { _ = sub.Unsubscribe() }
}

// writeOutput fills --output DIR as OpenEvolve does: best_program.<ext> with
// best_program_info.json, and a checkpoint of the population that the archive exports
// (checkpoints/checkpoint_<iterations>/).
func writeOutput(ctx context.Context, c *client, run, dir string, w io.Writer) error {
	if err := writeBest(ctx, c, run, dir, w); err != nil {
		return err
	}
	ectx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	path, err := archive.ExportCheckpoint(ectx, c.nc, c.names, run, dir)
	if err != nil {
		return fmt.Errorf("--output: %w", err)
	}
	fmt.Fprintf(w, "checkpoint written to %s\n", path)
	return nil
}

// writeBest writes the run's best program and its metrics into dir, as OpenEvolve's --output.
func writeBest(ctx context.Context, c *client, run, dir string, w io.Writer) error {
	b, err := c.runs.Best(ctx, run)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ext := filepath.Ext(b.ProgramName)
	if ext == "" {
		ext = ".py"
	}
	path := filepath.Join(dir, "best_program"+ext)
	if err := os.WriteFile(path, []byte(b.Program.Code), 0o644); err != nil {
		return err
	}
	info, _ := json.MarshalIndent(map[string]any{
		"run": run, "id": b.Program.ID, "parent_id": b.Program.ParentID, "generation": b.Program.Generation,
		"score": b.Program.Score, "metrics": b.Program.Metrics, "updated_at": b.UpdatedAt,
	}, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "best_program_info.json"), append(info, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(w, "best program (score %.6g) written to %s\n", b.Program.Score, path)
	return nil
}
