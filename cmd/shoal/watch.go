package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
)

// watchView is how a run's progress is shown: a redrawn progress bar on a terminal, plain
// lines elsewhere (a pipe, a file, CI logs), where a bar's carriage returns would pile up.
type watchView struct {
	tty bool
	// every is how often a plain line is printed while the count moves; a change of status
	// is printed at once.
	every time.Duration
	// poll is how often the runs bucket is read.
	poll time.Duration
}

// newWatchView is the view for out: a bar when it is a terminal.
func newWatchView(out io.Writer, every time.Duration) watchView {
	f, ok := out.(*os.File)
	return watchView{tty: ok && term.IsTerminal(int(f.Fd())), every: every, poll: 250 * time.Millisecond}
}

// watchOutcome is how a watch ended.
type watchOutcome int

const (
	watchInterrupted watchOutcome = iota // ctx ended; the run goes on
	watchDone
	watchFailed
)

func watchCmd() *cobra.Command {
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "watch [RUN]",
		Short: "Follow a run live: evaluations against its budget, rate, best score, failures and ETA",
		Long: `watch follows a run until it ends: a progress bar of evaluations against the run's budget
(max_iterations and its extensions), the recent rate, the best score against the seed's, the
failed evaluations and the time left. With no RUN it follows the only active run, or the
latest started of several, and says which.

On a terminal the bar is redrawn in place; into a pipe or a file it prints a plain line every
--every while the count moves, and one at each change of status.

It exits 0 when the run is done, non-zero with the reason when it failed; interrupted, it
leaves the run going.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := dial(cmd)
			if err != nil {
				return err
			}
			defer c.close()
			ctx, w := cmd.Context(), cmd.OutOrStdout()
			var run string
			if len(args) == 1 {
				run = args[0]
				if _, err := c.spec(ctx, run); err != nil {
					return err
				}
			} else {
				var why string
				if run, why, err = c.activeRun(ctx); err != nil {
					return err
				}
				fmt.Fprintf(w, "watching run %s, %s\n", run, why)
			}
			outcome, err := watchRun(ctx, c, run, w, newWatchView(w, every))
			if outcome == watchInterrupted && err == nil {
				fmt.Fprintf(w, "\nstopped watching; run %s goes on\n", run)
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&every, "every", 5*time.Second, "how often to print a progress line when the output is not a terminal")
	return cmd
}

// activeRun picks the run to watch when none is named: the only active one (seeded, running,
// stopping or paused), else the latest started of them. why says which it took.
func (c *client) activeRun(ctx context.Context) (run, why string, err error) {
	ids, err := c.runs.List(ctx)
	if err != nil {
		return "", "", err
	}
	if len(ids) == 0 {
		return "", "", errors.New("no runs yet: start one with shoal up or shoal seed")
	}
	type candidate struct {
		id      string
		created time.Time
	}
	var active []candidate
	var ended []string
	for _, id := range ids {
		pst, err := c.runs.Planner(ctx, id)
		if err != nil {
			return "", "", err
		}
		if pst.Status == protocol.RunDone || pst.Status == protocol.RunFailed {
			ended = append(ended, fmt.Sprintf("%s %s", id, pst.Status))
			continue
		}
		spec, err := c.runs.Spec(ctx, id)
		if err != nil {
			return "", "", err
		}
		active = append(active, candidate{id, spec.CreatedAt})
	}
	switch len(active) {
	case 0:
		return "", "", fmt.Errorf("no run is active (%s): name one, shoal watch RUN", strings.Join(ended, ", "))
	case 1:
		return active[0].id, "the only active run", nil
	}
	latest := slices.MaxFunc(active, func(a, b candidate) int { return a.created.Compare(b.created) })
	others := make([]string, 0, len(active)-1)
	for _, a := range active {
		if a.id != latest.id {
			others = append(others, a.id)
		}
	}
	return latest.id, fmt.Sprintf("the latest started of %d active runs (also %s)", len(active), strings.Join(others, ", ")), nil
}

// progress is what the view shows of a run at one moment.
type progress struct {
	run       string
	status    protocol.RunStatus
	reason    string // why it stops or stopped
	evaluated int64  // generated candidates folded
	budget    int64  // max_iterations with its extensions; 0: none
	failed    int64
	best      float64
	seed      float64
	seeded    bool          // the archive has folded a seed: best and seed mean something
	rate      float64       // evaluations per second, recently
	eta       time.Duration // < 0: unknown
}

// summary is the progress in words, after the bar on a terminal and alone on a plain line.
func (p progress) summary() string {
	if !p.seeded {
		return "evaluating the seed"
	}
	parts := []string{fmt.Sprintf("%.1f/s", p.rate)}
	switch {
	case p.status == protocol.RunPaused:
		parts = append(parts, "paused")
	case p.status == protocol.RunStopping:
		parts = append(parts, "stopping: "+p.reason)
	case p.eta >= 0:
		parts = append(parts, "ETA "+p.eta.Round(time.Second).String())
	}
	parts = append(parts, fmt.Sprintf("best %.4f (seed %.4f)", p.best, p.seed), fmt.Sprintf("%d failed", p.failed))
	return strings.Join(parts, " · ")
}

// line is the progress as one plain line.
func (p progress) line() string {
	count := fmt.Sprintf("%d evaluations", p.evaluated)
	if p.budget > 0 {
		count = fmt.Sprintf("%d/%d evaluations (%d%%)", p.evaluated, p.budget, 100*p.evaluated/p.budget)
	}
	return fmt.Sprintf("%s: %s · %s", p.run, count, p.summary())
}

// rateMeter measures evaluations per second over the last rateWindow of readings.
type rateMeter struct {
	readings []reading
}

type reading struct {
	at time.Time
	n  int64
}

const rateWindow = 20 * time.Second

// add records n evaluations at time at and returns the rate over the window, or ok false
// while the window spans too little time to say.
func (m *rateMeter) add(at time.Time, n int64) (rate float64, ok bool) {
	m.readings = append(m.readings, reading{at, n})
	for len(m.readings) > 2 && at.Sub(m.readings[1].at) >= rateWindow {
		m.readings = m.readings[1:]
	}
	first := m.readings[0]
	span := at.Sub(first.at)
	if span < 2*time.Second {
		return 0, false
	}
	return float64(n-first.n) / span.Seconds(), true
}

// runningTime is how long the run has been running, pauses and stops not counted (what
// max_wall_time counts).
func runningTime(pst *protocol.PlannerState, now time.Time) time.Duration {
	d := pst.RanFor
	if pst.Status == protocol.RunRunning && !pst.RunningSince.IsZero() {
		d += now.Sub(pst.RunningSince)
	}
	return d
}

// read takes the run's progress from the runs bucket, as `shoal status` does.
func (c *client) read(ctx context.Context, run string, spec *runs.Spec, m *rateMeter, now time.Time) (progress, *protocol.PlannerState, *protocol.RunState, error) {
	p := progress{run: run, eta: -1}
	pst, err := c.runs.Planner(ctx, run)
	if err != nil {
		return p, nil, nil, err
	}
	ctl, err := c.runs.Control(ctx, run)
	if err != nil {
		return p, nil, nil, err
	}
	st, err := c.runs.State(ctx, run)
	if errors.Is(err, runs.ErrUnknownRun) {
		st, err = &protocol.RunState{}, nil // the seed is not folded yet
	} else {
		p.seeded = true
	}
	if err != nil {
		return p, nil, nil, err
	}
	p.status, p.reason = pst.Status, pst.StopReason
	if ctl.Paused && pst.Status == protocol.RunRunning {
		p.status = protocol.RunPaused // asked; the planner acts on its next tick
	}
	p.evaluated, p.failed, p.best, p.seed = st.Iterations, st.Failed, st.BestScore, st.SeedScore
	if spec.Config.MaxIterations > 0 {
		p.budget = spec.Config.MaxIterations + ctl.ExtraIterations
	}
	ran := runningTime(pst, now)
	rate, ok := m.add(now, st.Iterations)
	if !ok && ran > 0 {
		rate = float64(st.Iterations) / ran.Seconds() // just attached: the run's own average
	}
	p.rate = rate
	if p.budget > 0 && rate > 0 {
		p.eta = time.Duration(float64(max(p.budget-p.evaluated, 0)) / rate * float64(time.Second))
	}
	if wall := spec.Config.MaxWallTime; wall > 0 {
		left := max(wall+ctl.ExtraWallTime-ran, 0)
		if p.eta < 0 || left < p.eta {
			p.eta = left
		}
	}
	return p, pst, st, nil
}

// watchRun shows run's progress on w until the run ends or ctx does. A failed run is an
// error carrying its reason.
func watchRun(ctx context.Context, c *client, run string, w io.Writer, v watchView) (watchOutcome, error) {
	spec, err := c.spec(ctx, run)
	if err != nil {
		return watchInterrupted, err
	}
	var m rateMeter
	var bar *progressbar.ProgressBar
	if v.tty {
		max := int64(-1)
		if spec.Config.MaxIterations > 0 {
			max = spec.Config.MaxIterations
		}
		bar = progressbar.NewOptions64(max,
			progressbar.OptionSetWriter(w),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetPredictTime(false), // ours counts from the run's rate, not the bar's
			progressbar.OptionSetElapsedTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
		)
	}
	var printed time.Time
	var last progress
	t := time.NewTicker(v.poll)
	defer t.Stop()
	for {
		now := time.Now()
		p, pst, st, err := c.read(ctx, run, spec, &m, now)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			// A server restart or a slow read: the next tick tries again.
		case bar != nil:
			if p.budget > 0 && p.budget != bar.GetMax64() {
				bar.ChangeMax64(p.budget) // `shoal run extend`
			}
			bar.Describe(p.summary())
			_ = bar.Set64(p.evaluated)
		case p.status == protocol.RunDone || p.status == protocol.RunFailed:
			// The outcome follows below.
		case printed.IsZero() || p.status != last.status || p.seeded != last.seeded ||
			(p.evaluated != last.evaluated && now.Sub(printed) >= v.every):
			if l := p.line(); l != last.line() || printed.IsZero() {
				fmt.Fprintln(w, l)
			}
			printed, last = now, p
		}
		if err == nil && ctx.Err() == nil {
			switch pst.Status {
			case protocol.RunDone:
				if bar != nil {
					_ = bar.Finish()
					fmt.Fprintln(w)
				}
				fmt.Fprintf(w, "run %s done (%s): %d iterations, %d failed, best score %.6g (seed %.6g)\n",
					run, pst.StopReason, st.Iterations, st.Failed, st.BestScore, st.SeedScore)
				return watchDone, nil
			case protocol.RunFailed:
				if bar != nil {
					_ = bar.Exit()
				}
				return watchFailed, runFailed(w, run, pst, st)
			}
		}
		select {
		case <-ctx.Done():
			if bar != nil {
				_ = bar.Exit()
			}
			return watchInterrupted, nil
		case <-t.C:
		}
	}
}
