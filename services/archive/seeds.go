package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/program"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/pkg/runs"
)

// handleSeed turns a seed into the run's spec (for a new run) and a seed candidate. A seed
// the archive cannot use is answered with an error event and terminated; it never stops the
// service. Either answer names the seed's candidate, which is how `shoal seed` knows its
// seed was taken. Handling the same seed twice changes nothing.
func (s *Service) handleSeed(ctx context.Context, msg jetstream.Msg) error {
	run := s.cfg.Names.RunFromSubject(msg.Subject())
	seed, err := s.decodeSeed(run, msg)
	if err == nil {
		err = s.acceptSeed(ctx, seed)
	}
	candidate := ""
	if id := msg.Headers().Get(protocol.HeaderMsgID); seed != nil || id != "" {
		if seed != nil {
			id = seed.ID
		}
		candidate = protocol.SeedCandidateID(run, id)
	}
	switch {
	case err == nil:
		s.event(ctx, run, protocol.EventSeed, "seed accepted", candidate, 0)
	case errors.Is(err, pipeline.ErrPermanent):
		s.event(ctx, run, protocol.EventError, "seed rejected: "+strings.TrimPrefix(err.Error(), "permanent: "), candidate, 0)
	}
	return err
}

// decodeSeed reads a JSON seed, or a bare program when the body is not a JSON object (what
// `nats pub shoal.seed.<run> < program.py` sends).
func (s *Service) decodeSeed(run string, msg jetstream.Msg) (*protocol.Seed, error) {
	if err := protocol.ValidateRunID(run); err != nil {
		return nil, pipeline.Permanent(fmt.Errorf("seed on %s: %w", msg.Subject(), err))
	}
	body := msg.Data()
	if len(body) > protocol.MaxBodyBytes {
		return nil, pipeline.Permanent(fmt.Errorf("seed for run %s: %w: %d bytes", run, protocol.ErrTooLarge, len(body)))
	}
	// Checked on the raw bytes: decoding would turn each bad byte into U+FFFD, and a program
	// silently rewritten that way is one Python refuses to run.
	if err := program.CheckUTF8(body); err != nil {
		return nil, pipeline.Permanent(fmt.Errorf("seed for run %s: %w", run, err))
	}
	var seed protocol.Seed
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '{' {
		if err := protocol.Decode(body, &seed); err != nil {
			return nil, pipeline.Permanent(fmt.Errorf("seed for run %s: %w", run, err))
		}
		if seed.Run != "" && seed.Run != run {
			return nil, pipeline.Permanent(fmt.Errorf("seed body names run %q but was published to run %q", seed.Run, run))
		}
	} else {
		seed.Program = string(body)
	}
	seed.Run = run
	if seed.ID == "" {
		seed.ID = msg.Headers().Get(protocol.HeaderMsgID)
	}
	if seed.ID == "" {
		md, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("seed metadata: %w", err)
		}
		seed.ID = "seq" + strconv.FormatUint(md.Sequence.Stream, 10)
	}
	if strings.TrimSpace(seed.Program) == "" {
		return nil, pipeline.Permanent(fmt.Errorf("seed for run %s has an empty program", run))
	}
	return &seed, nil
}

func (s *Service) acceptSeed(ctx context.Context, seed *protocol.Seed) error {
	spec, err := s.runs.Spec(ctx, seed.Run)
	switch {
	case errors.Is(err, runs.ErrUnknownRun) && seed.Config == "":
		return pipeline.Permanent(fmt.Errorf("run %s does not exist: start it with `shoal seed --run %s --config config.yaml --evaluator evaluator.py --program initial_program.py`, then add programs", seed.Run, seed.Run))
	case errors.Is(err, runs.ErrUnknownRun):
		if spec, err = s.createRun(ctx, seed); err != nil {
			return err
		}
	case err != nil:
		return err
	case seed.Config != "":
		cfg, _, perr := runconfig.Parse([]byte(seed.Config))
		if perr != nil || cfg.Digest() != spec.ConfigDigest || seed.BundleDigest != spec.BundleDigest {
			return pipeline.Permanent(fmt.Errorf("run %s already exists with another config or evaluator; choose a new run id", seed.Run))
		}
	}
	c := seed.Candidate(spec.Config.Language, spec.ProgramName, s.cfg.ID)
	if _, err := natsx.Publish(ctx, s.js, s.cfg.Names.Candidate(seed.Run), c.ID, c); err != nil {
		return err
	}
	s.log.Info("seed accepted", "run", seed.Run, "candidate", c.ID)
	return nil
}

func (s *Service) createRun(ctx context.Context, seed *protocol.Seed) (*runs.Spec, error) {
	cfg, warnings, err := runconfig.Parse([]byte(seed.Config))
	if err != nil {
		return nil, pipeline.Permanent(fmt.Errorf("run %s config: %w", seed.Run, err))
	}
	for _, w := range warnings {
		s.log.Warn("run config", "run", seed.Run, "warning", w.String())
		s.event(ctx, seed.Run, "warning", "config: "+w.String(), "", 0)
	}
	if seed.BundleDigest == "" {
		return nil, pipeline.Permanent(fmt.Errorf("run %s: the seed carries no evaluator bundle", seed.Run))
	}
	ok, err := bundle.Exists(ctx, s.bundles, seed.BundleDigest)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, pipeline.Permanent(fmt.Errorf("run %s: evaluator bundle %s is not in the bundles store; publish it first (shoal seed does)", seed.Run, seed.BundleDigest))
	}
	name := seed.ProgramName
	if name == "" {
		name = "program" + extension(cfg.Language)
	}
	rs := &protocol.RunSpec{
		Meta:         protocol.Meta{ID: seed.Run, Run: seed.Run},
		Config:       seed.Config,
		ConfigDigest: cfg.Digest(),
		BundleDigest: seed.BundleDigest,
		ProgramName:  name,
		CreatedAt:    time.Now().UTC(),
		Templates:    seed.Templates,
	}
	if _, err := s.runs.CreateSpec(ctx, rs); err != nil {
		return nil, err
	}
	s.log.Info("run created", "run", seed.Run, "config_digest", rs.ConfigDigest)
	s.event(ctx, seed.Run, protocol.EventRunState, "run created", "", 0)
	return s.runs.Spec(ctx, seed.Run)
}

// extension guesses a file extension for a language when the seed names no file.
func extension(language string) string {
	switch strings.ToLower(language) {
	case "python", "":
		return ".py"
	case "go":
		return ".go"
	case "rust":
		return ".rs"
	case "c":
		return ".c"
	case "cpp", "c++":
		return ".cpp"
	case "javascript", "js":
		return ".js"
	case "julia":
		return ".jl"
	default:
		return ".txt"
	}
}
