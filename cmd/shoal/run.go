package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// runCmd groups the commands that steer a run: they write the run's control value in the
// runs bucket (<run>.control), which the planner obeys on its next tick.
func runCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Pause, resume or extend a run",
	}
	pause := &cobra.Command{
		Use:   "pause RUN",
		Short: "Stop issuing new tasks; tasks in flight finish and the run shows as paused",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return controlRun(cmd, args[0], func(c *protocol.RunControl) { c.Paused = true }, "paused")
		},
	}
	resume := &cobra.Command{
		Use:   "resume RUN",
		Short: "Issue tasks again after a pause",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return controlRun(cmd, args[0], func(c *protocol.RunControl) { c.Paused = false }, "resumed")
		},
	}
	var iterations int64
	var wall time.Duration
	extend := &cobra.Command{
		Use:   "extend RUN --iterations N [--wall-time D]",
		Short: "Raise a run's budget; a stopping or finished run goes on with the larger one",
		Long: `extend adds N iterations to the run's max_iterations and D to its max_wall_time (running
time: time paused or stopped does not count). A run that stopped at its budget runs again; a
plateau stop gets a fresh early_stopping_patience window; a run that reached target_score
stays done.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if iterations <= 0 && wall <= 0 {
				return errors.New("extend needs --iterations N or --wall-time D (more than 0)")
			}
			return controlRun(cmd, args[0], func(c *protocol.RunControl) {
				c.ExtraIterations += max(iterations, 0)
				c.ExtraWallTime += max(wall, 0)
				c.Extensions++
			}, "extended")
		},
	}
	extend.Flags().Int64Var(&iterations, "iterations", 0, "iterations to add to max_iterations")
	extend.Flags().DurationVar(&wall, "wall-time", 0, "running time to add to max_wall_time (e.g. 30m)")
	cmd.AddCommand(pause, resume, extend)
	return cmd
}

func controlRun(cmd *cobra.Command, run string, change func(*protocol.RunControl), what string) error {
	if err := protocol.ValidateRunID(run); err != nil {
		return err
	}
	c, err := dial(cmd)
	if err != nil {
		return err
	}
	defer c.close()
	return c.control(cmd.Context(), run, change, what, cmd.OutOrStdout())
}

// control applies change to run's control value and says what the run's budget now is.
func (c *client) control(ctx context.Context, run string, change func(*protocol.RunControl), what string, w io.Writer) error {
	spec, err := c.runs.Spec(ctx, run)
	if err != nil {
		return err
	}
	ctl, err := c.runs.UpdateControl(ctx, run, change)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "run %s %s; budget: %s\n", run, what, budget(spec.Config.MaxIterations, spec.Config.MaxWallTime, ctl))
	return nil
}

// budget describes a run's iterations and wall-time budget with its extensions.
func budget(maxIter int64, maxWall time.Duration, ctl *protocol.RunControl) string {
	it := "no iteration limit"
	if maxIter > 0 {
		it = fmt.Sprintf("%d iterations", maxIter+ctl.ExtraIterations)
	}
	if maxWall > 0 {
		it += fmt.Sprintf(", %s running time", maxWall+ctl.ExtraWallTime)
	}
	if ctl.Paused {
		it += " (paused)"
	}
	return it
}
