package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// standIn is an OpenAI-compatible chat server that plays a coding model on the testdata
// problem (solve() should return 42): its first reply breaks the program (division by zero,
// which fails cascade stage 1), every later one moves the returned value 8 closer to 42 with
// a SEARCH/REPLACE diff of the current program. It keeps every prompt it was sent.
type standIn struct {
	srv *httptest.Server

	mu      sync.Mutex
	prompts []protocol.ChatMessage // the user message of each request, in arrival order
	systems []string
}

var returnLine = regexp.MustCompile(`(?m)^    return (.*)$`)

func startStandIn(t *testing.T) *standIn {
	s := &standIn{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model    string                 `json:"model"`
			Messages []protocol.ChatMessage `json:"messages"`
		}
		if r.URL.Path != "/v1/chat/completions" || json.NewDecoder(r.Body).Decode(&req) != nil || len(req.Messages) < 2 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		user := req.Messages[len(req.Messages)-1]
		s.mu.Lock()
		n := len(s.prompts)
		s.prompts = append(s.prompts, user)
		s.systems = append(s.systems, req.Messages[0].Content)
		s.mu.Unlock()

		reply := "The program looks fine."
		if _, program, ok := strings.Cut(user.Content, "# Current Program\n```python\n"); ok {
			program, _, _ = strings.Cut(program, "\n```")
			if m := returnLine.FindStringSubmatch(program); m != nil {
				next := "1.0 / 0"
				if n > 0 {
					v, err := strconv.ParseFloat(m[1], 64)
					if err != nil {
						v = 1 // the broken program: start again
					}
					next = strconv.FormatFloat(min(v+8, 42), 'f', 1, 64)
				}
				reply = fmt.Sprintf("Move the value.\n<<<<<<< SEARCH\n%s\n=======\n    return %s\n>>>>>>> REPLACE\n", m[0], next)
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": fmt.Sprint(n), "object": "chat.completion", "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": reply}, "finish_reason": "stop"}},
			"usage":   map[string]any{"prompt_tokens": len(user.Content) / 4, "completion_tokens": 30, "total_tokens": len(user.Content)/4 + 30},
		})
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *standIn) sent() ([]protocol.ChatMessage, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]protocol.ChatMessage(nil), s.prompts...), append([]string(nil), s.systems...)
}

// openEvolveProblem copies testdata/openevolve_problem into a temporary directory with the
// stand-in server's address in its config.
func openEvolveProblem(t *testing.T, apiBase string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join("testdata", "openevolve_problem")
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		data = bytes.ReplaceAll(data, []byte("STAND_IN_URL"), []byte(apiBase))
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestUpRunsAnOpenEvolveProblem runs `shoal up --config --evaluator --program --output` on a
// problem in OpenEvolve's layout (cascade evaluator with EvaluationResult artifacts, EVOLVE-BLOCK
// seed, a template_dir override) through the openai backend, as a user would.
func TestUpRunsAnOpenEvolveProblem(t *testing.T) {
	model := startStandIn(t)
	dir := openEvolveProblem(t, model.srv.URL+"/v1")
	out := filepath.Join(t.TempDir(), "out")
	var stderr syncBuffer // up's log, its progress and its events write at once, as to a terminal
	cmd := rootCmd()
	cmd.SetArgs([]string{"up", "--listen", "127.0.0.1:0", "--state-dir", t.TempDir(), "--gpus", "none",
		"--config", filepath.Join(dir, "config.yaml"), "--evaluator", filepath.Join(dir, "evaluator.py"),
		"--program", filepath.Join(dir, "initial_program.py"), "--run", "oe", "--output", out})
	cmd.SetOut(&stderr)
	cmd.SetErr(&stderr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("shoal up: %v\n%s", err, stderr.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("shoal up ran until the test's deadline:\n%s", stderr.String())
	}
	log := stderr.String()
	if !strings.Contains(log, "run oe done (max_iterations (12) reached): 12 iterations") {
		t.Errorf("up did not report the spent budget:\n%s", log)
	}
	if strings.Contains(log, "warning:") {
		t.Errorf("an OpenEvolve config with known keys drew warnings:\n%s", log)
	}

	best, err := os.ReadFile(filepath.Join(out, "best_program.py"))
	if err != nil {
		t.Fatalf("--output: %v", err)
	}
	var info struct {
		Score   float64            `json:"score"`
		Metrics map[string]float64 `json:"metrics"`
	}
	data, err := os.ReadFile(filepath.Join(out, "best_program_info.json"))
	if err != nil || json.Unmarshal(data, &info) != nil {
		t.Fatalf("best_program_info.json: %v %s", err, data)
	}
	if !strings.Contains(string(best), "# EVOLVE-BLOCK-START") || strings.Contains(string(best), "return 1.0\n") || info.Score <= 1.0/42 {
		t.Errorf("best program (score %.4f) is not an improvement on the seed:\n%s", info.Score, best)
	}
	if info.Metrics["distance"] == 0 && info.Score < 1 {
		t.Errorf("best_program_info.json lacks the evaluator's metrics: %+v", info.Metrics)
	}

	checkpoints, err := filepath.Glob(filepath.Join(out, "checkpoints", "checkpoint_*", "metadata.json"))
	if err != nil || len(checkpoints) != 1 {
		t.Errorf("--output holds checkpoints %v (%v); want one checkpoint_<n>/metadata.json", checkpoints, err)
	} else if progs, _ := filepath.Glob(filepath.Join(filepath.Dir(checkpoints[0]), "programs", "*.json")); len(progs) == 0 {
		t.Errorf("checkpoint %s holds no programs", filepath.Dir(checkpoints[0]))
	}

	prompts, systems := model.sent()
	if len(prompts) < 12 {
		t.Fatalf("the model was asked %d times; want ≥ 12", len(prompts))
	}
	if !strings.Contains(systems[0], "as close to 42") {
		t.Errorf("system message %q is not the config's prompt.system_message", systems[0])
	}
	// The problem's templates/ override two of OpenEvolve's templates; the others keep
	// shoal's defaults.
	for i, p := range prompts {
		if !strings.Contains(p.Content, "## Previous Attempts (from the problem's own evolution_history.txt)") ||
			!strings.Contains(p.Content, "# Current Program\n```python\n") {
			t.Fatalf("prompt %d does not use templates/evolution_history.txt with the default diff_user:\n%s", i, p.Content)
		}
		if strings.Contains(p.Content, "### Attempt ") && !strings.Contains(p.Content, "(rendered from the problem's own previous_attempt.txt)") {
			t.Fatalf("prompt %d shows an attempt without templates/previous_attempt.txt:\n%s", i, p.Content)
		}
	}
}

// TestPromptCarriesThePreviousFailuresArtifacts: the first candidate fails cascade stage 1
// with a traceback on stderr and the evaluator's own artifacts; a later task on its island
// must show the model that output, so the model does not repeat the mistake.
func TestPromptCarriesThePreviousFailuresArtifacts(t *testing.T) {
	model := startStandIn(t)
	dir := openEvolveProblem(t, model.srv.URL+"/v1")
	s := startStack(t)
	config, err := os.ReadFile(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := &problem{evaluator: filepath.Join(dir, "evaluator.py"), program: filepath.Join(dir, "initial_program.py"),
		configText: config, configPath: filepath.Join(dir, "config.yaml")}
	if p.programText, err = os.ReadFile(p.program); err != nil {
		t.Fatal(err)
	}
	if _, err := seedRun(context.Background(), s.client, "arts", p, overrides{}, func(w string) { t.Errorf("warning: %s", w) }); err != nil {
		t.Fatal(err)
	}
	s.waitDone("arts", 2*time.Minute)

	var failed *protocol.Result
	for _, r := range s.results("arts") {
		if r.Candidate.Iteration > 0 && strings.Contains(r.Candidate.Code, "1.0 / 0") {
			failed = &r
			break
		}
	}
	if failed == nil {
		t.Fatal("no candidate carried the stand-in's broken edit")
	}
	if failed.Artifacts["failure_stage"] != "stage1" || !strings.Contains(failed.Artifacts["stage1_traceback"], "ZeroDivisionError") ||
		!strings.Contains(failed.Artifacts["stderr"], "solve() raised ZeroDivisionError") {
		t.Fatalf("the failing candidate's result lacks its artifacts: status %s, artifacts %v", failed.Status, failed.Artifacts)
	}
	prompts, _ := model.sent()
	carried := 0
	for _, p := range prompts[1:] {
		if strings.Contains(p.Content, "ZeroDivisionError") && strings.Contains(p.Content, "stage1") &&
			strings.Contains(p.Content, "solve() raised ZeroDivisionError: float division by zero") {
			carried++
		}
	}
	if carried == 0 {
		t.Errorf("none of the %d later prompts shows the failed candidate's traceback, stderr and failure_stage; the last:\n%s",
			len(prompts)-1, prompts[len(prompts)-1].Content)
	}
	t.Logf("%d of %d later prompts carried the failure's artifacts", carried, len(prompts)-1)
}
