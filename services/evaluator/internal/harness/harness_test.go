package harness

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestInstall(t *testing.T) {
	cache := t.TempDir()
	// Replicas sharing a cache dir install at once; all end up with the same copy.
	dirs := make([]string, 4)
	var wg sync.WaitGroup
	for i := range dirs {
		wg.Go(func() {
			h, err := Install(cache)
			if err != nil {
				t.Error(err)
				return
			}
			dirs[i] = h.Dir
		})
	}
	wg.Wait()
	for _, d := range dirs[1:] {
		if d != dirs[0] {
			t.Errorf("installed in %s and %s, want one dir", dirs[0], d)
		}
	}
	for _, f := range []string{"harness.py", "openevolve/__init__.py", "openevolve/evaluation_result.py"} {
		if _, err := os.Stat(filepath.Join(dirs[0], f)); err != nil {
			t.Errorf("installed harness lacks %s: %v", f, err)
		}
	}
	entries, _ := os.ReadDir(cache)
	if len(entries) != 1 {
		t.Errorf("cache holds %d entries, want 1 (no leftover temp dirs)", len(entries))
	}
}

func TestArgs(t *testing.T) {
	h := &Harness{Dir: "/h"}
	cases := []struct {
		inv  Invocation
		want string
	}{
		{Invocation{Evaluator: "/b/e.py", Program: "/w/p.py", Out: "/w/o"}, "py /h/harness.py --evaluator /b/e.py --program /w/p.py --out /w/o"},
		{Invocation{Evaluator: "/b/e.py", Program: "/w/p.py", Out: "/w/o", Cascade: true, Thresholds: []float64{0.5, 0.75, 1}},
			"py /h/harness.py --evaluator /b/e.py --program /w/p.py --out /w/o --cascade --thresholds 0.5,0.75,1"},
	}
	for _, tc := range cases {
		if got := strings.Join(h.Args("py", tc.inv), " "); got != tc.want {
			t.Errorf("args = %q, want %q", got, tc.want)
		}
	}
}

func TestReadReport(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, body string
		ok         bool
	}{
		{"whole", `{"metrics": {"a": 1}, "artifacts": {"x": "y"}, "stage": 2}`, true},
		{"garbled", `{"metrics": {"a": `, false},
		{"metrics not numbers", `{"metrics": {"a": "high"}}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if err := os.WriteFile(path, []byte(tc.body), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := ReadReport(path)
			if (err == nil) != tc.ok {
				t.Fatalf("ReadReport = %+v, %v; want ok %v", r, err, tc.ok)
			}
		})
	}
	if _, err := ReadReport(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing report: err %v, want fs.ErrNotExist", err)
	}
}
