package evaluator

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// TestHostileCandidates runs the corpus in testdata/hostile through the real scorer and
// sandbox, cold (a fresh interpreter per candidate) and warm (forked from a prepared one):
// each case must end failed or timed out (never ok) with its own reason, leave no process
// and no work dir, keep the service's secrets out of its result, reach neither
// the network nor files outside its work dir and private /tmp, and leave the service able
// to score a good candidate right after, on the same warm interpreter.
func TestHostileCandidates(t *testing.T) {
	for _, mode := range []string{"cold", "warm"} {
		t.Run(mode, func(t *testing.T) { testHostile(t, mode == "warm") })
	}
}

func testHostile(t *testing.T, warm bool) {
	// Secrets in the service's environment, as a deployment holds them.
	const secret = "hostile-secret-do-not-leak"
	t.Setenv("SHOAL_TEST_SECRET", secret)
	t.Setenv("OPENAI_API_KEY", secret)
	s := newScorerMode(t, 4096, warm)
	data, _, err := bundle.Pack(testdata(t, "hostile/bundle"))
	if err != nil {
		t.Fatal(err)
	}
	bundles, err := os.MkdirTemp("", "shoal-hostile-bundles-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bundle.RemoveCache(bundles) })

	// A file of the service's state dir, beside the work dirs, that no candidate may read.
	hostFile := filepath.Join(filepath.Dir(s.workRoot), "state-secret.txt")
	if err := os.WriteFile(hostFile, []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		config func(*runconfig.Evaluator)
		// timesOut marks the cases that must end at their 2 s limit; the others get a limit
		// no loaded machine reaches, so that they end with their own reason.
		timesOut bool
		// status is one of these, and the reason then holds the word of the same index.
		status []protocol.Status
		words  []string
		check  func(t *testing.T, v *verdict, bundleDir string)
	}{
		// A busy loop: the wall-clock limit, or RLIMIT_CPU when the zygote wakes late.
		{name: "infinite_loop", timesOut: true, status: []protocol.Status{protocol.StatusTimeout, protocol.StatusFailed}, words: []string{"timed out after 2s", "killed"}},
		{name: "ignores_sigterm", timesOut: true, status: []protocol.Status{protocol.StatusTimeout, protocol.StatusFailed}, words: []string{"timed out after 2s", "killed"}},
		{name: "fork_bomb", timesOut: true, status: []protocol.Status{protocol.StatusTimeout}, words: []string{"timed out after 2s"}},
		{
			name:   "memory_bomb",
			config: func(e *runconfig.Evaluator) { e.MemoryLimitMB = 256 },
			status: []protocol.Status{protocol.StatusFailed, protocol.StatusFailed}, words: []string{"MemoryError", "killed"},
		},
		{
			name:   "stdout_flood",
			status: []protocol.Status{protocol.StatusFailed}, words: []string{"output limit: more than 64 MiB written"},
			check: func(t *testing.T, v *verdict, _ string) {
				if !strings.Contains(v.Artifacts["stdout"], "output truncated") {
					t.Errorf("stdout artifact is not marked truncated: %.200q", v.Artifacts["stdout"])
				}
			},
		},
		{
			name:   "network",
			status: []protocol.Status{protocol.StatusFailed}, words: []string{"OSError: [Errno 101] Network is unreachable"},
			check: func(t *testing.T, v *verdict, _ string) {
				if !strings.Contains(v.Artifacts["traceback"], "create_connection") {
					t.Errorf("traceback artifact = %q, want the failed connect", v.Artifacts["traceback"])
				}
			},
		},
		{
			name:   "environment",
			status: []protocol.Status{protocol.StatusFailed}, words: []string{"KeyError: 'OPENAI_API_KEY'"},
			check: func(t *testing.T, v *verdict, _ string) {
				if !strings.Contains(v.Artifacts["stdout"], "PATH") {
					t.Errorf("stdout = %q, want the sandbox's environment printed", v.Artifacts["stdout"])
				}
			},
		},
		{
			name:   "write_outside",
			status: []protocol.Status{protocol.StatusFailed}, words: []string{"OSError: [Errno 30] Read-only file system: '/etc/shoal-escape'"},
			check: func(t *testing.T, v *verdict, bundleDir string) {
				tb := v.Artifacts["traceback"]
				if !strings.Contains(tb, "Read-only file system: '"+filepath.Join(bundleDir, "escape.txt")+"'") {
					t.Errorf("traceback artifact = %q, want the bundle's refusal too", tb)
				}
				if _, err := os.Stat("/tmp/shoal-escape-write-outside"); err == nil {
					os.Remove("/tmp/shoal-escape-write-outside")
					t.Error("the candidate wrote the host's /tmp")
				}
				if _, err := os.Stat(filepath.Join(bundleDir, "escape.txt")); err == nil {
					t.Error("the candidate wrote into the bundle")
				}
				if _, err := os.Stat("/etc/shoal-escape"); err == nil {
					os.Remove("/etc/shoal-escape")
					t.Error("the candidate wrote /etc")
				}
			},
		},
		{
			name:   "delete_evaluator",
			status: []protocol.Status{protocol.StatusFailed}, words: []string{"OSError: [Errno 30] Read-only file system"},
			check: func(t *testing.T, v *verdict, bundleDir string) {
				if _, err := os.Stat(filepath.Join(bundleDir, "evaluator.py")); err != nil {
					t.Errorf("the candidate removed the bundle's evaluator: %v", err)
				}
			},
		},
		{name: "background_child", status: []protocol.Status{protocol.StatusFailed}, words: []string{"left 1 background process running (killed)"}},
		{name: "segfault", status: []protocol.Status{protocol.StatusFailed}, words: []string{"killed by signal: segmentation fault"}},
		{name: "exit_midway", status: []protocol.Status{protocol.StatusFailed}, words: []string{"evaluator ended without writing its result"}},
		{name: "sleep_past_timeout", timesOut: true, status: []protocol.Status{protocol.StatusTimeout}, words: []string{"timed out after 2s"}},
		{
			name:   "huge_metrics",
			status: []protocol.Status{protocol.StatusFailed}, words: []string{"too many metrics"},
			check: func(t *testing.T, v *verdict, _ string) {
				res := &protocol.Result{Status: v.Status, Reason: v.Reason, Metrics: v.Metrics, Artifacts: v.Artifacts, CreatedAt: time.Now()}
				if _, err := protocol.Encode(res); err != nil {
					t.Errorf("result does not fit a message: %v", err)
				}
			},
		},
		{
			// Default bounds: 2 GiB of address space.
			name:   "huge_allocation",
			status: []protocol.Status{protocol.StatusFailed, protocol.StatusFailed}, words: []string{"OSError: [Errno 12] Cannot allocate memory", "killed"},
		},
		{
			// Default bounds: the work dir and /tmp are a 256 MiB tmpfs.
			name:   "disk_fill",
			status: []protocol.Status{protocol.StatusFailed}, words: []string{"OSError: [Errno 28] No space left on device"},
		},
		{
			name:   "read_host_file",
			status: []protocol.Status{protocol.StatusFailed}, words: []string{"FileNotFoundError: [Errno 2] No such file or directory: '" + hostFile + "'"},
		},
		{
			name:   "non_json",
			config: func(e *runconfig.Evaluator) { e.Command = []string{"python3", "{program}"} },
			status: []protocol.Status{protocol.StatusFailed}, words: []string{"command printed no JSON object"},
		},
	}
	if len(cases) != 18 {
		t.Fatalf("%d cases; the corpus has 18", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bundleDir := filepath.Join(bundles, tc.name)
			if err := bundle.Unpack(data, bundleDir); err != nil {
				t.Fatal(err)
			}
			code, err := os.ReadFile(filepath.Join("testdata", "hostile", tc.name+".py"))
			if err != nil {
				t.Fatal(err)
			}
			code = []byte(strings.ReplaceAll(string(code), "SHOAL_HOST_FILE", hostFile))
			cfg := runconfig.Default()
			cfg.Evaluator.Timeout = 2 * time.Second
			if !tc.timesOut {
				cfg.Evaluator.Timeout = 2 * time.Minute
			}
			if tc.config != nil {
				tc.config(&cfg.Evaluator)
			}
			start := time.Now()
			v, err := s.score(context.Background(), job{cfg: cfg, bundleDir: bundleDir, programExt: ".py", code: string(code)})
			if err != nil {
				t.Fatalf("score: %v", err)
			}
			t.Logf("%s after %v: status %s, reason %q", tc.name, time.Since(start).Round(time.Millisecond), v.Status, v.Reason)
			matched := false
			for i, st := range tc.status {
				if v.Status == st && strings.Contains(v.Reason, tc.words[i]) {
					matched = true
				}
			}
			if !matched {
				t.Errorf("status %q, reason %q; want one of %v with %q", v.Status, v.Reason, tc.status, tc.words)
			}
			for k, a := range v.Artifacts {
				if strings.Contains(a, secret) || strings.Contains(k, secret) {
					t.Errorf("artifact %s holds the service's secret", k)
				}
			}
			if strings.Contains(v.Reason, secret) {
				t.Error("reason holds the service's secret")
			}
			if tc.check != nil {
				tc.check(t, v, bundleDir)
			}
			checkNoneLeft(t, v)
			if left, _ := os.ReadDir(s.workRoot); len(left) > 0 {
				t.Errorf("work dirs left behind: %v", left)
			}

			// The service still scores a good candidate with the same bundle (and, warm, on the
			// same interpreter).
			good, err := os.ReadFile(filepath.Join("testdata", "hostile", "good.py"))
			if err != nil {
				t.Fatal(err)
			}
			cfg = runconfig.Default()
			cfg.Evaluator.Timeout = 2 * time.Minute
			g, err := s.score(context.Background(), job{cfg: cfg, bundleDir: bundleDir, programExt: ".py", code: string(good)})
			if err != nil {
				t.Fatalf("score good: %v", err)
			}
			if g.Status != protocol.StatusOK || g.Metrics["combined_score"] != 1 {
				t.Errorf("good candidate after %s: status %q, reason %q, metrics %v", tc.name, g.Status, g.Reason, g.Metrics)
			}
		})
	}
}
