package planner_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/services/planner"
)

const batchConfig = `
max_iterations: 100
database:
  num_islands: 3
llm:
  models:
    - name: m
      concurrency: 8
`

// batchEnv is a run whose seed is folded, an archive's sample responder that answers each
// sample with a parent named after its island and seed (at most limit of a request's More;
// limit < 0 answers all), and a consumer of every task.
type batchEnv struct {
	e        *natstest.TestEnv
	store    *runs.Store
	tasks    jetstream.Consumer
	state    *protocol.RunState
	requests atomic.Int64 // sample requests the server carried
}

const batchRun = "batch"

func startBatchEnv(t *testing.T, limit int) *batchEnv {
	t.Helper()
	e := natstest.StartTestEnv(t)
	ctx := context.Background()
	store, err := runs.Open(ctx, e.JS, e.Names)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateSpec(ctx, &protocol.RunSpec{Meta: protocol.Meta{ID: batchRun, Run: batchRun}, Config: batchConfig,
		BundleDigest: "sha256-0", ProgramName: "p.py"}); err != nil {
		t.Fatal(err)
	}
	b := &batchEnv{e: e, store: store, state: &protocol.RunState{Meta: protocol.Meta{ID: batchRun, Run: batchRun}, Seeds: 1, ByModel: map[string]int64{}}}
	if err := store.PutState(ctx, b.state); err != nil {
		t.Fatal(err)
	}
	parent := func(island int, seed int64) protocol.Program {
		return protocol.Program{ID: fmt.Sprintf("p-%d-%d", island, seed), Code: "x = 1\n", Island: island}
	}
	answer, err := e.Conn.QueueSubscribe(e.Names.Sample(batchRun), "archive", func(m *nats.Msg) {
		var req protocol.SampleRequest
		if err := protocol.Decode(m.Data, &req); err != nil {
			t.Error(err)
			return
		}
		reply := &protocol.SampleReply{Meta: protocol.Meta{Run: batchRun}, Parent: parent(req.Island, req.Seed)}
		for i, w := range req.More {
			if limit >= 0 && i >= limit {
				break
			}
			reply.More = append(reply.More, protocol.Sample{Parent: parent(w.Island, w.Seed)})
		}
		data, _ := protocol.Encode(reply)
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	// A second connection counts the requests as the server carries them.
	counter, err := e.Server.Connect("sample-counter")
	if err != nil {
		t.Fatal(err)
	}
	count, err := counter.Subscribe(e.Names.Sample(batchRun), func(*nats.Msg) { b.requests.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	if err := counter.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = count.Unsubscribe()
		counter.Close()
		_ = answer.Unsubscribe()
	})
	if b.tasks, err = e.JS.CreateOrUpdateConsumer(ctx, e.Names.TasksStream(), jetstream.ConsumerConfig{
		FilterSubject: e.Names.AllTasks(), AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	return b
}

// startPlanner runs a planner; its tick (1 s) is what first finds it owns the run.
func (b *batchEnv) startPlanner(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p, err := planner.New(planner.Config{Names: b.e.Names, ID: "p1", Tick: time.Second}, b.e.Conn, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// take reads n tasks, failing if any is missing; then it checks that no further task
// comes within a short wait.
func (b *batchEnv) take(t *testing.T, n int) []*protocol.Task {
	t.Helper()
	var out []*protocol.Task
	for len(out) < n {
		msg, err := b.tasks.Next(jetstream.FetchMaxWait(30 * time.Second))
		if err != nil {
			t.Fatalf("%d tasks of %d: %v", len(out), n, err)
		}
		_ = msg.Ack()
		var task protocol.Task
		if err := protocol.Decode(msg.Data(), &task); err != nil {
			t.Fatal(err)
		}
		out = append(out, &task)
	}
	if msg, err := b.tasks.Next(jetstream.FetchMaxWait(300 * time.Millisecond)); err == nil {
		t.Fatalf("task %s beyond the %d expected", msg.Subject(), n)
	}
	return out
}

// checkTasks checks that tasks are iterations from..from+len-1, each once, each with the
// sample of its own island and seed.
func checkTasks(t *testing.T, tasks []*protocol.Task, from int64) {
	t.Helper()
	seen := map[int64]bool{}
	for _, task := range tasks {
		if task.Iteration < from || task.Iteration >= from+int64(len(tasks)) || seen[task.Iteration] {
			t.Fatalf("task iteration %d; want each of %d..%d once", task.Iteration, from, from+int64(len(tasks))-1)
		}
		seen[task.Iteration] = true
		island := int((task.Iteration - 1) % 3)
		if want := fmt.Sprintf("p-%d-%d", island, task.Seed); task.Island != island || task.Parent.ID != want {
			t.Fatalf("task %d on island %d with parent %s; want island %d, parent %s", task.Iteration, task.Island, task.Parent.ID, island, want)
		}
	}
}

// TestRefillTakesOneSampleRequest: a refill of 12 tasks (concurrency 8 with the default slack)
// asks the archive once for all their samples and records them in the runs bucket in one
// write; a burst of 5 folds is refilled with one request and one write more. Each task gets
// the sample of its own island and seed.
func TestRefillTakesOneSampleRequest(t *testing.T) {
	b := startBatchEnv(t, -1)
	ctx := context.Background()
	var mu sync.Mutex
	var writes []*protocol.PlannerState
	w, err := b.store.KV().Watch(ctx, protocol.RunPlannerKey(batchRun), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	go func() {
		for e := range w.Updates() {
			var pst protocol.PlannerState
			if e != nil && protocol.Decode(e.Value(), &pst) == nil && pst.Issued > 0 {
				mu.Lock()
				writes = append(writes, &pst)
				mu.Unlock()
			}
		}
	}()
	b.startPlanner(t)
	checkTasks(t, b.take(t, 12), 1)
	if n := b.requests.Load(); n != 1 {
		t.Fatalf("%d sample requests for a refill of 12; want 1", n)
	}
	// Five results folded in one state write free five slots at once.
	b.state.Iterations, b.state.ByModel["m"] = 5, 5
	if err := b.store.PutState(ctx, b.state); err != nil {
		t.Fatal(err)
	}
	checkTasks(t, b.take(t, 5), 13)
	if n := b.requests.Load(); n != 2 {
		t.Fatalf("%d sample requests for refills of 12 and 5; want 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(writes) != 2 || writes[0].Issued != 12 || len(writes[0].LastModels) != 12 || writes[1].Issued != 17 || len(writes[1].LastModels) != 5 {
		var got []string
		for _, p := range writes {
			got = append(got, fmt.Sprintf("issued %d, last models %d", p.Issued, len(p.LastModels)))
		}
		t.Fatalf("planner records %v; want one of 12 tasks, then one of 5 more", got)
	}
}

// TestRefillAsksAgainForSamplesAReplyLeftOut: an archive whose reply holds only some of the
// samples asked for (a reply is kept under the bus's payload limit) is asked again for the
// rest, and every task still gets its own.
func TestRefillAsksAgainForSamplesAReplyLeftOut(t *testing.T) {
	b := startBatchEnv(t, 4) // 5 samples a reply
	b.startPlanner(t)
	checkTasks(t, b.take(t, 12), 1)
	if n := b.requests.Load(); n != 3 {
		t.Fatalf("%d sample requests for 12 tasks at 5 a reply; want 3", n)
	}
}

// TestRestartPublishesTheRecordedRefill: a planner that recorded a refill of 4 tasks (11 to
// 14) and died before publishing them leaves them to the next, which publishes all 4, then
// the 8 more that keep 12 in flight.
func TestRestartPublishesTheRecordedRefill(t *testing.T) {
	b := startBatchEnv(t, -1)
	ctx := context.Background()
	now := time.Now().UTC()
	if err := b.store.PutPlanner(ctx, &protocol.PlannerState{Meta: protocol.Meta{ID: batchRun, Run: batchRun}, Status: protocol.RunRunning,
		Issued: 14, IssuedByModel: map[string]int64{"m": 14}, LastModel: "m", LastModels: []string{"m", "m", "m", "m"},
		StartedAt: now, RunningSince: now}); err != nil {
		t.Fatal(err)
	}
	b.state.Iterations, b.state.ByModel["m"] = 10, 10
	if err := b.store.PutState(ctx, b.state); err != nil {
		t.Fatal(err)
	}
	b.startPlanner(t)
	checkTasks(t, b.take(t, 12), 11)
}

// TestRestartPublishesARecordOfOneTask: a record written by a planner that recorded one task
// at a time (last_model, no last_models) still has its task published again after a restart.
func TestRestartPublishesARecordOfOneTask(t *testing.T) {
	b := startBatchEnv(t, -1)
	ctx := context.Background()
	now := time.Now().UTC()
	if err := b.store.PutPlanner(ctx, &protocol.PlannerState{Meta: protocol.Meta{ID: batchRun, Run: batchRun}, Status: protocol.RunRunning,
		Issued: 14, IssuedByModel: map[string]int64{"m": 14}, LastModel: "m", StartedAt: now, RunningSince: now}); err != nil {
		t.Fatal(err)
	}
	b.state.Iterations, b.state.ByModel["m"] = 13, 13
	if err := b.store.PutState(ctx, b.state); err != nil {
		t.Fatal(err)
	}
	b.startPlanner(t)
	// Task 14 again, then the 11 that keep 12 in flight.
	checkTasks(t, b.take(t, 12), 14)
}
