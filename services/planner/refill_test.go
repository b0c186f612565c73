package planner_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/services/planner"
)

func TestMain(m *testing.M) { natstest.Main(m) }

const refillConfig = `
max_iterations: 100
llm:
  models:
    - name: m
      concurrency: 2
`

// TestFreedSlotIsRefilledWithoutWaitingForTheTick: when the archive folds a result, the
// planner publishes the next task at once, not on its next tick. A model server that
// answers in 100 ms would otherwise wait on the planner.
func TestFreedSlotIsRefilledWithoutWaitingForTheTick(t *testing.T) {
	e := natstest.StartTestEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store, err := runs.Open(ctx, e.JS, e.Names)
	if err != nil {
		t.Fatal(err)
	}
	const run = "refill"
	if _, err := store.CreateSpec(ctx, &protocol.RunSpec{Meta: protocol.Meta{ID: run, Run: run}, Config: refillConfig,
		BundleDigest: "sha256-0", ProgramName: "p.py"}); err != nil {
		t.Fatal(err)
	}
	// The archive's part: the seed is folded and samples are answered.
	state := &protocol.RunState{Meta: protocol.Meta{ID: run, Run: run}, Seeds: 1, ByModel: map[string]int64{}}
	if err := store.PutState(ctx, state); err != nil {
		t.Fatal(err)
	}
	sub, err := e.Conn.Subscribe(e.Names.Sample(run), func(m *nats.Msg) {
		data, _ := protocol.Encode(&protocol.SampleReply{Meta: protocol.Meta{Run: run},
			Parent: protocol.Program{ID: "seed", Code: "x = 1\n", Score: 0.5, Artifacts: map[string]string{"stderr": "a warning"}},
			Top:    []protocol.Program{{ID: "top", Code: "x = 2\n", Score: 0.7}}})
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	tasks, err := e.JS.CreateOrUpdateConsumer(ctx, e.Names.TasksStream(), jetstream.ConsumerConfig{
		FilterSubject: e.Names.AllTasks(), AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}

	const tick = 3 * time.Second
	p, err := planner.New(planner.Config{Names: e.Names, ID: "p1", Tick: tick}, e.Conn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	next := func(within time.Duration) *protocol.Task {
		t.Helper()
		msg, err := tasks.Next(jetstream.FetchMaxWait(within))
		if err != nil {
			t.Fatalf("no task within %v: %v", within, err)
		}
		_ = msg.Ack()
		var task protocol.Task
		if err := protocol.Decode(msg.Data(), &task); err != nil {
			t.Fatal(err)
		}
		return &task
	}
	// concurrency 2 with the default slack keeps 3 in flight.
	for range 3 {
		task := next(30 * time.Second)
		// A model reads the prompt, which holds the parent's artifacts and the other
		// programs: the task carries them once, there.
		prompt := task.Messages[len(task.Messages)-1].Content
		if !strings.Contains(prompt, "a warning") || !strings.Contains(prompt, "x = 2") {
			t.Fatalf("prompt lacks the parent's artifacts or the top program:\n%s", prompt)
		}
		if task.Parent.Code != "x = 1\n" || task.Parent.Artifacts != nil || task.Inspirations != nil {
			t.Fatalf("task carries parent %+v and inspirations %+v; want the parent's code alone", task.Parent, task.Inspirations)
		}
	}
	if msg, err := tasks.Next(jetstream.FetchMaxWait(200 * time.Millisecond)); err == nil {
		t.Fatalf("a fourth task %s with 3 in flight and none folded", msg.Subject())
	}
	var took []time.Duration
	for i := range 5 {
		state.Iterations++
		state.ByModel["m"]++
		begin := time.Now()
		if err := store.PutState(ctx, state); err != nil {
			t.Fatal(err)
		}
		task := next(30 * time.Second)
		took = append(took, time.Since(begin))
		if want := int64(4 + i); task.Iteration != want {
			t.Fatalf("task iteration %d; want %d", task.Iteration, want)
		}
	}
	slices.Sort(took)
	if median := took[len(took)/2]; median >= tick/4 {
		t.Fatalf("median time from a fold to the next task %v (all %v); want well under the %v tick", median, took, tick)
	}
}
