// Package daemon runs one shoal service as a process, the same way for all four: the options
// every service takes (--nats-url, --prefix and NATS credentials), each flag defaulting to its
// SHOAL_* environment variable; a JSON logger; the connection as the service's role; a
// context that SIGINT or SIGTERM cancels; the service's Run; the connection drained; and the
// exit code. A service's main is a Command and one call to Main.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/telemetry"
)

// Service is what a command runs: it returns nil when ctx ends and it has stopped cleanly,
// and an error when it cannot start or one of its parts died.
type Service interface {
	Run(ctx context.Context) error
}

// Options are the settings every service takes.
type Options struct {
	NATSURL string
	Names   protocol.Names
	Auth    natsx.Auth
	// MetricsAddr serves /metrics for Prometheus when set (--metrics-addr).
	MetricsAddr string
	// Telemetry is the service's tracer and meter, set up from MetricsAddr and the OTEL_*
	// variables before Build; zero (off) unless they turn something on.
	Telemetry telemetry.Providers
}

// Build makes the service from its parsed flags and the connection.
type Build func(o Options, nc *nats.Conn, log *slog.Logger) (Service, error)

// Command is one service's command.
type Command struct {
	// Name names the service: "planner", "generator", "evaluator", "archive". The connection
	// is named shoal-<name>.
	Name string
	// Role is the NATS user the service logs in as unless --user says otherwise.
	Role    natsauth.Role
	Version string
	// Flags registers the service's own flags on fs and returns what builds the service once
	// they are parsed.
	Flags func(fs *flag.FlagSet) Build
}

// DrainLimit bounds how long a stopped service's connection drains before it is closed.
const DrainLimit = 10 * time.Second

// Main runs c with args (os.Args[1:]) and returns the exit code: 0 after a clean stop or for
// -help, 1 when the service failed, 2 for options it cannot use. Logs go to stderr as JSON.
func Main(c Command, args []string) int {
	return run(c, args, os.Stderr, os.Getenv)
}

func run(c Command, args []string, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet(c.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o, build, err := parse(c, fs, args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", c.Name, err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("version", c.Version)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, c, o, build, log, getenv); err != nil {
		log.Error("service failed", "service", c.Name, "err", err)
		return 1
	}
	return 0
}

// parse registers the service's flags and the common ones on fs, sets each from its
// environment variable, then parses args, which win over the environment.
func parse(c Command, fs *flag.FlagSet, args []string, getenv func(string) string) (Options, Build, error) {
	var o Options
	build := c.Flags(fs)
	fs.StringVar(&o.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server URL (env SHOAL_NATS_URL)")
	prefix := fs.String("prefix", protocol.DefaultPrefix, "subject prefix (env SHOAL_PREFIX)")
	fs.StringVar(&o.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address at /metrics, e.g. :9464; empty: off (env SHOAL_METRICS_ADDR)")
	if err := FromEnv(fs, getenv); err != nil {
		return o, nil, err
	}
	// The credentials' flags read their own variables (SHOAL_NATS_USER or NATS_USER, …).
	o.Auth.AddFlags(fs, string(c.Role))
	if err := fs.Parse(args); err != nil {
		return o, nil, err
	}
	if fs.NArg() > 0 {
		return o, nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.Auth.InboxPrefix = c.Role.InboxPrefix()
	o.Names = protocol.NewNames(*prefix)
	return o, build, nil
}

// EnvName is the environment variable a flag defaults to: SHOAL_ and the flag's name in
// upper case with '-' as '_' (--work-dir-limit-mb: SHOAL_WORK_DIR_LIMIT_MB).
func EnvName(flagName string) string {
	return "SHOAL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// FromEnv sets every flag registered on fs so far from its environment variable (EnvName),
// when that is set; a value the flag refuses is an error naming the variable.
func FromEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		key := EnvName(f.Name)
		if v := getenv(key); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", key, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// TelemetryFlushLimit bounds how long a stopped service spends flushing its last spans.
const TelemetryFlushLimit = 5 * time.Second

// serve sets up telemetry, connects, builds and runs the service, then drains the connection
// and flushes the telemetry (the spans of the work the drain finished included).
func serve(ctx context.Context, c Command, o Options, build Build, log *slog.Logger, getenv func(string) string) error {
	opts, err := o.Auth.Options()
	if err != nil {
		return err
	}
	tel, err := telemetry.New(ctx, telemetry.Config{Version: c.Version, MetricsAddr: o.MetricsAddr, Getenv: getenv, Log: log})
	if err != nil {
		return err
	}
	defer func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), TelemetryFlushLimit)
		defer cancel()
		if err := tel.Shutdown(fctx); err != nil {
			log.Warn("telemetry shutdown", "err", err)
		}
	}()
	if o.Telemetry, err = tel.Service(ctx, c.Name, true); err != nil {
		return err
	}
	if tel.Tracing() || tel.MetricsAddr() != "" {
		log.Info("telemetry on", "service", c.Name, "traces", tel.Tracing(), "metrics_addr", tel.MetricsAddr())
	}
	nc, err := natsx.Connect(ctx, o.NATSURL, "shoal-"+c.Name, log, opts...)
	if err != nil {
		return err
	}
	defer natsx.Close(nc, DrainLimit)
	svc, err := build(o, nc, log)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
