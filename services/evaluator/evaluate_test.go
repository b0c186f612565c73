package evaluator

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/services/evaluator/internal/proctest"

	"github.com/shoal-run/shoal/services/evaluator/internal/harness"
	"github.com/shoal-run/shoal/services/evaluator/internal/sandbox"
)

// newTestScorer installs the harness into a private cache dir removed after the test, with
// the real python3 from PATH; it runs candidates cold, on a fresh interpreter each.
func newTestScorer(t testing.TB, maxOutput int) *scorer {
	return newScorerMode(t, maxOutput, false)
}

// newScorerMode is newTestScorer, with warm interpreters when warm is set.
func newScorerMode(t testing.TB, maxOutput int, warm bool) *scorer {
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
	h, err := harness.Install(cache)
	if err != nil {
		t.Fatal(err)
	}
	python, err := resolvePython(context.Background(), "python3")
	if err != nil {
		t.Fatalf("python3 is required: %v", err)
	}
	log := slog.New(slog.DiscardHandler)
	l, err := sandbox.NewLauncher(python, cache, log)
	if err != nil {
		t.Fatal(err)
	}
	s := &scorer{python: python, harness: h, launcher: l, workRoot: filepath.Join(cache, "work"), maxOutput: maxOutput, log: log}
	if warm {
		s.warm = newWarmPool(l, log)
	}
	t.Cleanup(s.close)
	return s
}

func testdata(t testing.TB, name string) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestScore(t *testing.T) {
	const secret = "hunter2-do-not-leak"
	t.Setenv("SECRET", secret)
	s := newTestScorer(t, 4096)

	cases := []struct {
		name   string
		bundle string // under testdata/; "" for none
		code   string
		config func(*runconfig.Evaluator)
		// want
		status    protocol.Status
		reason    string // substring of the reason; "" wants none
		metrics   map[string]float64
		artifacts map[string]string // substrings of artifacts
		absent    []string          // metrics and artifacts that must not be there
		stage     int
		check     func(t *testing.T, v *verdict)
	}{
		{
			name:   "dict return",
			bundle: "basic",
			code:   "def run():\n    print('hello from the candidate')\n    return 0.8\n",
			status: protocol.StatusOK,
			metrics: map[string]float64{
				"combined_score": 0.8, "valid": 1, "cwd_is_home": 1,
			},
			artifacts: map[string]string{"stdout": "hello from the candidate", "environment": "PYTHONPATH"},
			absent:    []string{"traceback", "stderr"},
		},
		{
			name:   "the service's environment stays out",
			bundle: "basic",
			code:   "import os\ndef run():\n    return 0.0 if 'SECRET' in os.environ else 1.0\n",
			status: protocol.StatusOK,
			metrics: map[string]float64{
				"combined_score": 1,
			},
			check: func(t *testing.T, v *verdict) {
				env := strings.Fields(v.Artifacts["environment"])
				want := []string{"HOME", "LANG", "PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "PYTHONUNBUFFERED", "TMPDIR"}
				if strings.Join(env, " ") != strings.Join(want, " ") {
					t.Errorf("evaluator's environment = %v, want exactly %v", env, want)
				}
			},
		},
		{
			name:   "EvaluationResult with artifacts",
			bundle: "result",
			code:   "x = 1\ny = 2\n",
			status: protocol.StatusOK,
			metrics: map[string]float64{
				"combined_score": 0.25, "lines": 2,
			},
			artifacts: map[string]string{
				"feedback": "too slow", "raw": "bytes \ufffd here", "count": "3",
				"dropped_metrics": "broken=nan",
			},
			absent: []string{"broken", "huge"},
			check: func(t *testing.T, v *verdict) {
				if !strings.Contains(v.Artifacts["dropped_metrics"], "huge=inf") {
					t.Errorf("dropped_metrics = %q, want huge=inf noted", v.Artifacts["dropped_metrics"])
				}
			},
		},
		{
			name:      "raising evaluator",
			bundle:    "raising",
			code:      "pass\n",
			status:    protocol.StatusFailed,
			reason:    "ValueError: no solve() in program.py",
			artifacts: map[string]string{"traceback": "raise ValueError", "stdout": "checking"},
		},
		{
			name:   "syntax error in the candidate",
			bundle: "basic",
			code:   "def run(:\n",
			status: protocol.StatusFailed,
			reason: "SyntaxError",
		},
		{
			name:   "cascade stops after stage 1 below its threshold",
			bundle: "cascade",
			code:   "SCORE = 0.3\n",
			status: protocol.StatusOK,
			stage:  1,
			metrics: map[string]float64{
				"combined_score": 0.3, "stage1": 1,
			},
			absent: []string{"stage2", "stage3"},
		},
		{
			name:   "cascade passes every stage",
			bundle: "cascade",
			code:   "SCORE = 0.95\n",
			status: protocol.StatusOK,
			stage:  3,
			metrics: map[string]float64{
				"combined_score": 0.97, "stage1": 1, "stage2": 1, "stage3": 1,
			},
		},
		{
			name:   "cascade stops at stage 2 below its threshold",
			bundle: "cascade",
			code:   "SCORE = 0.6\n",
			status: protocol.StatusOK,
			stage:  2,
			metrics: map[string]float64{
				"combined_score": 0.61, "stage1": 1, "stage2": 1,
			},
			absent: []string{"stage3"},
		},
		{
			name:   "cascade off runs evaluate()",
			bundle: "cascade",
			code:   "SCORE = 0.95\n",
			config: func(e *runconfig.Evaluator) { e.CascadeEvaluation = false },
			status: protocol.StatusFailed,
			reason: "AssertionError: evaluate() must not run when the cascade is on",
		},
		{
			name:   "infinite loop times out and leaves no process",
			bundle: "basic",
			code: "import os, subprocess\n" +
				"def run():\n" +
				"    subprocess.Popen(['sleep', '600'])\n" +
				"    subprocess.Popen(['setsid', 'sleep', '600'])\n" +
				"    print('started', flush=True)\n" +
				"    while True:\n" +
				"        pass\n",
			// Long enough for the two children to start on a loaded machine.
			config: func(e *runconfig.Evaluator) { e.Timeout = 5 * time.Second },
			status: protocol.StatusTimeout,
			reason: "timed out after 5s",
			check: func(t *testing.T, v *verdict) {
				if !strings.Contains(v.Artifacts["stdout"], "started") {
					t.Fatalf("stdout = %q, want the candidate's children started", v.Artifacts["stdout"])
				}
				checkNoneLeft(t, v)
			},
		},
		{
			name:   "children that ended before evaluate() returned are not counted",
			bundle: "basic",
			code: "import subprocess\n" +
				"def run():\n" +
				"    subprocess.run(['sh', '-c', 'sleep 0.05 & wait'], check=True)\n" +
				"    return 0.5\n",
			status:  protocol.StatusOK,
			metrics: map[string]float64{"combined_score": 0.5},
		},
		{
			name:   "a child left running fails the candidate",
			bundle: "basic",
			code: "import subprocess\n" +
				"def run():\n" +
				"    subprocess.Popen(['sleep', '600'])\n" +
				"    subprocess.Popen(['sleep', '600'], start_new_session=True)\n" +
				"    return 0.5\n",
			status: protocol.StatusFailed,
			reason: "left 2 background processes running (killed)",
			check:  func(t *testing.T, v *verdict) { checkNoneLeft(t, v) },
		},
		{
			name:   "lots of output is capped",
			bundle: "basic",
			code:   "import sys\ndef run():\n    for i in range(100000):\n        print('line', i)\n    sys.stderr.write('E' * 1000000)\n    return 0.5\n",
			status: protocol.StatusOK,
			metrics: map[string]float64{
				"combined_score": 0.5,
			},
			artifacts: map[string]string{"stdout": "output truncated", "stderr": "output truncated"},
			check: func(t *testing.T, v *verdict) {
				for _, k := range []string{"stdout", "stderr"} {
					if n := len(v.Artifacts[k]); n > 4096+200 {
						t.Errorf("%s artifact is %d bytes, want about 4096", k, n)
					}
				}
				if !strings.HasPrefix(v.Artifacts["stdout"], "line 0\nline 1\n") || !strings.Contains(v.Artifacts["stdout"], "line 99999") {
					t.Errorf("stdout artifact = %q..., want the head and the tail", v.Artifacts["stdout"][:40])
				}
			},
		},
		{
			name:   "memory limit",
			bundle: "basic",
			code:   "def run():\n    block = bytearray(2 << 30)\n    return 1.0\n",
			config: func(e *runconfig.Evaluator) { e.MemoryLimitMB = 512 },
			status: protocol.StatusFailed,
			reason: "MemoryError",
		},
		{
			name:   "the run's work dir limit bounds what a candidate writes",
			bundle: "basic",
			code: "def run():\n" +
				"    with open('fill', 'wb') as f:\n" +
				"        for _ in range(40):\n" +
				"            f.write(b'x' * (1 << 20))\n" +
				"    return 1.0\n",
			config: func(e *runconfig.Evaluator) { e.WorkDirLimitMB = 16 },
			status: protocol.StatusFailed,
			reason: "No space left on device",
		},
		{
			name:   "the same write fits the default work dir limit",
			bundle: "basic",
			code: "def run():\n" +
				"    with open('fill', 'wb') as f:\n" +
				"        for _ in range(40):\n" +
				"            f.write(b'x' * (1 << 20))\n" +
				"    return 1.0\n",
			status:  protocol.StatusOK,
			metrics: map[string]float64{"combined_score": 1},
		},
		{
			name:   "candidate exits the interpreter",
			bundle: "basic",
			code:   "import os\ndef run():\n    os._exit(3)\n",
			status: protocol.StatusFailed,
			reason: "evaluator exited with status 3",
		},
		{
			name:   "candidate ends the interpreter before the harness reports",
			bundle: "basic",
			code:   "import os\ndef run():\n    os._exit(0)\n",
			status: protocol.StatusFailed,
			reason: "evaluator ended without writing its result",
		},
		{
			name:   "non-numeric metrics move to artifacts",
			bundle: "odd",
			code:   "RESULT = {'combined_score': 'high', 'n': 2, 'ok': False, 'detail': {'k': [1]}}\n",
			status: protocol.StatusOK,
			metrics: map[string]float64{
				"n": 2, "ok": 0,
			},
			artifacts: map[string]string{"combined_score": "high", "detail": `{"k": [1]}`},
		},
		{
			name:   "no numeric metrics",
			bundle: "odd",
			code:   "RESULT = {'verdict': 'meh'}\n",
			status: protocol.StatusFailed,
			reason: "evaluator returned no numeric metrics",
		},
		{
			name:   "neither dict nor EvaluationResult",
			bundle: "odd",
			code:   "RESULT = 42\n",
			status: protocol.StatusFailed,
			reason: "TypeError: evaluator returned int",
		},
		{
			name:   "object with metrics and artifacts",
			bundle: "odd",
			code:   "class R:\n    metrics = {'combined_score': 0.4}\n    artifacts = {'why': 'duck typing'}\nRESULT = R()\n",
			status: protocol.StatusOK,
			metrics: map[string]float64{
				"combined_score": 0.4,
			},
			artifacts: map[string]string{"why": "duck typing"},
		},
		{
			name:   "artifacts off",
			bundle: "raising",
			code:   "pass\n",
			config: func(e *runconfig.Evaluator) { e.EnableArtifacts = false },
			status: protocol.StatusFailed,
			reason: "ValueError",
			check: func(t *testing.T, v *verdict) {
				if len(v.Artifacts) != 0 {
					t.Errorf("artifacts = %v, want none", v.Artifacts)
				}
			},
		},
		{
			name:   "missing evaluator file",
			bundle: "command",
			code:   "pass\n",
			status: protocol.StatusFailed,
			reason: "evaluator file evaluator.py is not in the run's bundle",
		},
		{
			name:   "evaluator file outside the bundle",
			bundle: "basic",
			code:   "pass\n",
			config: func(e *runconfig.Evaluator) { e.File = "../result/evaluator.py" },
			status: protocol.StatusFailed,
			reason: "must be a relative path inside the run's bundle",
		},
		{
			name:   "command printing JSON",
			bundle: "command",
			code:   "a\nb\nc\n",
			config: func(e *runconfig.Evaluator) { e.Command = []string{"./score.sh", "{program}"} },
			status: protocol.StatusOK,
			metrics: map[string]float64{
				"combined_score": 0.5, "lines": 3, "passed": 1,
			},
			artifacts: map[string]string{"verdict": "fine", "stdout": "scoring ", "stderr": "done"},
		},
		{
			name:   "python command printing NaN",
			bundle: "command",
			code:   "pass\n",
			config: func(e *runconfig.Evaluator) { e.Command = []string{"python3", "score.py", "{program}"} },
			status: protocol.StatusOK,
			metrics: map[string]float64{
				"combined_score": 0.75,
			},
			artifacts: map[string]string{"dropped_metrics": "loss=NaN"},
			absent:    []string{"loss"},
		},
		{
			name:   "command printing garbage",
			bundle: "command",
			code:   "pass\n",
			config: func(e *runconfig.Evaluator) { e.Command = []string{"sh", "-c", "echo 'score: 12'; echo '{not json'"} },
			status: protocol.StatusFailed,
			reason: "command printed no JSON object",
		},
		{
			name:   "command printing no numbers",
			code:   "pass\n",
			config: func(e *runconfig.Evaluator) { e.Command = []string{"echo", `{"verdict": "meh"}`} },
			status: protocol.StatusFailed,
			reason: "command printed no numeric metrics",
		},
		{
			name:   "command failing",
			code:   "pass\n",
			config: func(e *runconfig.Evaluator) { e.Command = []string{"sh", "-c", "echo boom >&2; exit 2"} },
			status: protocol.StatusFailed,
			reason: "command exited with status 2: boom",
		},
		{
			name:   "command not found",
			code:   "pass\n",
			config: func(e *runconfig.Evaluator) { e.Command = []string{"no-such-evaluator-command", "{program}"} },
			status: protocol.StatusFailed,
			reason: "no-such-evaluator-command",
		},
		{
			name:   "command timing out",
			code:   "pass\n",
			config: func(e *runconfig.Evaluator) { e.Command, e.Timeout = []string{"sleep", "60"}, time.Second },
			status: protocol.StatusTimeout,
			reason: "timed out after 1s",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := runconfig.Default()
			if tc.config != nil {
				tc.config(&cfg.Evaluator)
			}
			j := job{cfg: cfg, programExt: ".py", code: tc.code}
			if tc.bundle != "" {
				j.bundleDir = testdata(t, tc.bundle)
			}
			v, err := s.score(context.Background(), j)
			if err != nil {
				t.Fatalf("score: %v", err)
			}
			if v.Status != tc.status {
				t.Errorf("status = %q (reason %q), want %q", v.Status, v.Reason, tc.status)
			}
			if tc.reason == "" && v.Reason != "" || !strings.Contains(v.Reason, tc.reason) {
				t.Errorf("reason = %q, want %q", v.Reason, tc.reason)
			}
			if v.Stage != tc.stage {
				t.Errorf("stage = %d, want %d", v.Stage, tc.stage)
			}
			for k, want := range tc.metrics {
				if got, ok := v.Metrics[k]; !ok || got != want {
					t.Errorf("metric %s = %v (present %v), want %v", k, got, ok, want)
				}
			}
			for k, want := range tc.artifacts {
				if got := v.Artifacts[k]; !strings.Contains(got, want) {
					t.Errorf("artifact %s = %q, want it to contain %q", k, got, want)
				}
			}
			for _, k := range tc.absent {
				if _, ok := v.Metrics[k]; ok {
					t.Errorf("metric %s = %v, want none", k, v.Metrics[k])
				}
				if _, ok := v.Artifacts[k]; ok {
					t.Errorf("artifact %s = %q, want none", k, v.Artifacts[k])
				}
			}
			if tc.check != nil {
				tc.check(t, v)
			}
			if t.Failed() {
				t.Logf("verdict: %+v", v)
			}
			// The work dir is gone once the evaluation is over.
			if left, _ := os.ReadDir(s.workRoot); len(left) > 0 {
				t.Errorf("work dirs left behind: %v", left)
			}
		})
	}
}

func TestScoreCancelled(t *testing.T) {
	s := newTestScorer(t, 4096)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	cfg := runconfig.Default()
	cfg.Evaluator.Command = []string{"sleep", "60"}
	start := time.Now()
	v, err := s.score(ctx, job{cfg: cfg, code: "pass\n"})
	if err == nil {
		t.Fatalf("score = %+v, want an error when ctx ends first", v)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancelled evaluation took %v", d)
	}
}

func TestCapText(t *testing.T) {
	cases := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"0123456789abcdef", 8, "0123\n[... 8 bytes cut ...]\ncdef"},
		{"ééééé", 4, "é\n[... 6 bytes cut ...]\né"},
	}
	for _, tc := range cases {
		if got := capText(tc.in, tc.n); got != tc.want {
			t.Errorf("capText(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

func TestLastJSONObject(t *testing.T) {
	cases := []struct {
		name  string
		out   string
		found bool
		keys  string
	}{
		{"last line", "hello\n{\"a\": 1}\n", true, "a"},
		{"last object wins", "{\"a\": 1}\n{\"b\": 2}\n\n", true, "b"},
		{"garbage after the object", "{\"a\": 1}\nnot json\n", true, "a"},
		{"pretty printed", "{\n  \"a\": 1,\n  \"b\": 2\n}\n", true, "a b"},
		{"NaN outside strings only", `{"a": NaN, "b": "NaN is fine", "c": -Infinity}`, true, "a b c"},
		{"array is not an object", "[1, 2]\n", false, ""},
		{"nothing", "", false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			obj, found := lastJSONObject(tc.out)
			if found != tc.found {
				t.Fatalf("found = %v, want %v", found, tc.found)
			}
			var keys []string
			for _, k := range []string{"a", "b", "c"} {
				if _, ok := obj[k]; ok {
					keys = append(keys, k)
				}
			}
			if got := strings.Join(keys, " "); got != tc.keys {
				t.Errorf("keys = %q, want %q", got, tc.keys)
			}
		})
	}
}

// checkNoneLeft fails the test when a process of the candidate (its own uid, which the
// service gives each candidate when it runs as root) outlived the evaluation.
func checkNoneLeft(t *testing.T, v *verdict) {
	t.Helper()
	if v.uid == 0 {
		t.Log("the candidate ran as the service's uid (not root): its processes cannot be told apart by uid")
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := proctest.LiveUID(v.uid)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes %v of the candidate (uid %d) outlived the evaluation", pids, v.uid)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
