package evaluator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := checkGoroutines(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// checkGoroutines fails the package when goroutines of the service, NATS or os/exec outlive
// the tests.
func checkGoroutines() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "checkGoroutines") {
				continue
			}
			if strings.Contains(g, "shoal-run/shoal") || strings.Contains(g, "nats-io") || strings.Contains(g, "os/exec") || strings.Contains(g, "os.(*Process)") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("goroutines left behind:\n\n%s", strings.Join(left, "\n\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestService(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const run = "demo"
	cache := seedRun(ctx, t, env, run)

	svc, err := New(Config{Names: env.Names, ID: "test-evaluator", Concurrency: 2, CacheDir: cache}, env.Conn, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()

	// Work the service must survive without a result: a body that is not a candidate and a
	// candidate of a run that was never seeded.
	if _, err := env.JS.Publish(ctx, env.Names.Candidate(run), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	ghost := (&protocol.Task{Meta: protocol.Meta{ID: protocol.TaskID("ghost", 1), Run: "ghost"}}).Candidate("test")
	ghost.Code = "def run():\n    return 1.0\n"
	if _, err := natsx.Publish(ctx, env.JS, env.Names.Candidate("ghost"), ghost.ID, ghost); err != nil {
		t.Fatal(err)
	}
	good := (&protocol.Task{Meta: protocol.Meta{ID: protocol.TaskID(run, 1), Run: run}, Language: "python"}).Candidate("test")
	good.Code = "def run():\n    print('working')\n    return 0.75\n"
	rejected := (&protocol.Task{Meta: protocol.Meta{ID: protocol.TaskID(run, 2), Run: run}}).Candidate("test")
	rejected.Reject("SEARCH block 1 matches nothing in the parent")
	for _, c := range []protocol.Message{good, rejected} {
		id := c.(*protocol.Candidate).ID
		if _, err := natsx.Publish(ctx, env.JS, env.Names.Candidate(run), id, c); err != nil {
			t.Fatal(err)
		}
	}

	results := readResults(t, ctx, env.JS, env.Names, 2)
	cases := []struct {
		candidate *protocol.Candidate
		status    protocol.Status
		score     float64
		reason    string
	}{
		{good, protocol.StatusOK, 0.75, ""},
		{rejected, protocol.StatusRejected, 0, rejected.Rejected},
	}
	for _, tc := range cases {
		r, ok := results[protocol.ResultID(tc.candidate.ID)]
		if !ok {
			t.Errorf("no result for %s; got %v", tc.candidate.ID, results)
			continue
		}
		if r.Status != tc.status || r.Score != tc.score || r.Reason != tc.reason {
			t.Errorf("result of %s: status %q score %v reason %q, want %q %v %q", tc.candidate.ID, r.Status, r.Score, r.Reason, tc.status, tc.score, tc.reason)
		}
		if r.Run != run || r.Candidate.ID != tc.candidate.ID || r.Evaluator != "test-evaluator" {
			t.Errorf("result of %s: run %q candidate %q evaluator %q", tc.candidate.ID, r.Run, r.Candidate.ID, r.Evaluator)
		}
	}
	if r := results[protocol.ResultID(good.ID)]; !strings.Contains(r.Artifacts["stdout"], "working") || r.Metrics["valid"] != 1 {
		t.Errorf("good result: metrics %v artifacts %v", r.Metrics, r.Artifacts)
	}

	// Every candidate is settled: acked with a result, or terminated.
	waitFor(t, ctx, "the candidates queue to empty", func() bool {
		info, err := env.JS.Stream(ctx, env.Names.CandidatesStream())
		if err != nil {
			return false
		}
		st, err := info.Info(ctx)
		return err == nil && st.State.Msgs == 0
	})
	rs, err := env.JS.Stream(ctx, env.Names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	if st, err := rs.Info(ctx); err != nil || st.State.Msgs != 2 {
		t.Errorf("results stream holds %v messages (err %v), want 2", st.State.Msgs, err)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v, want nil after ctx ends", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
	if left, _ := os.ReadDir(cache + "/work"); len(left) > 0 {
		t.Errorf("work dirs left behind: %v", left)
	}
}

// readResults reads want results from RESULTS, keyed by result id.
func readResults(t *testing.T, ctx context.Context, js jetstream.JetStream, names protocol.Names, want int) map[string]*protocol.Result {
	t.Helper()
	cons, err := js.OrderedConsumer(ctx, names.ResultsStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{names.AllResults()}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*protocol.Result{}
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < want {
		if time.Now().After(deadline) {
			t.Fatalf("got %d results, want %d", len(got), want)
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
			continue
		}
		if err != nil {
			t.Fatalf("next result: %v", err)
		}
		var r protocol.Result
		if err := protocol.Decode(msg.Data(), &r); err != nil {
			t.Fatalf("decode result: %v", err)
		}
		got[r.ID] = &r
	}
	return got
}

func waitFor(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testWriter sends the service's logs to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// seedRun seeds run as the archive would: the basic evaluator in the bundles store, the run's
// spec (no cascade, 30 s timeout) in the runs bucket. It returns a fresh cache dir for the
// evaluator under test, removed when the test ends.
func seedRun(ctx context.Context, t *testing.T, env *natstest.TestEnv, run string) string {
	t.Helper()
	cache, err := os.MkdirTemp("", "shoal-evaluator-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bundle.RemoveCache(cache); err != nil {
			t.Errorf("remove cache: %v", err)
		}
	})
	data, digest, err := bundle.Pack(testdata(t, "basic"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := env.JS.ObjectStore(ctx, env.Names.BundlesStore())
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.Put(ctx, store, digest, data); err != nil {
		t.Fatal(err)
	}
	specs, err := runs.Open(ctx, env.JS, env.Names)
	if err != nil {
		t.Fatal(err)
	}
	created, err := specs.CreateSpec(ctx, &protocol.RunSpec{
		Meta:         protocol.Meta{ID: run, Run: run},
		Config:       "evaluator:\n  timeout: 30\n  cascade_evaluation: false\n",
		BundleDigest: digest,
		ProgramName:  "initial_program.py",
		CreatedAt:    time.Now().UTC(),
	})
	if err != nil || !created {
		t.Fatalf("create spec: %v (created %v)", err, created)
	}
	return cache
}
