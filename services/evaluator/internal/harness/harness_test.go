package harness

import (
	"errors"
	"os"
	"path/filepath"
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

func TestParseReport(t *testing.T) {
	cases := []struct {
		name, body string
		ok         bool
	}{
		{"whole", `{"metrics": {"a": 1}, "artifacts": {"x": "y"}, "stage": 2, "elapsed": 0.5}`, true},
		{"garbled", `{"metrics": {"a": `, false},
		{"metrics not numbers", `{"metrics": {"a": "high"}}`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseReport([]byte(tc.body))
			if (err == nil) != tc.ok {
				t.Fatalf("ParseReport = %+v, %v; want ok %v", r, err, tc.ok)
			}
		})
	}
	if _, err := ParseReport(nil); !errors.Is(err, ErrNoReport) {
		t.Errorf("empty report: err %v, want ErrNoReport", err)
	}
}
