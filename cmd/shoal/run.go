package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
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
			return controlRun(cmd, args[0], func(c *protocol.RunControl) { c.Paused = true }, "paused", refuseFinished)
		},
	}
	resume := &cobra.Command{
		Use:   "resume RUN",
		Short: "Issue tasks again after a pause",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return controlRun(cmd, args[0], func(c *protocol.RunControl) { c.Paused = false }, "resumed", refuseFinished)
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
			}, "extended", refuseFailed)
		},
	}
	extend.Flags().Int64Var(&iterations, "iterations", 0, "iterations to add to max_iterations")
	extend.Flags().DurationVar(&wall, "wall-time", 0, "running time to add to max_wall_time (e.g. 30m)")
	cmd.AddCommand(pause, resume, extend)
	return cmd
}

// refuseFinished refuses to pause or resume a run that is done or failed: the control would
// be written, and the planner ignore it, so "paused" would be a false report.
func refuseFinished(run string, pst *protocol.PlannerState) error {
	switch pst.Status {
	case protocol.RunDone:
		return fmt.Errorf("%w: run %s is done (%s); shoal run extend %s --iterations N gives it more", errRunFinished, run, pst.StopReason, run)
	case protocol.RunFailed:
		return refuseFailed(run, pst)
	}
	return nil
}

// refuseFailed refuses to steer a failed run: nothing wakes it (its seed did not evaluate).
func refuseFailed(run string, pst *protocol.PlannerState) error {
	if pst.Status != protocol.RunFailed {
		return nil
	}
	reason, _, _ := strings.Cut(pst.StopReason, "\n")
	return fmt.Errorf("%w: run %s failed (%s); seed a new run once the cause is fixed", errRunFinished, run, reason)
}

func controlRun(cmd *cobra.Command, run string, change func(*protocol.RunControl), what string, allowed func(string, *protocol.PlannerState) error) error {
	if err := protocol.ValidateRunID(run); err != nil {
		return err
	}
	c, err := dial(cmd)
	if err != nil {
		return err
	}
	defer c.close()
	ctx := cmd.Context()
	if _, err := c.spec(ctx, run); err != nil {
		return err
	}
	pst, err := c.runs.Planner(ctx, run)
	if err != nil {
		return err
	}
	if err := allowed(run, pst); err != nil {
		return err
	}
	return c.control(ctx, run, change, what, cmd.OutOrStdout())
}

// control applies change to run's control value and says what the run's budget now is.
func (c *client) control(ctx context.Context, run string, change func(*protocol.RunControl), what string, w io.Writer) error {
	spec, err := c.spec(ctx, run)
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
