package natsx_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
)

func TestMain(m *testing.M) { natstest.Main(m) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func streamMsgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	s, err := js.Stream(testContext(t), stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(testContext(t))
	if err != nil {
		t.Fatalf("stream %s info: %v", stream, err)
	}
	return info.State.Msgs
}

func TestStartEmbeddedNeedsStoreDir(t *testing.T) {
	e, err := natsx.StartEmbedded(natsx.EmbeddedConfig{})
	if err == nil {
		e.Shutdown()
		t.Fatal("StartEmbedded without StoreDir succeeded, want an error")
	}
}

// TestProvisionIdempotent: every service provisions at start, whichever comes first, and a
// later one neither fails nor loses what is stored.
func TestProvisionIdempotent(t *testing.T) {
	env := natstest.StartTestEnv(t) // provisions once
	ctx := testContext(t)
	n := env.Names

	if _, err := natsx.Publish(ctx, env.JS, n.Result("r1"), "r.c.r1.t1", &protocol.Result{Meta: protocol.Meta{ID: "r.c.r1.t1", Run: "r1"}}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	for i := range 2 {
		if err := natsx.Provision(ctx, env.JS, n); err != nil {
			t.Fatalf("Provision again (%d): %v", i+2, err)
		}
	}

	for _, want := range natsx.Streams(n) {
		t.Run("stream "+want.Name, func(t *testing.T) {
			s, err := env.JS.Stream(ctx, want.Name)
			if err != nil {
				t.Fatalf("stream %s: %v", want.Name, err)
			}
			got := s.CachedInfo().Config
			if !slices.Equal(got.Subjects, want.Subjects) || got.Retention != want.Retention || got.Duplicates != want.Duplicates || got.MaxAge != want.MaxAge {
				t.Errorf("stream %s: got subjects %q retention %v duplicates %v max age %v; want %q %v %v %v",
					want.Name, got.Subjects, got.Retention, got.Duplicates, got.MaxAge, want.Subjects, want.Retention, want.Duplicates, want.MaxAge)
			}
		})
	}
	for _, want := range natsx.Buckets(n) {
		t.Run("bucket "+want.Bucket, func(t *testing.T) {
			kv, err := env.JS.KeyValue(ctx, want.Bucket)
			if err != nil {
				t.Fatalf("bucket %s: %v", want.Bucket, err)
			}
			st, err := kv.Status(ctx)
			if err != nil {
				t.Fatalf("bucket %s status: %v", want.Bucket, err)
			}
			if st.History() != int64(want.History) || st.TTL() != want.TTL {
				t.Errorf("bucket %s: got history %d ttl %v, want %d %v", want.Bucket, st.History(), st.TTL(), want.History, want.TTL)
			}
		})
	}
	t.Run("object store "+n.BundlesStore(), func(t *testing.T) {
		if _, err := env.JS.ObjectStore(ctx, n.BundlesStore()); err != nil {
			t.Errorf("object store %s: %v", n.BundlesStore(), err)
		}
	})
	t.Run("results kept", func(t *testing.T) {
		if got := streamMsgs(t, env.JS, n.ResultsStream()); got != 1 {
			t.Errorf("%s holds %d messages after provisioning again, want 1", n.ResultsStream(), got)
		}
	})
}

// TestSubjectsLandInTheirStreams publishes to every per-run subject of two prefixes
// provisioned side by side on one server, so the server's own subject matching decides.
func TestSubjectsLandInTheirStreams(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx := testContext(t)
	dotted := protocol.NewNames("team.a")
	if err := natsx.Provision(ctx, env.JS, dotted); err != nil {
		t.Fatalf("provision a second prefix on the same server: %v", err)
	}
	for _, n := range []protocol.Names{env.Names, dotted} {
		tests := []struct {
			name, subject, stream string
		}{
			{"seed", n.Seed("r1"), n.SeedsStream()},
			{"task", n.Task("r1", "Qwen/Qwen2.5-7B"), n.TasksStream()},
			{"task with unsafe model", n.Task("r1", "a.b*c>d e"), n.TasksStream()},
			{"candidate", n.Candidate("r1"), n.CandidatesStream()},
			{"result", n.Result("r1"), n.ResultsStream()},
			{"event new best", n.Event("r1", protocol.EventNewBest), n.EventsStream()},
			{"event run state", n.Event("r1", protocol.EventRunState), n.EventsStream()},
			{"event error", n.Event("r1", protocol.EventError), n.EventsStream()},
			{"dead", n.Dead(n.TasksStream()), n.DeadStream()},
		}
		for i, tt := range tests {
			t.Run(n.Prefix+"/"+tt.name, func(t *testing.T) {
				id := fmt.Sprintf("%s-%d", n.Prefix, i)
				ack, err := natsx.Publish(ctx, env.JS, tt.subject, id, &protocol.Event{Meta: protocol.Meta{ID: id, Run: "r1"}})
				if err != nil {
					t.Fatalf("Publish(%s): %v", tt.subject, err)
				}
				if ack.Stream != tt.stream {
					t.Errorf("Publish(%s) stored in %s, want %s", tt.subject, ack.Stream, tt.stream)
				}
			})
		}
		t.Run(n.Prefix+"/sample is request-reply", func(t *testing.T) {
			name, err := env.JS.StreamNameBySubject(ctx, n.Sample("r1"))
			if !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("stream for %s = %q, %v; want none, so requests reach the archive", n.Sample("r1"), name, err)
			}
		})
	}
}

// TestPublishDeduplicates: a publish retried with the same id is stored once.
func TestPublishDeduplicates(t *testing.T) {
	tests := []struct {
		name     string
		ids      []string
		wantMsgs uint64
	}{
		{"same id twice", []string{"r.c.r1.t1", "r.c.r1.t1"}, 1},
		{"two ids", []string{"r.c.r1.t1", "r.c.r1.t2"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := natstest.StartTestEnv(t)
			ctx := testContext(t)
			for i, id := range tt.ids {
				ack, err := natsx.Publish(ctx, env.JS, env.Names.Result("r1"), id, &protocol.Result{Meta: protocol.Meta{ID: id, Run: "r1"}, Score: float64(i)})
				if err != nil {
					t.Fatalf("Publish #%d: %v", i+1, err)
				}
				wantDup := slices.Contains(tt.ids[:i], id)
				if ack.Duplicate != wantDup {
					t.Errorf("Publish #%d: ack.Duplicate = %v, want %v", i+1, ack.Duplicate, wantDup)
				}
			}
			if got := streamMsgs(t, env.JS, env.Names.ResultsStream()); got != tt.wantMsgs {
				t.Errorf("%s holds %d messages, want %d", env.Names.ResultsStream(), got, tt.wantMsgs)
			}
		})
	}
}

// TestPublishOversize: the test server accepts 8 MiB payloads, so only the client's own check
// can refuse a body over protocol.MaxBodyBytes.
func TestPublishOversize(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx := testContext(t)
	big := &protocol.Seed{Meta: protocol.Meta{ID: "s1", Run: "r1"}, Program: strings.Repeat("x", protocol.MaxBodyBytes)}
	_, err := natsx.Publish(ctx, env.JS, env.Names.Seed("r1"), "s1", big)
	if !errors.Is(err, protocol.ErrTooLarge) {
		t.Errorf("Publish of a %d-byte program = %v, want ErrTooLarge", len(big.Program), err)
	}
	if got := streamMsgs(t, env.JS, env.Names.SeedsStream()); got != 0 {
		t.Errorf("%s holds %d messages, want 0", env.Names.SeedsStream(), got)
	}
}

// freePort reserves a port and releases it, so a server can start on it later.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return port
}

var discard = slog.New(slog.DiscardHandler)

// TestConnectWaitsForServer: a service started before NATS (as under docker compose)
// connects once the server comes up.
func TestConnectWaitsForServer(t *testing.T) {
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	ctx := testContext(t)
	go func() {
		nc, err := natsx.Connect(ctx, url, "test", discard)
		done <- result{nc, err}
	}()

	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-done:
		if r.nc != nil {
			r.nc.Close()
		}
		t.Fatalf("Connect returned before any server was up: %v", r.err)
	default:
	}
	srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: t.TempDir(), Port: port})
	if err != nil {
		t.Fatalf("start server on port %d: %v", port, err)
	}
	t.Cleanup(srv.Shutdown)

	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("Connect = %v, want a connection once the server is up", r.err)
		}
		defer r.nc.Close()
		if !r.nc.IsConnected() {
			t.Errorf("Connect returned a connection in state %v, want connected", r.nc.Status())
		}
		if got := r.nc.ConnectedUrl(); got != url {
			t.Errorf("connected to %s, want %s", got, url)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Connect did not return within 10s of the server starting")
	}
}

func TestConnectGivesUpWhenContextEnds(t *testing.T) {
	url := fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithTimeout(t.Context(), 400*time.Millisecond)
	defer cancel()
	start := time.Now()
	nc, err := natsx.Connect(ctx, url, "test", discard)
	if err == nil {
		nc.Close()
		t.Fatal("Connect with no server succeeded, want an error")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Connect = %v, want an error wrapping context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Connect took %v to give up after a 400ms context, want promptly", took)
	}
}

// TestTaskWorkQueue: a task is handed to one consumer of its model, once.
func TestTaskWorkQueue(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx := testContext(t)
	n := env.Names
	const model = "Qwen/Qwen2.5-7B"

	consumerFor := func(model string) jetstream.Consumer {
		t.Helper()
		cfg := jetstream.ConsumerConfig{Durable: n.GeneratorConsumer(model), FilterSubject: n.TasksForModel(model), AckPolicy: jetstream.AckExplicitPolicy}
		var c jetstream.Consumer
		for range 2 { // replicas of a generator ensure the same consumer
			var err error
			if c, err = natsx.EnsureConsumer(ctx, env.JS, n.TasksStream(), cfg); err != nil {
				t.Fatalf("EnsureConsumer(%s): %v", cfg.Durable, err)
			}
		}
		return c
	}
	mine, other := consumerFor(model), consumerFor("llama3.1:8b")

	id := protocol.TaskID("r1", 1)
	task := &protocol.Task{Meta: protocol.Meta{ID: id, Run: "r1"}, Model: model, Iteration: 1}
	for range 2 { // a retried publish
		if _, err := natsx.Publish(ctx, env.JS, n.Task("r1", model), id, task); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}

	fetch := func(c jetstream.Consumer) []jetstream.Msg {
		t.Helper()
		batch, err := c.Fetch(5, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatalf("Fetch: %v", err)
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		return msgs
	}

	if got := fetch(other); len(got) != 0 {
		t.Errorf("consumer of another model got %d tasks, want 0", len(got))
	}
	got := fetch(mine)
	if len(got) != 1 {
		t.Fatalf("consumer of %s got %d tasks, want 1", model, len(got))
	}
	var gotTask protocol.Task
	if err := protocol.Decode(got[0].Data(), &gotTask); err != nil {
		t.Fatalf("decode task: %v", err)
	}
	if gotTask.ID != id || gotTask.Model != model {
		t.Errorf("got task %s for %s, want %s for %s", gotTask.ID, gotTask.Model, id, model)
	}
	if h := got[0].Headers().Get(protocol.HeaderMsgID); h != id {
		t.Errorf("%s header = %q, want %q", protocol.HeaderMsgID, h, id)
	}
	if err := got[0].DoubleAck(ctx); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if again := fetch(mine); len(again) != 0 {
		t.Errorf("after the ack the consumer got %d more tasks, want 0", len(again))
	}
	if msgs := streamMsgs(t, env.JS, n.TasksStream()); msgs != 0 {
		t.Errorf("%s holds %d messages after the ack, want 0", n.TasksStream(), msgs)
	}
}

func TestPutGetJSON(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx := testContext(t)
	kv, err := env.JS.KeyValue(ctx, env.Names.RunsBucket())
	if err != nil {
		t.Fatalf("runs bucket: %v", err)
	}
	want := &protocol.RunState{Meta: protocol.Meta{ID: "r1", Run: "r1"}, Iterations: 3, BestScore: 0.5}
	rev, err := natsx.PutJSON(ctx, kv, "r1.state", want)
	if err != nil {
		t.Fatalf("PutJSON: %v", err)
	}
	if _, err := kv.Put(ctx, "r2.state", []byte("not json")); err != nil {
		t.Fatalf("put garbage: %v", err)
	}
	if _, err := kv.Put(ctx, "r3.state", []byte(`{"v":9}`)); err != nil {
		t.Fatalf("put future version: %v", err)
	}

	t.Run("round trip", func(t *testing.T) {
		var got protocol.RunState
		gotRev, err := natsx.GetJSON(ctx, kv, "r1.state", &got)
		if err != nil {
			t.Fatalf("GetJSON: %v", err)
		}
		if gotRev != rev || got.Run != want.Run || got.Iterations != want.Iterations || got.BestScore != want.BestScore || got.V != protocol.Version {
			t.Errorf("GetJSON = rev %d %+v, want rev %d %+v", gotRev, got, rev, *want)
		}
	})
	tests := []struct {
		key  string
		want error
	}{
		{"missing.state", jetstream.ErrKeyNotFound},
		{"r2.state", protocol.ErrMalformed},
		{"r3.state", protocol.ErrUnknownVersion},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			var got protocol.RunState
			if _, err := natsx.GetJSON(ctx, kv, tt.key, &got); !errors.Is(err, tt.want) {
				t.Errorf("GetJSON(%s) = %v, want an error wrapping %q", tt.key, err, tt.want)
			}
		})
	}
	t.Run("oversize", func(t *testing.T) {
		big := &protocol.BestProgram{Meta: protocol.Meta{Run: "r1"}, Program: protocol.Program{Code: strings.Repeat("x", protocol.MaxBodyBytes)}}
		if _, err := natsx.PutJSON(ctx, kv, "r1.best", big); !errors.Is(err, protocol.ErrTooLarge) {
			t.Errorf("PutJSON of an oversize body = %v, want ErrTooLarge", err)
		}
		if _, err := kv.Get(ctx, "r1.best"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("after a refused PutJSON, Get = %v, want ErrKeyNotFound", err)
		}
	})
}

// TestReconcileUpdatesOnlyWhatDiffers: every admin command of the CLI reconciles, while the
// services create their consumers. An update of an unchanged stream is not free (nats-server
// rewrites the stream's config, and its file store raced a consumer created meanwhile, as the
// race detector saw in make test), so Reconcile leaves what already has this version's config
// and updates only what differs.
func TestReconcileUpdatesOnlyWhatDiffers(t *testing.T) {
	env := natstest.StartTestEnv(t) // reconciles once
	ctx := testContext(t)
	n := env.Names

	updated := make(chan string, 64)
	sub, err := env.Conn.Subscribe("$JS.EVENT.ADVISORY.STREAM.UPDATED.>", func(m *nats.Msg) {
		updated <- m.Subject[strings.LastIndex(m.Subject, ".")+1:]
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := env.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	drain := func() []string {
		var got []string
		// Advisories follow the update's reply; a second of quiet on an idle server is ample.
		for {
			select {
			case s := <-updated:
				got = append(got, s)
			case <-time.After(time.Second):
				slices.Sort(got)
				return got
			}
		}
	}

	if err := natsx.Reconcile(ctx, env.JS, n); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if got := drain(); len(got) != 0 {
		t.Errorf("Reconcile of an unchanged deployment updated %v, want nothing", got)
	}
	// What the services create at start is the same config: no update either way.
	if err := natsx.Provision(ctx, env.JS, n); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if err := natsx.Reconcile(ctx, env.JS, n); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if got := drain(); len(got) != 0 {
		t.Errorf("Provision and Reconcile of an unchanged deployment updated %v, want nothing", got)
	}

	// A stream an older version made differently is brought to this version's config.
	events := natsx.Streams(n)[4]
	changed := events
	changed.MaxAge = time.Hour
	if _, err := env.JS.UpdateStream(ctx, changed); err != nil {
		t.Fatal(err)
	}
	drain()
	if err := natsx.Reconcile(ctx, env.JS, n); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if got := drain(); !slices.Equal(got, []string{events.Name}) {
		t.Errorf("Reconcile after %s changed updated %v, want it alone", events.Name, got)
	}
	s, err := env.JS.Stream(ctx, events.Name)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != events.MaxAge {
		t.Errorf("%s max age %v after Reconcile, want %v", events.Name, got, events.MaxAge)
	}
}

// TestPublishAllStoresEachOnceAndDeduplicates: a batch of publishes is stored in full by the
// time PublishAll returns, and a batch that repeats ids of an earlier one (a restarted
// planner publishing its recorded refill again) stores only the new ones.
func TestPublishAllStoresEachOnceAndDeduplicates(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx := testContext(t)
	batch := func(from, to int) []natsx.Outgoing {
		var out []natsx.Outgoing
		for i := from; i <= to; i++ {
			id := fmt.Sprintf("r.c.r1.t%d", i)
			out = append(out, natsx.Outgoing{Subject: env.Names.Result("r1"), ID: id, Body: &protocol.Result{Meta: protocol.Meta{ID: id, Run: "r1"}, Score: float64(i)}})
		}
		return out
	}
	if err := natsx.PublishAll(ctx, env.JS, batch(1, 10)); err != nil {
		t.Fatal(err)
	}
	if got := streamMsgs(t, env.JS, env.Names.ResultsStream()); got != 10 {
		t.Fatalf("%s holds %d messages after a batch of 10, want 10", env.Names.ResultsStream(), got)
	}
	if err := natsx.PublishAll(ctx, env.JS, batch(6, 15)); err != nil {
		t.Fatal(err)
	}
	if got := streamMsgs(t, env.JS, env.Names.ResultsStream()); got != 15 {
		t.Fatalf("%s holds %d messages after batches 1-10 and 6-15, want 15", env.Names.ResultsStream(), got)
	}
}

// TestPublishAllEncodesEveryBodyFirst: a batch with a body over protocol.MaxBodyBytes is
// refused whole, before any of it is published.
func TestPublishAllEncodesEveryBodyFirst(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx := testContext(t)
	msgs := []natsx.Outgoing{
		{Subject: env.Names.Seed("r1"), ID: "s1", Body: &protocol.Seed{Meta: protocol.Meta{ID: "s1", Run: "r1"}, Program: "x = 1\n"}},
		{Subject: env.Names.Seed("r1"), ID: "s2", Body: &protocol.Seed{Meta: protocol.Meta{ID: "s2", Run: "r1"}, Program: strings.Repeat("x", protocol.MaxBodyBytes)}},
	}
	if err := natsx.PublishAll(ctx, env.JS, msgs); !errors.Is(err, protocol.ErrTooLarge) {
		t.Fatalf("PublishAll with a body over the limit = %v, want ErrTooLarge", err)
	}
	if got := streamMsgs(t, env.JS, env.Names.SeedsStream()); got != 0 {
		t.Errorf("%s holds %d messages, want 0", env.Names.SeedsStream(), got)
	}
}
