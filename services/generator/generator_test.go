package generator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/program"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/services/generator"
	"github.com/shoal-run/shoal/services/generator/internal/launch/launchtest"
)

const parent = `import math

# EVOLVE-BLOCK-START
def solve(n):
    step = 0.25
    scale = 1.5
    total = 0.0
    for i in range(n):
        total += math.sin(i * step) * scale
    return total
# EVOLVE-BLOCK-END


def run():
    return solve(10)
`

// env is a generator replica running against an embedded JetStream server.
type env struct {
	*natstest.TestEnv
	ctx   context.Context
	store *runs.Store
	done  chan error
	stop  context.CancelFunc
}

// start runs a replica with cfg until the test ends; the test fails if Run does not return
// nil soon after its context is cancelled.
func start(t *testing.T, cfg generator.Config, specs map[string]string) *env {
	t.Helper()
	e := &env{TestEnv: natstest.StartTestEnv(t), done: make(chan error, 1)}
	var cancel context.CancelFunc
	e.ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	store, err := runs.Open(e.ctx, e.JS, e.Names)
	if err != nil {
		t.Fatal(err)
	}
	e.store = store
	for run, yaml := range specs {
		if _, err := store.CreateSpec(e.ctx, &protocol.RunSpec{Meta: protocol.Meta{ID: run, Run: run}, Config: yaml, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Names = e.Names
	if cfg.ID == "" {
		cfg.ID = "gen-test"
	}
	svc, err := generator.New(cfg, e.Conn, slog.New(slog.NewTextHandler(launchtest.Log{T: t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopRun := context.WithCancel(e.ctx)
	e.stop = stopRun
	go func() { e.done <- svc.Run(runCtx) }()
	t.Cleanup(func() { e.shutdown(t) })
	return e
}

// shutdown cancels Run and checks that it returns nil promptly; it may be called twice.
func (e *env) shutdown(t *testing.T) {
	t.Helper()
	e.stop()
	select {
	case err, ok := <-e.done:
		if ok && err != nil {
			t.Errorf("Run returned %v, want nil", err)
		}
		if ok {
			close(e.done)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of cancellation")
	}
}

func (e *env) publish(t *testing.T, task *protocol.Task) {
	t.Helper()
	if _, err := natsx.Publish(e.ctx, e.JS, e.Names.Task(task.Run, task.Model), task.ID, task); err != nil {
		t.Fatal(err)
	}
}

// candidates waits until the CANDIDATES stream holds n messages and returns them in order.
func (e *env) candidates(t *testing.T, n int) []protocol.Candidate {
	t.Helper()
	stream, err := e.JS.Stream(e.ctx, e.Names.CandidatesStream())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := stream.Info(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if int(info.State.Msgs) >= n {
			var out []protocol.Candidate
			for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
				m, err := stream.GetMsg(e.ctx, seq)
				if err != nil {
					t.Fatal(err)
				}
				var c protocol.Candidate
				if err := protocol.Decode(m.Data, &c); err != nil {
					t.Fatal(err)
				}
				if m.Header.Get(protocol.HeaderMsgID) != c.ID {
					t.Errorf("candidate %s published with Nats-Msg-Id %q", c.ID, m.Header.Get(protocol.HeaderMsgID))
				}
				out = append(out, c)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("CANDIDATES holds %d messages after 20s, want %d", info.State.Msgs, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settled waits until the generators' consumer has been delivered the stream up to seq and
// has nothing pending or unacknowledged.
func (e *env) settled(t *testing.T, consumer string, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := e.JS.Consumer(e.ctx, e.Names.TasksStream(), consumer)
		if err == nil {
			info, err := c.Info(e.ctx)
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Stream >= seq {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s did not settle within 20s (err %v)", consumer, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func task(run, id, model string) *protocol.Task {
	return &protocol.Task{
		Meta:      protocol.Meta{ID: id, Run: run},
		Model:     model,
		Iteration: 12,
		Island:    2,
		Mode:      protocol.ModeDiff,
		Language:  "python",
		Parent:    protocol.Program{ID: "p-root", Code: parent, Generation: 3, Island: 2},
		Messages:  []protocol.ChatMessage{{Role: "system", Content: "You improve programs."}, {Role: "user", Content: "Improve:\n" + parent}},
		Seed:      7,
		CreatedAt: time.Now(),
	}
}

const mutateConfig = `
language: python
llm:
  models:
    - name: mutate
      backend: mutate
      concurrency: 2
`

func TestMutateCandidate(t *testing.T) {
	launchtest.NoLeaks(t)
	e := start(t, generator.Config{}, map[string]string{"r1": mutateConfig})
	tk := task("r1", protocol.TaskID("r1", 12), "mutate")
	e.publish(t, tk)
	got := e.candidates(t, 1)[0]

	// The task's lineage, carried over: its id, parent, iteration, island, model, language,
	// and one generation past the parent's.
	wantMeta := protocol.Meta{V: protocol.Version, ID: protocol.CandidateID(tk.ID), Run: "r1"}
	if got.Meta != wantMeta || got.TaskID != tk.ID || got.ParentID != "p-root" || got.Iteration != 12 ||
		got.Island != 2 || got.Model != "mutate" || got.Language != "python" || got.Generation != 4 ||
		got.Generator != "gen-test" || got.Rejected != "" || got.Abandoned != "" {
		t.Errorf("candidate =\n%+v\nwant id %s of run r1, task %s, parent p-root, iteration 12, island 2, model mutate, python, generation 4, generator gen-test", got, wantMeta.ID, tk.ID)
	}
	if got.CreatedAt.IsZero() || got.GenerateMS < 0 {
		t.Errorf("candidate times: created %v, generate %dms", got.CreatedAt, got.GenerateMS)
	}
	if !strings.HasPrefix(got.Changes, "mutate: ") {
		t.Errorf("changes = %q, want the mutate summary", got.Changes)
	}
	assertChangedInsideBlockOnly(t, parent, got.Code)
}

func assertChangedInsideBlockOnly(t *testing.T, parent, code string) {
	t.Helper()
	if code == parent || code == "" {
		t.Fatalf("code is unchanged or empty:\n%s", code)
	}
	regions, err := program.Regions(parent)
	if err != nil {
		t.Fatal(err)
	}
	r := regions[0]
	p, c := program.Lines(parent), program.Lines(code)
	head, tail := p[:r.Start], p[r.End:]
	if len(c) < len(head)+len(tail) || strings.Join(c[:len(head)], "\n") != strings.Join(head, "\n") ||
		strings.Join(c[len(c)-len(tail):], "\n") != strings.Join(tail, "\n") {
		t.Errorf("code changed outside the evolve block:\n%s", code)
	}
}

// chatServer speaks chat completions: it answers each prompt with reply(last user message).
type chatServer struct {
	*httptest.Server
	calls atomic.Int32
}

func newChatServer(t *testing.T, reply func(prompt string) string) *chatServer {
	t.Helper()
	s := &chatServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.calls.Add(1)
		if r.URL.Path != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer sk-local" {
			http.Error(w, `{"error":"bad key"}`, http.StatusUnauthorized)
			return
		}
		var req struct {
			Model    string                 `json:"model"`
			Messages []protocol.ChatMessage `json:"messages"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Model != "coder" {
			http.Error(w, fmt.Sprintf("bad request: model %q, %v", req.Model, err), http.StatusBadRequest)
			return
		}
		text := reply(req.Messages[len(req.Messages)-1].Content)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 100, "completion_tokens": 20},
		})
	}))
	t.Cleanup(s.Close)
	return s
}

func openaiConfig(url string) string {
	return fmt.Sprintf(`
language: python
max_code_length: 2000
llm:
  api_base: %s/v1/
  api_key: ${TEST_LLM_KEY}
  timeout: 5
  retries: 1
  retry_delay: 0.01
  models:
    - name: coder
      concurrency: 2
    - name: big
      backend: launch
      launch: {profile: serve-q8}
`, url)
}

// serveProfiles declare the profile that openaiConfig's launched model names.
func serveProfiles(t *testing.T) runconfig.Profiles {
	t.Helper()
	return launchtest.Profiles(t, launchtest.Profile("serve-q8", []string{"./serve", "--port", "{port}"}, "    variants: [{name: q8, need_gib: 20}]\n"))
}

func getenv(k string) string {
	if k == "TEST_LLM_KEY" {
		return "sk-local"
	}
	return ""
}

func TestOpenAICandidates(t *testing.T) {
	launchtest.NoLeaks(t)
	chat := newChatServer(t, func(prompt string) string {
		switch {
		case strings.Contains(prompt, "TASK:good"):
			return "Smaller steps help.\n```\n<<<<<<< SEARCH\n    step = 0.25\n=======\n    step = 0.1\n>>>>>>> REPLACE\n```\n"
		case strings.Contains(prompt, "TASK:nomatch"):
			return "<<<<<<< SEARCH\n    step = 0.5\n=======\n    step = 0.1\n>>>>>>> REPLACE\n"
		case strings.Contains(prompt, "TASK:outside"):
			return "<<<<<<< SEARCH\n    return solve(10)\n=======\n    return solve(20)\n>>>>>>> REPLACE\n"
		case strings.Contains(prompt, "TASK:prose"):
			return "I would change the step size."
		case strings.Contains(prompt, "TASK:rewrite"):
			return "Here it is:\n```python\nimport math\n\n# EVOLVE-BLOCK-START\ndef solve(n):\n    return n * 2.0\n# EVOLVE-BLOCK-END\n\n\ndef run():\n    return solve(10)\n```\n"
		case strings.Contains(prompt, "TASK:huge"):
			return "```python\n# EVOLVE-BLOCK-START\n" + strings.Repeat("x = 1\n", 1000) + "# EVOLVE-BLOCK-END\n```"
		case strings.Contains(prompt, "TASK:same"):
			return "<<<<<<< SEARCH\n    step = 0.25\n=======\n    step = 0.25\n>>>>>>> REPLACE\n"
		}
		return "?"
	})
	e := start(t, generator.Config{Getenv: getenv, GPUs: "none", Profiles: serveProfiles(t)}, map[string]string{"r2": openaiConfig(chat.URL)})

	cases := []struct {
		name, model string
		mode        protocol.Mode
		wantCode    string
		wantReject  []string // substrings of the rejection reason; nil: accepted
	}{
		{name: "good", model: "coder", wantCode: strings.Replace(parent, "step = 0.25", "step = 0.1", 1)},
		{name: "nomatch", model: "coder", wantReject: []string{"block 1", "step = 0.5", "not found"}},
		{name: "outside", model: "coder", wantReject: []string{"block 1", "outside"}},
		{name: "prose", model: "coder", wantReject: []string{"no SEARCH/REPLACE blocks"}},
		{name: "rewrite", model: "coder", mode: protocol.ModeRewrite, wantCode: "import math\n\n# EVOLVE-BLOCK-START\ndef solve(n):\n    return n * 2.0\n# EVOLVE-BLOCK-END\n\n\ndef run():\n    return solve(10)\n"},
		{name: "huge", model: "coder", mode: protocol.ModeRewrite, wantReject: []string{"max_code_length 2000"}},
		{name: "same", model: "coder", wantReject: []string{"identical to its parent"}},
		{name: "launch", model: "big", wantReject: []string{"launch: this generator was started with --gpus none"}},
		{name: "unknown-model", model: "ghost", wantReject: []string{`model "ghost" is not in the run's config`}},
	}
	for i, tc := range cases {
		tk := task("r2", protocol.TaskID("r2", int64(i)), tc.model)
		if tc.mode != "" {
			tk.Mode = tc.mode
		}
		tk.Messages[1].Content = "TASK:" + tc.name + "\n" + parent
		e.publish(t, tk)
	}
	got := make(map[string]protocol.Candidate)
	for _, c := range e.candidates(t, len(cases)) {
		got[c.TaskID] = c
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, ok := got[protocol.TaskID("r2", int64(i))]
			if !ok {
				t.Fatalf("no candidate for task %d", i)
			}
			if c.Model != tc.model || c.Generation != 4 || c.ParentID != "p-root" {
				t.Errorf("candidate model %q generation %d parent %q", c.Model, c.Generation, c.ParentID)
			}
			if tc.wantReject == nil {
				if c.Rejected != "" {
					t.Fatalf("rejected: %s", c.Rejected)
				}
				if c.Code != tc.wantCode {
					t.Errorf("code =\n%s\nwant\n%s", c.Code, tc.wantCode)
				}
				if c.Tokens != (protocol.TokenUsage{Prompt: 100, Completion: 20}) {
					t.Errorf("tokens = %+v, want 100/20", c.Tokens)
				}
				if c.Changes == "" {
					t.Error("accepted candidate has no change summary")
				}
				return
			}
			if c.Code != "" {
				t.Errorf("rejected candidate carries code:\n%s", c.Code)
			}
			for _, w := range tc.wantReject {
				if !strings.Contains(c.Rejected, w) {
					t.Errorf("rejection %q does not mention %q", c.Rejected, w)
				}
			}
		})
	}
}

func TestModelErrorIsRejectedCandidate(t *testing.T) {
	launchtest.NoLeaks(t)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "model is loading", http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	e := start(t, generator.Config{Getenv: getenv}, map[string]string{"r3": openaiConfig(down.URL)})
	tk := task("r3", "r3.t1", "coder")
	e.publish(t, tk)
	c := e.candidates(t, 1)[0]
	for _, w := range []string{"503", "model is loading", "2 attempts"} {
		if !strings.Contains(c.Rejected, w) {
			t.Errorf("rejection %q does not mention %q", c.Rejected, w)
		}
	}
}

// A task processed twice (a redelivery after a crash between publish and ack) yields one
// candidate: the candidate's id comes from the task's, and JetStream deduplicates it.
func TestRedeliveredTaskYieldsOneCandidate(t *testing.T) {
	launchtest.NoLeaks(t)
	chat := newChatServer(t, func(string) string {
		return "<<<<<<< SEARCH\n    scale = 1.5\n=======\n    scale = 2.5\n>>>>>>> REPLACE\n"
	})
	e := start(t, generator.Config{Getenv: getenv, Models: []string{"mutate"}}, map[string]string{"r4": mutateConfig})
	other := start(t, generator.Config{Getenv: getenv, Models: []string{"coder"}}, map[string]string{"r5": openaiConfig(chat.URL)})
	for _, env := range []struct {
		e          *env
		run, model string
	}{{e, "r4", "mutate"}, {other, "r5", "coder"}} {
		tk := task(env.run, env.run+".t1", env.model)
		// The same id twice: the TASKS stream keeps one.
		env.e.publish(t, tk)
		env.e.publish(t, tk)
		first := env.e.candidates(t, 1)[0]
		env.e.settled(t, env.e.Names.GeneratorConsumer(env.model), 1)
		// The same task under another message id gets past the TASKS stream's deduplication
		// and is generated again, as a redelivery would be.
		data, err := protocol.Encode(tk)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.e.JS.Publish(env.e.ctx, env.e.Names.Task(env.run, env.model), data, jetstream.WithMsgID(tk.ID+"-again")); err != nil {
			t.Fatal(err)
		}
		env.e.settled(t, env.e.Names.GeneratorConsumer(env.model), 2)
		all := env.e.candidates(t, 1)
		if len(all) != 1 {
			t.Fatalf("%s: CANDIDATES holds %d candidates for one task, want 1", env.model, len(all))
		}
		if all[0].Code != first.Code || all[0].ID != protocol.CandidateID(tk.ID) {
			t.Errorf("%s: candidate changed", env.model)
		}
	}
	if n := chat.calls.Load(); n != 2 {
		t.Errorf("model called %d times, want 2 (the task was generated twice)", n)
	}
}

// The mutate backend is deterministic in the task's seed: two runs of the same task give the
// same candidate, in separate deployments.
func TestMutateSeedDeterminesCandidate(t *testing.T) {
	launchtest.NoLeaks(t)
	var codes []string
	for range 2 {
		e := start(t, generator.Config{}, map[string]string{"r6": mutateConfig})
		e.publish(t, task("r6", "r6.t1", "mutate"))
		codes = append(codes, e.candidates(t, 1)[0].Code)
		e.shutdown(t)
	}
	if codes[0] != codes[1] {
		t.Errorf("same task, same seed, different candidates:\n%s\n---\n%s", codes[0], codes[1])
	}
}

// Tasks that cannot be read or belong to no run are terminated without a candidate.
func TestUnusableTasksAreTerminated(t *testing.T) {
	launchtest.NoLeaks(t)
	e := start(t, generator.Config{}, map[string]string{"r7": mutateConfig})
	if _, err := e.JS.Publish(e.ctx, e.Names.Task("r7", "mutate"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.JS.Publish(e.ctx, e.Names.Task("r7", "mutate"), []byte(`{"v":99,"id":"x"}`)); err != nil {
		t.Fatal(err)
	}
	e.publish(t, task("nosuchrun", "nosuchrun.t1", "mutate"))
	e.publish(t, task("r7", "r7.t1", "mutate")) // still served after the bad ones
	c := e.candidates(t, 1)
	e.settled(t, e.Names.GeneratorConsumer(""), 4)
	cons, err := e.JS.Consumer(e.ctx, e.Names.TasksStream(), e.Names.GeneratorConsumer(""))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 || info.Delivered.Stream != 4 {
		t.Errorf("consumer delivered %d tasks with %d redelivered, want 4 delivered once each", info.Delivered.Stream, info.NumRedelivered)
	}
	if len(c) != 1 || c[0].TaskID != "r7.t1" {
		t.Errorf("candidates = %+v, want only r7.t1's", c)
	}
}

func TestConfigValidate(t *testing.T) {
	launchtest.NoLeaks(t)
	e := natstest.StartTestEnv(t)
	tests := []struct {
		cfg  generator.Config
		want string
	}{
		{generator.Config{Models: []string{"a", "b"}}, "one model or all"},
		{generator.Config{Models: []string{" "}}, "model name is empty"},
	}
	for _, tt := range tests {
		_, err := generator.New(tt.cfg, e.Conn, nil)
		if !errors.Is(err, generator.ErrConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%+v) = %v, want ErrConfig mentioning %q", tt.cfg, err, tt.want)
		}
	}
	if _, err := generator.New(generator.Config{Models: []string{"qwen"}}, e.Conn, nil); err != nil {
		t.Errorf("one model: %v", err)
	}
}

// A replica serving every model cannot share the TASKS stream with one serving a single model;
// the second to start says so.
func TestOverlappingConsumersExplained(t *testing.T) {
	launchtest.NoLeaks(t)
	e := start(t, generator.Config{}, nil)
	svc, err := generator.New(generator.Config{Names: e.Names, Models: []string{"coder"}}, e.Conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the first replica's consumer exists.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := e.JS.Consumer(e.ctx, e.Names.TasksStream(), e.Names.GeneratorConsumer("")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("first replica never created its consumer")
		}
		time.Sleep(20 * time.Millisecond)
	}
	err = svc.Run(e.ctx)
	if err == nil || !strings.Contains(err.Error(), "cannot run side by side") {
		t.Errorf("Run = %v, want an error explaining the overlap", err)
	}
}
