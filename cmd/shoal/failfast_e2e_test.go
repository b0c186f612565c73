package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/program"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// brokenProblem is the example problem with its evaluator.py replaced.
func brokenProblem(t *testing.T, evaluator string) string {
	t.Helper()
	dir := exampleDir(t)
	if err := os.WriteFile(filepath.Join(dir, "evaluator.py"), []byte(evaluator), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// brokenEvaluators fail on every program, the seed first.
var brokenEvaluators = []struct {
	name, run, evaluator string
	want                 []string // in the run's stop reason
}{
	{"syntax error", "syntax", "def evaluate(program_path)\n    return {'combined_score': 1.0}\n",
		[]string{"the seed failed to evaluate: ", "SyntaxError", "evaluator.py", "line 1"}},
	{"import error", "imports", "import no_such_module_anywhere\n\ndef evaluate(program_path):\n    return {'combined_score': 1.0}\n",
		[]string{"the seed failed to evaluate: ", "ModuleNotFoundError", "no_such_module_anywhere"}},
	{"no metrics", "nometrics", "def evaluate(program_path):\n    return {}\n",
		[]string{"the seed failed to evaluate: evaluator returned no numeric metrics"}},
}

// TestBrokenEvaluatorFailsAfterTheSeedAlone: an evaluator that cannot score the seed ends the
// run as failed with the evaluator's error, before any task is planned: one result in
// RESULTS, no budget spent, no "new best program" for the failed seed, and `shoal status`
// says why.
func TestBrokenEvaluatorFailsAfterTheSeedAlone(t *testing.T) {
	s := startStack(t)
	for _, tt := range brokenEvaluators {
		t.Run(tt.name, func(t *testing.T) {
			s.seed(tt.run, brokenProblem(t, tt.evaluator), fmt.Sprintf(mutateConfig, 10))
			pst, st := s.waitFor(tt.run, "failed", time.Minute, func(pst *protocol.PlannerState, _ *protocol.RunState) bool {
				return pst.Status == protocol.RunFailed
			})
			for _, w := range tt.want {
				if !strings.Contains(pst.StopReason, w) {
					t.Errorf("stop reason %q does not say %q", pst.StopReason, w)
				}
			}
			time.Sleep(time.Second) // long enough for a planner that went on to issue tasks
			pst, st = s.waitFor(tt.run, "re-read", time.Second, func(*protocol.PlannerState, *protocol.RunState) bool { return true })
			if pst.Issued != 0 || st.Iterations != 0 || st.Seeds != 1 || st.SeedsOK != 0 {
				t.Errorf("issued %d, iterations %d, seeds %d (ok %d); want the seed alone", pst.Issued, st.Iterations, st.Seeds, st.SeedsOK)
			}
			if rs := s.results(tt.run); len(rs) != 1 || !rs[0].Candidate.IsSeed() || rs[0].Status == protocol.StatusOK {
				t.Errorf("RESULTS holds %d results for the run; want one, the failed seed", len(rs))
			}
			for _, ev := range s.events(tt.run) {
				if ev.Kind == protocol.EventNewBest {
					t.Errorf("event %q for a run whose seed failed", ev.Message)
				}
			}
			var status bytes.Buffer
			if err := printStatus(context.Background(), &status, s.client, tt.run); err != nil {
				t.Fatalf("status: %v", err)
			}
			if out := status.String(); !strings.Contains(out, tt.run+"  failed") || !strings.Contains(out, "run "+tt.run+" failed: "+pst.StopReason) {
				t.Errorf("status does not show the run failed with its reason:\n%s", out)
			}
		})
	}
}

// events reads the run's events from the EVENTS stream.
func (s *stack) events(run string) []protocol.Event {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := s.env.JS.Stream(ctx, s.env.Names.EventsStream())
	if err != nil {
		s.t.Fatal(err)
	}
	var out []protocol.Event
	for m := range scan(ctx, s.t, stream) {
		var ev protocol.Event
		if protocol.Decode(m.Data, &ev) == nil && ev.Run == run {
			out = append(out, ev)
		}
	}
	return out
}

// scan yields every message a stream holds.
func scan(ctx context.Context, t testing.TB, stream jetstream.Stream) func(func(*jetstream.RawStreamMsg) bool) {
	return func(yield func(*jetstream.RawStreamMsg) bool) {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			return
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
			m, err := stream.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if !yield(m) {
				return
			}
		}
	}
}

// TestUpExitsWithTheSeedsError: `shoal up` on a problem whose evaluator does not import
// prints the evaluator's error and exits with an error instead of spending its budget.
func TestUpExitsWithTheSeedsError(t *testing.T) {
	tt := brokenEvaluators[0]
	dir := brokenProblem(t, tt.evaluator)
	out, err := shoalUp(t, dir, "--backend", "mutate", "--iterations", "10")
	if !errors.Is(err, errRunFailed) {
		t.Fatalf("shoal up = %v, want the run failed\n%s", err, out)
	}
	for _, w := range tt.want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if !strings.Contains(out, "failed after 1 seed(s) and 0 iterations") {
		t.Errorf("up did not say the run failed on its seed:\n%s", out)
	}
}

// shoalUp runs `shoal up` on dir with an embedded server of its own and returns what it
// printed and its error; the test fails if it does not end on its own.
func shoalUp(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	var out syncBuffer // the progress bar and the log's terminal handler write at once
	cmd := rootCmd()
	cmd.SetArgs(append([]string{"up", dir, "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--gpus", "none"}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	if ctx.Err() != nil {
		t.Fatalf("shoal up ran until the test's deadline:\n%s", out.String())
	}
	return out.String(), err
}

// syncBuffer is a bytes.Buffer for several writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestUpRefusesAnUnknownProfile: `shoal up` knows its generator's profiles, so a run that
// launches a model none of them serves is refused before it is seeded.
func TestUpRefusesAnUnknownProfile(t *testing.T) {
	dir := exampleDir(t)
	profiles := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(profiles, []byte("profiles:\n  llama-cpp:\n    command: [llama-server, --port, '{port}']\n    variants: [{name: q4, need_gib: 5}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte("max_iterations: 3\nllm:\n  models:\n    - {name: coder, backend: launch, launch: {profile: vllm-qwen}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := shoalUp(t, dir, "--profiles", profiles)
	want := `config: model "coder": unknown launch profile "vllm-qwen": it has llama-cpp; declare the profile in its --profiles file`
	if !errors.Is(err, runconfig.ErrUnknownProfile) || err.Error() != want {
		t.Errorf("shoal up = %v, want %q\n%s", err, want, out)
	}
	if strings.Contains(out, "seeded run") {
		t.Errorf("the run was seeded:\n%s", out)
	}
}

// TestSeedRefusesBrokenInput: what cannot make a run is an error at once, before anything is
// published, and nothing waits: an empty or non-UTF-8 program, a config with a launch command
// or a literal key, a program for a run that does not exist.
func TestSeedRefusesBrokenInput(t *testing.T) {
	s := startStack(t)
	dir := exampleDir(t)
	write := func(name, text string) string {
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := fmt.Sprintf(mutateConfig, 3)
	tests := []struct {
		name     string
		program  string
		config   string
		want     error
		saying   string
		refusals []string
	}{
		{"empty program", "", good, program.ErrEmpty, "initial_program.py: the program is empty", nil},
		{"blank program", "\n  \n", good, program.ErrEmpty, "the program is empty", nil},
		{"latin-1 program", "# caf\xe9\nx = 1\n", good, program.ErrNotUTF8, "initial_program.py: the program is not valid UTF-8: byte 0xe9 at line 1, column 6", nil},
		{"launch command", "", "llm:\n  models:\n    - {name: m, backend: launch, launch: {command: [sh, -c, id], variants: [{name: v, need_gib: 1}]}}\n", runconfig.ErrInvalid,
			"llm.models[0].launch.command: a run config cannot bring a command", nil},
		{"literal api key", "", "llm:\n  api_key: sk-live-abc123\n  models: [{name: gpt}]\n", runconfig.ErrInvalid,
			`llm.api_key: holds a literal key; a run config travels over the bus and is stored in the runs bucket, so it must not hold secrets. Write a reference such as "${OPENAI_API_KEY}"`, []string{"sk-live-abc123"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &problem{evaluator: filepath.Join(dir, "evaluator.py"), program: filepath.Join(dir, "initial_program.py"), configText: []byte(tt.config)}
			p.programText = []byte(tt.program)
			if tt.program == "" && tt.want != program.ErrEmpty {
				p.programText, _ = os.ReadFile(p.program)
			}
			before := s.streamMsgs(s.env.Names.SeedsStream())
			start := time.Now()
			_, err := seedRun(context.Background(), s.client, "broken", p, overrides{}, func(string) {})
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.saying) {
				t.Errorf("seed = %v, want %v saying %q", err, tt.want, tt.saying)
			}
			for _, r := range tt.refusals {
				if err != nil && strings.Contains(err.Error(), r) {
					t.Errorf("the error repeats %q", r)
				}
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("refused after %s, want at once", d)
			}
			if after := s.streamMsgs(s.env.Names.SeedsStream()); after != before {
				t.Errorf("SEEDS went from %d to %d messages; want nothing published", before, after)
			}
		})
	}

	// A program for a run that does not exist: `shoal seed` says so at once.
	ctx := context.Background()
	if err := addProgram(ctx, s.client, "ghost", write("p.py", "x = 1\n"), time.Second); err == nil ||
		!strings.Contains(err.Error(), `unknown run "ghost": start the run with --config, --evaluator and --program first`) {
		t.Errorf("seed of a program for an unknown run = %v, want it refused", err)
	}
	// A seeding side that knows the generators' profiles refuses a run none serves.
	ps, _, err := runconfig.ParseProfiles([]byte("profiles:\n  llama-cpp:\n    command: [llama-server, --port, '{port}']\n    variants: [{name: q4, need_gib: 5}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := &problem{evaluator: filepath.Join(dir, "evaluator.py"), program: filepath.Join(dir, "initial_program.py"),
		configText: []byte("llm:\n  models: [{name: coder, backend: launch, launch: {profile: vllm-qwen}}]\n"), programText: []byte("x = 1\n")}
	if _, err := seedProblem(ctx, s.client, "launched", p, seedOptions{checkProfiles: true, profiles: ps}, func(string) {}); !errors.Is(err, runconfig.ErrUnknownProfile) {
		t.Errorf("seed naming an unknown profile = %v, want ErrUnknownProfile", err)
	}
	// Programs added to a run: a non-UTF-8 one is refused before it is published, a good one
	// returns once the archive has taken it.
	s.seed("real", dir, good)
	if err := addProgram(ctx, s.client, "real", write("p.py", "x = '\xff'\n"), time.Second); !errors.Is(err, program.ErrNotUTF8) {
		t.Errorf("seed of a non-UTF-8 program = %v, want ErrNotUTF8", err)
	}
	if err := addProgram(ctx, s.client, "real", write("p.py", "x = 2\n"), 10*time.Second); err != nil {
		t.Errorf("seed of a program = %v, want it added", err)
	}
	s.waitFor("real", "the added program folded", 30*time.Second, func(_ *protocol.PlannerState, st *protocol.RunState) bool { return st.Seeds == 2 })
}

func (s *stack) streamMsgs(name string) uint64 {
	s.t.Helper()
	st, err := s.env.JS.Stream(context.Background(), name)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return info.State.Msgs
}

// TestSeedWaitsForTheArchive: `shoal seed` reports success only once the archive has taken
// the seed. With no archive running it says so after --wait, and the seed is taken once an
// archive starts; a seed the archive refuses comes back with the archive's reason.
func TestSeedWaitsForTheArchive(t *testing.T) {
	s := startStack(t)
	dir := exampleDir(t)
	s.seed("first", dir, fmt.Sprintf(mutateConfig, 1)) // the archive is up and answering
	s.stop("archive")
	p := &problem{evaluator: filepath.Join(dir, "evaluator.py"), program: filepath.Join(dir, "initial_program.py"), configText: []byte(fmt.Sprintf(mutateConfig, 3))}
	var err error
	if p.programText, err = os.ReadFile(p.program); err != nil {
		t.Fatal(err)
	}
	_, err = seedProblem(context.Background(), s.client, "late", p, seedOptions{wait: time.Second}, func(string) {})
	if !errors.Is(err, errSeedNoAnswer) || !strings.Contains(err.Error(), "no archive answered within 1s") {
		t.Fatalf("seed with no archive = %v, want it to say no archive answered", err)
	}
	if _, err := s.client.runs.Spec(context.Background(), "late"); err == nil {
		t.Fatal("the run exists although no archive took its seed")
	}
	s.start("archive")
	s.waitDone("late", time.Minute)

	// Another config under the same run id is the archive's to refuse.
	p.configText = []byte(fmt.Sprintf(mutateConfig, 5))
	_, err = seedProblem(context.Background(), s.client, "late", p, seedOptions{}, func(string) {})
	if !errors.Is(err, errSeedRejected) || !strings.Contains(err.Error(), "run late already exists with another config or evaluator; choose a new run id") {
		t.Errorf("seed with another config = %v, want the archive's refusal", err)
	}
}

// TestAPIKeyNeverEntersTheBus: a run config names the key's variable; the generator sends
// the key it holds in its environment, and no stream, bucket or object store of the
// deployment ever holds it.
func TestAPIKeyNeverEntersTheBus(t *testing.T) {
	const secret = "sk-e2e-6b1f0c2d9e8a7f3b"
	t.Setenv("SHOAL_E2E_SECRET_KEY", secret)
	var mu sync.Mutex
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		reply := "<<<<<<< SEARCH\n    x, y = 3.0, 3.0\n=======\n    x, y = 1.3, -0.7\n>>>>>>> REPLACE\n"
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "x", "object": "chat.completion", "model": "m",
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": reply}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
		})
	}))
	t.Cleanup(srv.Close)
	s := startStack(t)
	s.seed("keyed", exampleDir(t), fmt.Sprintf(`
max_iterations: 3
llm:
  api_base: %s/v1
  api_key: ${SHOAL_E2E_SECRET_KEY}
  models: [{name: m, concurrency: 1}]
evaluator: {cascade_evaluation: false}
`, srv.URL))
	s.waitDone("keyed", time.Minute)
	mu.Lock()
	if len(auth) == 0 || auth[0] != "Bearer "+secret {
		t.Errorf("the model got Authorization %q, want the key from the generator's environment", auth)
	}
	mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var streams, msgs int
	for name := range s.env.JS.StreamNames(ctx).Name() {
		stream, err := s.env.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		streams++
		for m := range scan(ctx, t, stream) {
			msgs++
			if bytes.Contains(m.Data, []byte(secret)) || strings.Contains(fmt.Sprint(m.Header), secret) {
				t.Errorf("stream %s holds the key at sequence %d (subject %s)", name, m.Sequence, m.Subject)
			}
		}
	}
	if streams < 8 || msgs == 0 {
		t.Errorf("scanned %d streams and %d messages; want every stream, KV bucket and object store", streams, msgs)
	}
}
