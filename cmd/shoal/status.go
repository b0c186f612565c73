package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/protocol"
)

func statusCmd() *cobra.Command {
	var run string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each run's progress: iterations, best score, population, tasks in flight",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dial(cmd)
			if err != nil {
				return err
			}
			defer c.close()
			return printStatus(cmd.Context(), cmd.OutOrStdout(), c, run)
		},
	}
	cmd.Flags().StringVar(&run, "run", "", "show one run")
	return cmd
}

// searchLine tells how a run spent its evaluations when that is news: each model's share of
// the results and how many of them beat their parent, when the run has more than one model,
// and the candidates skipped as too like one already evaluated (database.novelty_threshold).
func searchLine(st *protocol.RunState) string {
	var parts []string
	if len(st.Models) > 1 {
		var total int64
		for name := range st.Models {
			total += st.ByModel[name]
		}
		for _, name := range slices.Sorted(maps.Keys(st.Models)) {
			m := st.Models[name]
			parts = append(parts, fmt.Sprintf("%s %d results (%.0f%%), %d improved on their parent",
				name, st.ByModel[name], 100*float64(st.ByModel[name])/float64(max(total, 1)), m.Improvements))
		}
	}
	if st.NoveltyRejected > 0 {
		parts = append(parts, fmt.Sprintf("novelty_rejected %d (evaluations saved)", st.NoveltyRejected))
	}
	return strings.Join(parts, "; ")
}

// printStatus writes a table of the runs (run, or every run when it is ""): status,
// iterations, tasks in flight, failures, population, scores and why a run stopped; a failed
// run's reason in full follows the table.
func printStatus(ctx context.Context, w io.Writer, c *client, run string) error {
	var err error
	ids := []string{run}
	if run == "" {
		if ids, err = c.runs.List(ctx); err != nil {
			return err
		}
	}
	if len(ids) == 0 {
		fmt.Fprintln(w, "no runs")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	failed := map[string]string{} // run → why, in full below the table
	notes := map[string]string{}  // run → its models' shares and novelty rejections
	fmt.Fprintln(tw, "RUN\tSTATUS\tITERATIONS\tIN FLIGHT\tFAILED\tPOPULATION\tBEST\tSEED\tSTOP REASON")
	for _, id := range ids {
		spec, err := c.runs.Spec(ctx, id)
		if err != nil {
			fmt.Fprintf(tw, "%s\t%v\n", id, err)
			continue
		}
		pst, err := c.runs.Planner(ctx, id)
		if err != nil {
			return err
		}
		status := string(pst.Status)
		if status == "" {
			status = "seeded"
		}
		reason := pst.StopReason
		if pst.Status == protocol.RunFailed {
			failed[id] = reason
			reason, _, _ = strings.Cut(reason, "\n") // a traceback follows below the table
		}
		ctl, err := c.runs.Control(ctx, id)
		if err != nil {
			return err
		}
		if ctl.Paused && pst.Status == protocol.RunRunning {
			status = "pausing" // asked; the planner has not acted yet
		}
		maxIter := "-"
		if spec.Config.MaxIterations > 0 {
			maxIter = fmt.Sprint(spec.Config.MaxIterations + ctl.ExtraIterations)
		}
		st, err := c.runs.State(ctx, id)
		if err != nil {
			fmt.Fprintf(tw, "%s\t%s\t0/%s\t-\t-\t-\t-\t-\t%s\n", id, status, maxIter, reason)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%s\t%d\t%d\t%d\t%.6g\t%.6g\t%s\n", id, status, st.Iterations, maxIter,
			max(pst.Issued-st.Iterations, 0), st.Failed, st.Population, st.BestScore, st.SeedScore, reason)
		if line := searchLine(st); line != "" {
			notes[id] = line
		}
	}
	printDeadCounts(ctx, tw, c, ids)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, id := range ids {
		if line, ok := notes[id]; ok {
			fmt.Fprintf(w, "\nrun %s: %s\n", id, line)
		}
		if why, ok := failed[id]; ok {
			fmt.Fprintf(w, "\nrun %s failed: %s\n", id, why)
		}
	}
	return nil
}

// runFailed reports a run that ended as failed: what was folded, and the reason (the
// seed's evaluator error) in full, since it is what the user must fix.
func runFailed(w io.Writer, run string, pst *protocol.PlannerState, st *protocol.RunState) error {
	fmt.Fprintf(w, "\nrun %s failed after %d seed(s) and %d iterations\n", run, st.Seeds, st.Iterations)
	return fmt.Errorf("%w: run %s: %s", errRunFailed, run, pst.StopReason)
}
