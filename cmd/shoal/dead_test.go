package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/pipeline"
)

// TestDeadListing: `shoal dead` lists what the pipeline dead-lettered, with its stream,
// subject, run, deliveries and reason, and `shoal status` counts it per run.
func TestDeadListing(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	c, err := newClient(ctx, env.Conn, env.Names)
	if err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	if err := listDead(ctx, c, "", &out); err != nil || !strings.Contains(out.String(), "no dead letters") {
		t.Fatalf("empty DEAD: %q (%v), want \"no dead letters\"", out.String(), err)
	}

	cons, err := env.JS.CreateOrUpdateConsumer(ctx, env.Names.TasksStream(), jetstream.ConsumerConfig{
		Durable: "generator", FilterSubject: env.Names.AllTasks(), AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	consumeCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- pipeline.Consume(consumeCtx, cons, pipeline.Config{Name: "test", JetStream: env.JS, Names: env.Names, MaxBackoff: 10 * time.Millisecond},
			func(context.Context, jetstream.Msg) error {
				return pipeline.Permanent(errors.New("model \"m\" is not in the run config"))
			})
	}()
	defer func() { stop(); <-done }()
	for i, run := range []string{"alpha", "alpha", "beta"} {
		if _, err := env.JS.Publish(ctx, env.Names.Task(run, "m"), []byte("{}"), jetstream.WithMsgID(run+string(rune('0'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	var letters []pipeline.DeadLetter
	deadline := time.Now().Add(10 * time.Second)
	for len(letters) < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if letters, err = readDead(ctx, env.JS, env.Names.DeadStream()); err != nil {
			t.Fatal(err)
		}
	}
	if len(letters) != 3 {
		t.Fatalf("%d dead letters, want 3", len(letters))
	}

	out.Reset()
	if err := listDead(ctx, c, "alpha", &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("shoal dead --run alpha printed %d lines, want a header and 2 rows:\n%s", len(lines), out.String())
	}
	for _, want := range []string{"SHOAL_TASKS", "shoal.task.alpha.m", "alpha", "model \"m\" is not in the run config"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	if strings.Contains(out.String(), "beta") {
		t.Errorf("--run alpha shows another run:\n%s", out.String())
	}

	out.Reset()
	tw := tabwriter.NewWriter(&out, 0, 4, 2, ' ', 0)
	printDeadCounts(ctx, tw, c, []string{"alpha", "beta", "gamma"})
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`(?m)^alpha\s+2$`, `(?m)^beta\s+1$`, `(?m)^gamma\s+0$`} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("status dead-letter counts lack %q:\n%s", want, out.String())
		}
	}
}
