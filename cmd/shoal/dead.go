package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/pipeline"
)

func deadCmd() *cobra.Command {
	var run string
	cmd := &cobra.Command{
		Use:   "dead",
		Short: "List dead letters: messages no service could settle, with where they came from and why they died",
		Long: "List the DEAD stream: tasks, candidates and seeds that exhausted their deliveries or could not\n" +
			"be read, oldest first, with the last error. The original bodies stay on the stream\n" +
			"(`nats stream view SHOAL_DEAD`) so they can be inspected or republished by hand.",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dial(cmd)
			if err != nil {
				return err
			}
			defer c.close()
			return listDead(cmd.Context(), c, run, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&run, "run", "", "show one run's dead letters")
	return cmd
}

// listDead writes a table of the dead letters of run (every run when empty).
func listDead(ctx context.Context, c *client, run string, w io.Writer) error {
	letters, err := readDead(ctx, c.js, c.names.DeadStream())
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tSTREAM\tSUBJECT\tRUN\tDELIVERIES\tREASON")
	shown := 0
	for _, d := range letters {
		if run != "" && d.Run != run {
			continue
		}
		shown++
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", d.Time.Local().Format(time.DateTime), d.Stream, d.Subject, d.Run, d.Deliveries, d.Reason)
	}
	if shown == 0 {
		_, err := fmt.Fprintln(w, "no dead letters")
		return err
	}
	return tw.Flush()
}

// printDeadCounts follows `shoal status`'s table with each run's count of dead letters; a
// count above zero means work that no retry could finish (`shoal dead --run <run>`).
func printDeadCounts(ctx context.Context, tw io.Writer, c *client, runs []string) {
	letters, err := readDead(ctx, c.js, c.names.DeadStream())
	if err != nil {
		fmt.Fprintf(tw, "\ndead letters: %v\n", err)
		return
	}
	counts := map[string]int{}
	for _, d := range letters {
		counts[d.Run]++
	}
	fmt.Fprintln(tw, "\nRUN\tDEAD LETTERS")
	for _, r := range runs {
		fmt.Fprintf(tw, "%s\t%d\n", r, counts[r])
	}
}

// readDead reads the headers of every dead letter, oldest first; the bodies stay on the
// server.
func readDead(ctx context.Context, js jetstream.JetStream, stream string) ([]pipeline.DeadLetter, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{HeadersOnly: true})
	if err != nil {
		return nil, fmt.Errorf("dead letters: %w", err)
	}
	var out []pipeline.DeadLetter
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("dead letters: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("dead letters: %w", err)
			}
			out = append(out, pipeline.ReadDeadLetter(m.Headers(), nil, md.Timestamp))
			if md.NumPending == 0 {
				return out, nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("dead letters: %w", err)
		}
		if got == 0 {
			return out, nil // the rest was removed while reading
		}
	}
}
