package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
)

func seedCmd() *cobra.Command {
	var config, evaluator, program, run, backend string
	var iterations int64
	cmd := &cobra.Command{
		Use:   "seed --run RUN [--config C --evaluator E] (--program P | P)",
		Short: "Start a run on a running deployment, or add a program to an existing run",
		Long: `seed publishes to shoal.seed.<run>. With --config and --evaluator it starts a new run: the
evaluator's directory is stored in the bundles object store and the config and seed program are
published. With a program alone it adds that program to an existing run, as
'nats pub shoal.seed.<run> < program.py' does.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				program = firstNonEmpty(program, args[0])
			}
			if run == "" || program == "" {
				return fmt.Errorf("seed needs --run and a program")
			}
			c, err := dial(cmd)
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
				if _, err := seedRun(ctx, c, run, p, overrides{backend: backend, maxIterations: iterations}, warn); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "seeded run %s\n", run)
				return nil
			}
			if err := protocol.ValidateRunID(run); err != nil {
				return err
			}
			if _, err := c.runs.Spec(ctx, run); err != nil {
				return fmt.Errorf("%w: start the run with --config, --evaluator and --program first", err)
			}
			text, err := os.ReadFile(program)
			if err != nil {
				return err
			}
			seed := &protocol.Seed{
				Meta:        protocol.Meta{ID: fmt.Sprintf("seed-%s-%d", run, time.Now().UnixNano()), Run: run},
				Program:     string(text),
				ProgramName: filepath.Base(program),
				CreatedAt:   time.Now().UTC(),
			}
			if _, err := natsx.Publish(ctx, c.js, c.names.Seed(run), seed.ID, seed); err != nil {
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
	return cmd
}
