package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/services/archive"
	"github.com/shoal-run/shoal/services/evaluator"
	"github.com/shoal-run/shoal/services/generator"
	"github.com/shoal-run/shoal/services/planner"
)

// stack is shoal's services running in this process over one embedded JetStream server, as
// `shoal up` runs them, each service on its own connection.
type stack struct {
	srv   *natsx.Embedded
	nc    *nats.Conn // the harness's own connection
	js    jetstream.JetStream
	runs  *runs.Store
	names protocol.Names
	// cacheDir is the evaluator's bundle cache and work dirs.
	cacheDir string

	stops []func() error
}

// service names the parts a stack may run.
type service string

const (
	svcPlanner   service = "planner"
	svcGenerator service = "generator"
	svcEvaluator service = "evaluator"
	svcArchive   service = "archive"
)

// startStack starts an embedded server with its storage and the evaluator's cache under dir,
// and the given services. Evolution needs all four; random search needs only the archive
// (which turns the seed into a candidate and folds results) and the evaluator.
func startStack(ctx context.Context, dir string, log *slog.Logger, services ...service) (*stack, error) {
	srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: filepath.Join(dir, "jetstream"), MaxPayload: 8 << 20})
	if err != nil {
		return nil, err
	}
	s := &stack{srv: srv, names: protocol.NewNames(""), cacheDir: filepath.Join(dir, "evaluator")}
	if err := s.connect(ctx); err != nil {
		s.close()
		return nil, err
	}
	for _, name := range services {
		if err := s.start(name, log); err != nil {
			s.close()
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
	}
	return s, nil
}

func (s *stack) connect(ctx context.Context) error {
	nc, err := s.srv.Connect("bench-search")
	if err != nil {
		return err
	}
	s.nc = nc
	if s.js, err = jetstream.New(nc); err != nil {
		return err
	}
	if err := natsx.Provision(ctx, s.js, s.names); err != nil {
		return err
	}
	s.runs, err = runs.Open(ctx, s.js, s.names)
	return err
}

// start runs one service until close; it uses only the service's public New and Run.
func (s *stack) start(name service, log *slog.Logger) error {
	nc, err := s.srv.Connect("bench-" + string(name))
	if err != nil {
		return err
	}
	var run func(context.Context) error
	switch name {
	case svcPlanner:
		var p *planner.Service
		if p, err = planner.New(planner.Config{Names: s.names}, nc, log); err == nil {
			run = p.Run
		}
	case svcGenerator:
		var g *generator.Service
		if g, err = generator.New(generator.Config{Names: s.names, GPUs: "none"}, nc, log); err == nil {
			run = g.Run
		}
	case svcEvaluator:
		var e *evaluator.Service
		if e, err = evaluator.New(evaluator.Config{Names: s.names, Python: os.Getenv("SHOAL_PYTHON"), CacheDir: s.cacheDir}, nc, log); err == nil {
			run = e.Run
		}
	case svcArchive:
		var a *archive.Service
		if a, err = archive.New(archive.Config{Names: s.names}, nc, log); err == nil {
			run = a.Run
		}
	default:
		err = fmt.Errorf("unknown service %q", name)
	}
	if err != nil {
		nc.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	s.stops = append(s.stops, func() error {
		cancel()
		err := <-done
		nc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
	return nil
}

// close stops the services (last started first), then the server, and removes the
// evaluator's cache, whose bundles are read-only.
func (s *stack) close() error {
	var errs []error
	for i := len(s.stops) - 1; i >= 0; i-- {
		errs = append(errs, s.stops[i]())
	}
	s.stops = nil
	if s.nc != nil {
		s.nc.Close()
	}
	s.srv.Shutdown()
	errs = append(errs, bundle.RemoveCache(s.cacheDir))
	return errors.Join(errs...)
}
