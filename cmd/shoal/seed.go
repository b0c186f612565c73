package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/natsx"
	prog "github.com/shoal-run/shoal/pkg/program"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

func seedCmd() *cobra.Command {
	var config, evaluator, program, run, backend string
	var iterations int64
	var wait time.Duration
	var profiles string
	cmd := &cobra.Command{
		Use:   "seed --run RUN [--config C --evaluator E] (--program P | P)",
		Short: "Start a run on a running deployment, or add a program to an existing run",
		Long: `seed publishes to shoal.seed.<run>. With --config and --evaluator it starts a new run: the
evaluator's directory is stored in the bundles object store and the config and seed program are
published. With a program alone it adds that program to an existing run, as
'nats pub shoal.seed.<run> < program.py' does.

seed returns once the archive has taken the seed, and fails with the archive's reason when it
refuses it (an empty or non-UTF-8 program, a run that does not exist, a config that differs
from the run's), or when no archive answers within --wait.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				program = firstNonEmpty(program, args[0])
			}
			if run == "" || program == "" {
				return fmt.Errorf("seed needs --run and a program")
			}
			c, err := dialSeeder(cmd)
			if err != nil {
				return err
			}
			defer c.close()
			ctx := cmd.Context()
			if evaluator != "" {
				p, err := problemFiles("", config, evaluator, program, "")
				if err != nil {
					return err
				}
				warn := func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), "warning:", s) }
				o := seedOptions{overrides: overrides{backend: backend, maxIterations: iterations}, wait: wait}
				if profiles != "" {
					// The generators' profiles are known here: a run none of them serves is refused now.
					if o.profiles, _, err = runconfig.LoadProfiles(profiles); err != nil {
						return fmt.Errorf("--profiles: %w", err)
					}
					o.checkProfiles = true
				}
				if _, err := seedProblem(ctx, c, run, p, o, warn); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "seeded run %s\n", run)
				return nil
			}
			if err := addProgram(ctx, c, run, program, wait); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added %s to run %s\n", program, run)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&run, "run", "", "run id")
	f.StringVar(&config, "config", "", "run config (new run)")
	f.StringVar(&evaluator, "evaluator", "", "evaluator file (new run)")
	f.StringVar(&program, "program", "", "seed program")
	f.StringVar(&backend, "backend", "", `"mutate" replaces the config's models`)
	f.Int64Var(&iterations, "iterations", 0, "override max_iterations (new run)")
	f.DurationVar(&wait, "wait", defaultSeedWait, "how long to wait for the archive to take the seed")
	f.StringVar(&profiles, "profiles", os.Getenv("SHOAL_PROFILES"), "the generators' launch profiles file: when given, a launched model must name one of them (env SHOAL_PROFILES)")
	return cmd
}

// addProgram adds the program at path to an existing run, once it is known to be a program
// and the run to exist.
func addProgram(ctx context.Context, c *client, run, path string, wait time.Duration) error {
	if err := protocol.ValidateRunID(run); err != nil {
		return err
	}
	if _, err := c.runs.Spec(ctx, run); err != nil {
		return fmt.Errorf("%w: start the run with --config, --evaluator and --program first", err)
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := prog.CheckText(text); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	seed := &protocol.Seed{
		Meta:        protocol.Meta{ID: fmt.Sprintf("seed-%s-%d", run, time.Now().UnixNano()), Run: run},
		Program:     string(text),
		ProgramName: filepath.Base(path),
		CreatedAt:   time.Now().UTC(),
	}
	return publishSeed(ctx, c, seed, wait)
}

// publishSeed publishes seed and waits until the archive has taken it, so that "seeded" means
// the run exists. The archive answers every seed with an event of the run naming the seed's
// candidate: accepted, or an error with the reason it was refused. wait bounds the wait (0:
// defaultSeedWait); a seed no archive takes stays in the SEEDS stream for the next one.
func publishSeed(ctx context.Context, c *client, seed *protocol.Seed, wait time.Duration) error {
	if wait <= 0 {
		wait = defaultSeedWait
	}
	candidate := protocol.SeedCandidateID(seed.Run, seed.ID)
	answers := make(chan protocol.Event, 1)
	// Subscribed before the publish, so the answer cannot come first.
	sub, err := c.nc.Subscribe(c.names.RunEvents(seed.Run), func(m *nats.Msg) {
		var ev protocol.Event
		if protocol.Decode(m.Data, &ev) != nil || ev.CandidateID != candidate {
			return
		}
		select {
		case answers <- ev:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("watch run %s for the archive's answer: %w", seed.Run, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := c.nc.FlushTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("watch run %s for the archive's answer: %w", seed.Run, err)
	}
	ack, err := natsx.Publish(ctx, c.js, c.names.Seed(seed.Run), seed.ID, seed)
	if err != nil {
		return err
	}
	if ack.Duplicate {
		// The same seed was published moments ago: its answer has gone by.
		if _, err := c.runs.Spec(ctx, seed.Run); err == nil {
			return nil
		}
		return fmt.Errorf("%w: the same seed of run %s was published moments ago and the run does not exist (yet); see `shoal status --run %s`", errSeedNoAnswer, seed.Run, seed.Run)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case ev := <-answers:
		if ev.Kind == protocol.EventError {
			return fmt.Errorf("%w: %s", errSeedRejected, strings.TrimPrefix(ev.Message, "seed rejected: "))
		}
		return nil
	case <-t.C:
		return fmt.Errorf("%w: no archive answered within %s (is one running on this deployment?); the seed stays in %s and an archive takes it when it starts: `shoal status --run %s` shows the run then",
			errSeedNoAnswer, wait, c.names.SeedsStream(), seed.Run)
	case <-ctx.Done():
		return ctx.Err()
	}
}
