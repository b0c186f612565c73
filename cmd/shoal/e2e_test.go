package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// stack is the four services over one embedded JetStream server with shoal's users, each on
// its own connection as its own role (a request a role may not make fails the test), each
// stoppable on its own (to test restarts). The client is the admin.
type stack struct {
	t      testing.TB
	env    *natstest.TestEnv
	client *client
	log    *slog.Logger

	// opts are what each service starts with (gpus and replicaID are set per service).
	opts upOptions

	mu      sync.Mutex
	running map[string]func()
	crashes map[string]func()
}

func startStack(t testing.TB) *stack { return startStackWith(t, upOptions{}) }

// startStackWith starts the stack with each service built from o, e.g. with telemetry.
func startStackWith(t testing.TB, o upOptions) *stack {
	t.Helper()
	env := natstest.StartTestEnv(t, natstest.WithRoles())
	s := &stack{t: t, env: env, opts: o, running: map[string]func(){}, crashes: map[string]func(){}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		s.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	c, err := newClient(context.Background(), env.Conn, env.Names)
	if err != nil {
		t.Fatal(err)
	}
	s.client = c
	cache := t.TempDir()
	t.Setenv("TMPDIR", cache) // the evaluator's bundle cache and work dirs
	t.Cleanup(func() {
		s.mu.Lock()
		names := make([]string, 0, len(s.running))
		for n := range s.running {
			names = append(names, n)
		}
		s.mu.Unlock()
		for _, n := range names {
			s.stop(n)
		}
		_ = bundle.RemoveCache(filepath.Join(cache, "shoal-evaluator"))
	})
	for _, name := range allServices {
		s.start(name)
	}
	return s
}

// start runs a service in the test process. A name "planner#b" starts a second planner
// replica, named b.
func (s *stack) start(name string) {
	s.t.Helper()
	service, id, _ := strings.Cut(name, "#")
	nc := s.env.ConnectAs(s.t, natsauth.Role(service))
	o := s.opts
	o.gpus, o.replicaID = "none", id
	run, err := newService(service, s.env.Names, nc, s.log, o)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	s.mu.Lock()
	s.running[name] = func() {
		cancel()
		if err := <-done; err != nil {
			s.t.Errorf("%s returned %v after shutdown", name, err)
		}
		nc.Close()
	}
	s.crashes[name] = func() {
		nc.Close() // no more renewals, acks or releases: what a SIGKILL looks like to others
		cancel()
		<-done
	}
	s.mu.Unlock()
}

// crash stops a service the way a killed process stops: its connection goes first, so it
// releases nothing.
func (s *stack) crash(name string) {
	s.mu.Lock()
	crash := s.crashes[name]
	delete(s.running, name)
	delete(s.crashes, name)
	s.mu.Unlock()
	if crash != nil {
		crash()
	}
}

func (s *stack) stop(name string) {
	s.mu.Lock()
	stop := s.running[name]
	delete(s.running, name)
	delete(s.crashes, name)
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// seed publishes a problem directory as a new run with the given config text.
func (s *stack) seed(run, dir, config string) *runconfig.Config {
	s.t.Helper()
	p := &problem{evaluator: filepath.Join(dir, "evaluator.py"), program: filepath.Join(dir, "initial_program.py"), configText: []byte(config)}
	var err error
	if p.programText, err = os.ReadFile(p.program); err != nil {
		s.t.Fatal(err)
	}
	cfg, err := seedRun(context.Background(), s.client, run, p, overrides{}, func(w string) { s.t.Errorf("unexpected config warning: %s", w) })
	if err != nil {
		s.t.Fatalf("seed: %v", err)
	}
	return cfg
}

// waitDone waits for the planner to call the run done and returns the archive's state.
func (s *stack) waitDone(run string, limit time.Duration) *protocol.RunState {
	s.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		pst, err := s.client.runs.Planner(ctx, run)
		if err == nil && pst.Status == protocol.RunDone {
			st, err := s.client.runs.State(ctx, run)
			if err != nil {
				s.t.Fatal(err)
			}
			return st
		}
		time.Sleep(100 * time.Millisecond)
	}
	st, _ := s.client.runs.State(ctx, run)
	pst, _ := s.client.runs.Planner(ctx, run)
	s.t.Fatalf("run %s not done after %s: state %+v planner %+v", run, limit, st, pst)
	return nil
}

// results reads every result of run from the RESULTS stream.
func (s *stack) results(run string) []protocol.Result {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := s.env.JS.OrderedConsumer(ctx, s.env.Names.ResultsStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{s.env.Names.Result(run)}})
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := s.env.JS.Stream(ctx, s.env.Names.ResultsStream())
	if err != nil {
		s.t.Fatal(err)
	}
	var out []protocol.Result
	last := info.CachedInfo().State.LastSeq
	for {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(500*time.Millisecond))
		if err != nil {
			s.t.Fatal(err)
		}
		n := 0
		var seq uint64
		for m := range batch.Messages() {
			n++
			var r protocol.Result
			if err := protocol.Decode(m.Data(), &r); err != nil {
				s.t.Fatal(err)
			}
			out = append(out, r)
			md, _ := m.Metadata()
			seq = md.Sequence.Stream
		}
		if n == 0 || seq >= last {
			return out
		}
	}
}

func exampleDir(t testing.TB) string {
	t.Helper()
	dir, err := extractExample("function_minimization", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

const mutateConfig = `
max_iterations: %d
random_seed: 7
llm:
  models:
    - name: mutate
      backend: mutate
      concurrency: 4
evaluator:
  timeout: 30
  cascade_evaluation: false
`

func TestEndToEndMutateImprovesTheSeed(t *testing.T) {
	s := startStack(t)
	dir := exampleDir(t)
	s.seed("fm", dir, fmt.Sprintf(mutateConfig, 40))
	st := s.waitDone("fm", 3*time.Minute)
	if st.Iterations != 40 || st.Seeds != 1 {
		t.Errorf("iterations %d seeds %d; want 40 and 1", st.Iterations, st.Seeds)
	}
	if st.BestScore <= st.SeedScore {
		t.Errorf("best score %.4f does not beat the seed's %.4f", st.BestScore, st.SeedScore)
	}
	best, err := s.client.runs.Best(context.Background(), "fm")
	if err != nil {
		t.Fatal(err)
	}
	if best.Program.Score != st.BestScore || !strings.Contains(best.Program.Code, "def search") {
		t.Errorf("best program %s (%.4f) does not match state best %.4f", best.Program.ID, best.Program.Score, st.BestScore)
	}
	if got := len(s.results("fm")); got != 41 {
		t.Errorf("RESULTS holds %d results for the run; want 41 (seed + 40)", got)
	}
	out := t.TempDir()
	if err := writeBest(context.Background(), s.client, "fm", out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(out, "best_program.py")); err != nil || string(data) != best.Program.Code {
		t.Errorf("--output best_program.py: %v", err)
	}
}

// chatServer is a stand-in OpenAI-compatible endpoint whose replies are fixed: it moves the
// search's start point next to the known minimum.
func chatServer(t *testing.T, requests *atomic.Int64) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		var req struct {
			Model    string `json:"model"`
			Messages []struct{ Role, Content string }
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		requests.Add(1)
		if !strings.Contains(req.Messages[len(req.Messages)-1].Content, "EVOLVE-BLOCK-START") {
			http.Error(w, "prompt lacks the program", http.StatusBadRequest)
			return
		}
		reply := "Start next to the minimum.\n<<<<<<< SEARCH\n    x, y = 3.0, 3.0\n=======\n    x, y = 1.3, -0.7\n>>>>>>> REPLACE\n"
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "x", "object": "chat.completion", "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": reply}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestEndToEndOpenAIBackend(t *testing.T) {
	var requests atomic.Int64
	srv := chatServer(t, &requests)
	s := startStack(t)
	cfg := fmt.Sprintf(`
max_iterations: 6
llm:
  api_base: %s/v1
  api_key: ${SHOAL_E2E_API_KEY}
  models:
    - name: stand-in
      concurrency: 2
evaluator:
  cascade_evaluation: false
`, srv.URL)
	s.seed("oa", exampleDir(t), cfg)
	st := s.waitDone("oa", 2*time.Minute)
	if st.Iterations != 6 || st.ByModel["stand-in"] != 6 {
		t.Errorf("iterations %d by model %v; want 6 from stand-in", st.Iterations, st.ByModel)
	}
	if requests.Load() < 6 {
		t.Errorf("the model was asked %d times; want ≥ 6", requests.Load())
	}
	best, err := s.client.runs.Best(context.Background(), "oa")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(best.Program.Code, "x, y = 1.3, -0.7") || best.Program.Score <= st.SeedScore {
		t.Errorf("best program (score %.4f, seed %.4f) is not the model's edit:\n%s", best.Program.Score, st.SeedScore, best.Program.Code)
	}
	// Once the best program starts at the minimum, the same SEARCH no longer matches: those
	// candidates must be rejected with a reason, never applied in part.
	var rejected int
	for _, r := range s.results("oa") {
		if r.Status == protocol.StatusRejected {
			rejected++
			if r.Reason == "" {
				t.Errorf("rejected result %s carries no reason", r.Candidate.ID)
			}
		}
		if !r.Candidate.IsSeed() && r.Candidate.Tokens.Completion == 0 && r.Status != protocol.StatusRejected {
			t.Errorf("candidate %s has no token accounting", r.Candidate.ID)
		}
	}
	t.Logf("%d of 6 candidates rejected", rejected)
}

func TestArchiveRestartLosesNoResultAndCountsNoneTwice(t *testing.T) {
	s := startStack(t)
	s.seed("restart", exampleDir(t), fmt.Sprintf(mutateConfig, 60))
	ctx := context.Background()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := s.client.runs.State(ctx, "restart")
		if err == nil && st.Iterations >= 15 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("run made no progress")
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.stop("archive")
	// Results keep arriving while no archive runs; a duplicate of an old one is injected, as a
	// redelivery outside the dedupe window would produce.
	time.Sleep(time.Second)
	rs := s.results("restart")
	dup := rs[len(rs)-1]
	data, err := protocol.Encode(&dup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.env.JS.Publish(ctx, s.env.Names.Result("restart"), data, jetstream.WithMsgID("dup-"+dup.ID)); err != nil {
		t.Fatal(err)
	}
	s.start("archive")

	st := s.waitDone("restart", 3*time.Minute)
	all := s.results("restart")
	unique := map[string]bool{}
	for _, r := range all {
		if !r.Candidate.IsSeed() {
			unique[r.Candidate.ID] = true
		}
	}
	if len(all) < 62 {
		t.Errorf("RESULTS holds %d results; want the seed, 60 iterations and one duplicate", len(all))
	}
	if st.Iterations != 60 || int64(len(unique)) != st.Iterations {
		t.Errorf("archive counts %d iterations; RESULTS holds %d distinct candidates; want 60 and 60", st.Iterations, len(unique))
	}
}

func TestSeedsFromPlainPublishAndBadSeeds(t *testing.T) {
	s := startStack(t)
	dir := exampleDir(t)
	s.seed("seeds", dir, fmt.Sprintf(mutateConfig, 10))
	s.waitDone("seeds", 2*time.Minute)
	nc := s.env.Conn
	events := make(chan protocol.Event, 16)
	sub, err := nc.Subscribe(s.env.Names.AllEvents(), func(m *nats.Msg) {
		var ev protocol.Event
		if protocol.Decode(m.Data, &ev) == nil && ev.Kind == protocol.EventError {
			events <- ev
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	expectError := func(what, want string) {
		t.Helper()
		select {
		case ev := <-events:
			if !strings.Contains(ev.Message, want) {
				t.Errorf("%s: error event %q does not mention %q", what, ev.Message, want)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: no error event", what)
		}
	}

	// `nats pub shoal.seed.seeds < program.py`: a core publish whose body is the program.
	program, _ := os.ReadFile(filepath.Join(dir, "initial_program.py"))
	better := strings.Replace(string(program), "x, y = 3.0, 3.0", "x, y = 1.2, -0.6", 1)
	if err := nc.Publish(s.env.Names.Seed("seeds"), []byte(better)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(s.env.Names.Seed("seeds"), []byte(`{"v": 1, "program": 5}`)); err != nil {
		t.Fatal(err)
	}
	expectError("malformed seed", "malformed")
	if err := nc.Publish(s.env.Names.Seed("nosuchrun"), program); err != nil {
		t.Fatal(err)
	}
	expectError("seed for an unknown run", "does not exist")
	bad := &protocol.Seed{Meta: protocol.Meta{ID: "bad-config", Run: "badcfg"}, Config: "database:\n  exploration_ratio: 1.5\n", BundleDigest: "sha256-00", Program: string(program)}
	data, _ := protocol.Encode(bad)
	if err := nc.Publish(s.env.Names.Seed("badcfg"), data); err != nil {
		t.Fatal(err)
	}
	expectError("invalid config", "exploration_ratio")

	// The services kept running: the plain seed was evaluated and folded into the run.
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := s.client.runs.State(context.Background(), "seeds")
		if err == nil && st.Seeds == 2 {
			if st.BestScore < 0.5 {
				t.Errorf("best score %.3f: the published seed (start near the minimum) was not folded as best", st.BestScore)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("plain seed not folded: state %+v, %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := s.client.runs.Spec(context.Background(), "badcfg"); err == nil {
		t.Error("a run was created from an invalid config")
	}
}
