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
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-run/shoal/examples"
	"github.com/shoal-run/shoal/pkg/daemon"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/pkg/runs"
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
	fresh, noSeed              bool
	only                       []string
	logLevel                   string
	gpus, host                 string
	pprof                      string
	evalConcurrency            int
	profiles                   string // the generator's launch profiles file
	example                    string // an embedded example to evolve (examples.Names)
	// replicaID names a planner or archive replica; empty takes the service's default
	// (<service>-<host>-<pid>). Tests that run two replicas in one process set it.
	replicaID string
}

func upCmd() *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up [problem-dir]",
		Short: "Run NATS and the four services in one process, seed a problem and evolve it",
		Long: `up starts an embedded NATS server with JetStream (or joins --nats-url), runs the planner,
generator, evaluator and archive (or only those named by --only), seeds the problem and shows
progress until the run's budget is spent. With no problem it evolves the embedded
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
	f.BoolVar(&o.noSeed, "no-seed", false, "start the services only; seed later with `shoal seed`")
	f.StringSliceVar(&o.only, "only", nil, "run only these services (planner,generator,evaluator,archive)")
	f.StringVar(&o.logLevel, "log-level", "info", "level of the log file (debug, info, warn, error)")
	f.StringVar(&o.gpus, "gpus", os.Getenv("SHOAL_GPUS"), `GPUs for launch models: empty discovers them with NVML; "4x11GiB" declares them; "none" has none (env SHOAL_GPUS)`)
	f.StringVar(&o.host, "host", os.Getenv("SHOAL_HOST"), "host name in the GPU lease bucket (default: the hostname; env SHOAL_HOST)")
	f.IntVar(&o.evalConcurrency, "eval-concurrency", envInt("SHOAL_EVAL_CONCURRENCY"), "candidates the evaluator runs at once; 0: one per CPU (env SHOAL_EVAL_CONCURRENCY)")
	f.StringVar(&o.pprof, "pprof", os.Getenv("SHOAL_PPROF"), "serve Go's profiles (CPU, blocking, mutex) on this address, e.g. 127.0.0.1:6060 (env SHOAL_PPROF)")
	f.StringVar(&o.profiles, "profiles", os.Getenv("SHOAL_PROFILES"), "YAML file of the model-server profiles the generator may launch; run configs name one (env SHOAL_PROFILES)")
	return cmd
}

func up(cmd *cobra.Command, dir string, o upOptions) error {
	ctx := cmd.Context()
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
	// The services' warnings and up's own lines share the terminal from several goroutines.
	stderr := &lockedWriter{w: cmd.ErrOrStderr()}
	log, closeLog, err := openLog(logPath, o.logLevel, stderr)
	if err != nil {
		return err
	}
	defer closeLog()
	if o.pprof != "" {
		if err := servePprof(ctx, o.pprof, log); err != nil {
			return err
		}
	}

	url, _ := cmd.Flags().GetString("nats-url")
	prefix, _ := cmd.Flags().GetString("prefix")
	names := protocol.NewNames(prefix)
	connect, shutdown, err := startNATS(cmd, url, names, o, log)
	if err != nil {
		return err
	}
	defer shutdown()

	// Services run until the run ends or the user interrupts; then they drain. They run as one
	// group: one that dies stops the others and ends `shoal up` with its error, rather than
	// leaving a run that can no longer finish.
	svcCtx, stopServices := context.WithCancel(ctx)
	defer stopServices()
	group, groupCtx := errgroup.WithContext(svcCtx)
	for _, name := range services {
		nc, err := connect(natsauth.Role(name))
		if err != nil {
			return err
		}
		defer natsx.Close(nc, daemon.DrainLimit)
		run, err := newService(name, names, nc, log, o)
		if err != nil {
			return err
		}
		group.Go(func() error {
			// Cancelled while it started (the seed was refused at once) is no error of its own.
			if err := run(groupCtx); err != nil && !errors.Is(err, context.Canceled) {
				log.Error("service stopped", "service", name, "err", err)
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	stop := func() error {
		stopServices()
		return group.Wait()
	}
	// What follows the run ends when a service dies too.
	ctx = groupCtx
	fmt.Fprintf(stderr, "shoal %s: services %s up; logs in %s\n", version, strings.Join(services, ","), logPath)

	if o.noSeed {
		<-ctx.Done()
		return stop()
	}
	nc, err := connect(natsauth.Admin)
	if err != nil {
		return errors.Join(err, stop())
	}
	defer nc.Close()
	c, err := newClient(ctx, nc, names)
	if err != nil {
		return errors.Join(err, stop())
	}
	p, err := problemFiles(dir, o.config, o.evaluator, o.program, o.stateDir)
	if err != nil {
		return errors.Join(err, stop())
	}
	run := o.run
	if run == "" {
		run = runIDFor(filepath.Base(filepath.Dir(p.program)))
	}
	warn := func(s string) { fmt.Fprintln(stderr, "warning:", s) }
	so, err := upSeedOptions(o, services)
	if err != nil {
		return errors.Join(err, stop())
	}
	cfg, err := seedProblem(ctx, c, run, p, so, warn)
	if err != nil {
		return errors.Join(err, stop())
	}
	fmt.Fprintf(stderr, "seeded run %s from %s\n", run, p.program)
	unwatch := printEvents(nc, names, run, stderr)
	defer unwatch()
	done, werr := follow(ctx, c, run, cfg, stderr)
	if done && o.output != "" {
		werr = writeOutput(ctx, c, run, o.output, stderr)
	}
	return errors.Join(werr, stop())
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
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
	switch name {
	case "planner":
		s, err := planner.New(planner.Config{Names: names, ID: o.replicaID}, nc, log)
		if err != nil {
			return nil, err
		}
		return s.Run, nil
	case "generator":
		s, err := generator.New(generator.Config{Names: names, GPUs: o.gpus, Host: o.host, ProfilesFile: o.profiles}, nc, log)
		if err != nil {
			return nil, err
		}
		return s.Run, nil
	case "evaluator":
		s, err := evaluator.New(evaluator.Config{Names: names, Python: os.Getenv("SHOAL_PYTHON"), Concurrency: o.evalConcurrency}, nc, log)
		if err != nil {
			return nil, err
		}
		return s.Run, nil
	case "archive":
		s, err := archive.New(archive.Config{Names: names, ID: o.replicaID}, nc, log)
		if err != nil {
			return nil, err
		}
		return s.Run, nil
	}
	return nil, fmt.Errorf("unknown service %q", name)
}

// follow shows the run's progress until the planner says it is done (true) or ctx ends.
func follow(ctx context.Context, c *client, run string, cfg *runconfig.Config, w io.Writer) (bool, error) {
	max := cfg.MaxIterations
	if max <= 0 {
		max = -1
	}
	bar := progressbar.NewOptions64(max,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("evaluating seed"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionSetItsString("it"),
		progressbar.OptionShowIts(),
	)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = bar.Exit()
			fmt.Fprintln(w, "\ninterrupted; the run's state is kept in JetStream")
			return false, nil
		case <-t.C:
		}
		st, err := c.runs.State(ctx, run)
		if errors.Is(err, runs.ErrUnknownRun) {
			continue
		}
		if err != nil {
			continue
		}
		pst, err := c.runs.Planner(ctx, run)
		desc := fmt.Sprintf("best %.4f (seed %.4f)", st.BestScore, st.SeedScore)
		if err == nil && pst.Status == protocol.RunPaused {
			desc += " paused"
		}
		if ctl, cerr := c.runs.Control(ctx, run); cerr == nil && max > 0 && cfg.MaxIterations+ctl.ExtraIterations != max {
			max = cfg.MaxIterations + ctl.ExtraIterations // `shoal run extend`
			bar.ChangeMax64(max)
		}
		bar.Describe(desc)
		_ = bar.Set64(st.Iterations)
		if err == nil && pst.Status == protocol.RunFailed {
			_ = bar.Exit()
			return false, runFailed(w, run, pst, st)
		}
		if err == nil && pst.Status == protocol.RunDone {
			_ = bar.Finish()
			fmt.Fprintf(w, "\nrun %s done (%s): %d iterations, %d failed, best score %.6g (seed %.6g)\n",
				run, pst.StopReason, st.Iterations, st.Failed, st.BestScore, st.SeedScore)
			return true, nil
		}
	}
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
