package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/runs"
)

func bestCmd() *cobra.Command {
	var run, out string
	cmd := &cobra.Command{
		Use:   "best [--run RUN] [-o FILE]",
		Short: "Write a run's best program to FILE (or stdout)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dial(cmd)
			if err != nil {
				return err
			}
			defer c.close()
			ctx := cmd.Context()
			if run, err = c.pickRun(ctx, run); err != nil {
				return err
			}
			if _, err := c.spec(ctx, run); err != nil {
				return err
			}
			b, err := c.runs.Best(ctx, run)
			if errors.Is(err, runs.ErrUnknownRun) {
				status := "seeded"
				if pst, perr := c.runs.Planner(ctx, run); perr == nil && pst.Status != "" {
					status = string(pst.Status)
				}
				return fmt.Errorf("run %s has no evaluated program yet (it is %s; shoal status --run %s says more)", run, status, run)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "run %s: best program %s, score %.6g, generation %d\n", run, b.Program.ID, b.Program.Score, b.Program.Generation)
			if out == "" || out == "-" {
				_, err = fmt.Fprint(cmd.OutOrStdout(), b.Program.Code)
				return err
			}
			return os.WriteFile(out, []byte(b.Program.Code), 0o644)
		},
	}
	cmd.Flags().StringVar(&run, "run", "", "run id (default: the only run)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (default stdout)")
	return cmd
}
