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
// each case must end in a clear verdict, leave no process and no work dir, reach neither
// the network nor files outside its work dir and private /tmp, and leave the service able
// to score a good candidate right after, on the same warm interpreter.
func TestHostileCandidates(t *testing.T) {
	for _, mode := range []string{"cold", "warm"} {
		t.Run(mode, func(t *testing.T) { testHostile(t, mode == "warm") })
	}
}

func testHostile(t *testing.T, warm bool) {
	const secret = "hostile-secret-do-not-leak"
	t.Setenv("SHOAL_TEST_SECRET", secret)
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

	cases := []struct {
		name   string
		config func(*runconfig.Evaluator)
		// status is one of these; reason contains one of words.
		status []protocol.Status
		words  []string
		check  func(t *testing.T, v *verdict, bundleDir string)
	}{
		{name: "infinite_loop", status: []protocol.Status{protocol.StatusTimeout, protocol.StatusFailed}, words: []string{"timed out", "killed"}},
		{name: "ignores_sigterm", status: []protocol.Status{protocol.StatusTimeout, protocol.StatusFailed}, words: []string{"timed out", "killed"}},
		{name: "fork_bomb", status: []protocol.Status{protocol.StatusTimeout}, words: []string{"timed out"}},
		{
			name:   "memory_bomb",
			config: func(e *runconfig.Evaluator) { e.MemoryLimitMB = 256 },
			status: []protocol.Status{protocol.StatusFailed}, words: []string{"MemoryError", "killed"},
		},
		{
			// 1 GiB may or may not get through in the time: either way the capture is capped.
			name:   "stdout_flood",
			status: []protocol.Status{protocol.StatusTimeout, protocol.StatusOK}, words: []string{"timed out", ""},
			check: func(t *testing.T, v *verdict, _ string) {
				if v.Status == protocol.StatusOK && !strings.Contains(v.Artifacts["stdout"], "output truncated") {
					t.Errorf("stdout artifact is not marked truncated: %.200q", v.Artifacts["stdout"])
				}
			},
		},
		{
			name:   "network",
			status: []protocol.Status{protocol.StatusOK}, words: []string{""},
			check: func(t *testing.T, v *verdict, _ string) {
				if got := v.Artifacts["network"]; got == "" || got == "connected" {
					t.Errorf("network connect: %q, want a refusal", got)
				}
			},
		},
		{
			name:   "environment",
			status: []protocol.Status{protocol.StatusOK}, words: []string{""},
			check: func(t *testing.T, v *verdict, _ string) {
				if !strings.Contains(v.Artifacts["env"], "PATH") {
					t.Errorf("env artifact = %q, want the sandbox's environment", v.Artifacts["env"])
				}
			},
		},
		{
			name:   "write_outside",
			status: []protocol.Status{protocol.StatusOK}, words: []string{""},
			check: func(t *testing.T, v *verdict, bundleDir string) {
				p := v.Artifacts["tmp_path"]
				if !strings.HasPrefix(p, "/tmp/shoal-escape-") {
					t.Fatalf("tmp_path = %q", p)
				}
				if v.Artifacts["tmp_write"] != "written" {
					t.Errorf("tmp_write = %q, want the private /tmp writable", v.Artifacts["tmp_write"])
				}
				if _, err := os.Stat(p); err == nil {
					os.Remove(p)
					t.Errorf("the candidate wrote the host's %s", p)
				}
				if _, err := os.Stat(filepath.Join(bundleDir, "escape.txt")); err == nil {
					t.Errorf("the candidate wrote into the bundle: %s", v.Artifacts["bundle_write"])
				}
				for _, k := range []string{"bundle_write", "etc_write"} {
					if v.Artifacts[k] == "written" {
						t.Errorf("%s = written, want a refusal", k)
					}
				}
			},
		},
		{
			name:   "delete_evaluator",
			status: []protocol.Status{protocol.StatusOK}, words: []string{""},
			check: func(t *testing.T, v *verdict, bundleDir string) {
				if _, err := os.Stat(filepath.Join(bundleDir, "evaluator.py")); err != nil {
					t.Errorf("the candidate removed the bundle's evaluator: %s", v.Artifacts["delete"])
				}
			},
		},
		{name: "background_child", status: []protocol.Status{protocol.StatusOK}, words: []string{""}},
		{name: "segfault", status: []protocol.Status{protocol.StatusFailed}, words: []string{"segmentation"}},
		{name: "exit_midway", status: []protocol.Status{protocol.StatusFailed}, words: []string{"without writing its result"}},
		{name: "sleep_past_timeout", status: []protocol.Status{protocol.StatusTimeout}, words: []string{"timed out after 2s"}},
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
			name:   "non_json",
			config: func(e *runconfig.Evaluator) { e.Command = []string{"python3", "{program}"} },
			status: []protocol.Status{protocol.StatusFailed}, words: []string{"no JSON object"},
		},
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
			cfg := runconfig.Default()
			cfg.Evaluator.Timeout = 2 * time.Second
			if tc.config != nil {
				tc.config(&cfg.Evaluator)
			}
			start := time.Now()
			v, err := s.score(context.Background(), job{cfg: cfg, bundleDir: bundleDir, programExt: ".py", code: string(code)})
			if err != nil {
				t.Fatalf("score: %v", err)
			}
			t.Logf("%s after %v: status %s, reason %q", tc.name, time.Since(start).Round(time.Millisecond), v.Status, v.Reason)
			okStatus, okReason := false, false
			for i, st := range tc.status {
				if v.Status == st {
					okStatus = true
					okReason = strings.Contains(v.Reason, tc.words[min(i, len(tc.words)-1)])
				}
			}
			if !okStatus || !okReason {
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
			cfg.Evaluator.Timeout = 10 * time.Second
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
