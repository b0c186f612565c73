// Package harness installs and speaks to the Python harness that runs OpenEvolve-style
// evaluators: `evaluate(program_path)` or the cascade `evaluate_stage1/2/3`, returning a dict
// or an EvaluationResult. The harness ships with a small `openevolve` package so that
// evaluators importing `openevolve.evaluation_result` run unchanged.
//
// The harness reports through a file, not stdout, so candidates and evaluators may print
// freely; see python/harness.py for the file's shape.
package harness

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

//go:embed python/harness.py python/openevolve/__init__.py python/openevolve/evaluation_result.py
var files embed.FS

// Harness is an installed copy of the harness.
type Harness struct {
	// Dir holds harness.py and the openevolve package; it belongs on PYTHONPATH.
	Dir string
}

// Install writes the harness into cacheDir once per version of its files and returns it.
// Replicas sharing cacheDir may install concurrently: each writes a private copy and renames
// it into place, and the loser uses the winner's.
func Install(cacheDir string) (*Harness, error) {
	sum := sha256.New()
	err := fs.WalkDir(files, "python", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := files.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(sum, "%s\x00%d\x00", path, len(data))
		sum.Write(data)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("install harness: %w", err)
	}
	dir := filepath.Join(cacheDir, "harness-"+hex.EncodeToString(sum.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(dir, "harness.py")); err == nil {
		return &Harness{Dir: dir}, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("install harness: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".harness-")
	if err != nil {
		return nil, fmt.Errorf("install harness: %w", err)
	}
	if err := writeFiles(tmp); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("install harness: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, statErr := os.Stat(filepath.Join(dir, "harness.py")); statErr == nil {
			return &Harness{Dir: dir}, nil
		}
		return nil, fmt.Errorf("install harness: %w", err)
	}
	return &Harness{Dir: dir}, nil
}

// writeFiles copies the embedded files under dir, read-only, as bundles are.
func writeFiles(dir string) error {
	return fs.WalkDir(files, "python", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("python", path)
		target := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := files.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o444)
	})
}

// Invocation is one run of the harness.
type Invocation struct {
	// Evaluator is the evaluator's Python file; its directory goes first on sys.path.
	Evaluator string
	// Program is the candidate's file, passed to evaluate(program_path).
	Program string
	// Out is where the harness writes its Report.
	Out string
	// Cascade runs evaluate_stage1/2/3 when the evaluator defines evaluate_stage1.
	Cascade    bool
	Thresholds []float64
}

// Args returns the argv that runs the invocation with the given Python interpreter.
func (h *Harness) Args(python string, inv Invocation) []string {
	args := []string{python, filepath.Join(h.Dir, "harness.py"), "--evaluator", inv.Evaluator, "--program", inv.Program, "--out", inv.Out}
	if inv.Cascade {
		ts := make([]string, len(inv.Thresholds))
		for i, t := range inv.Thresholds {
			ts[i] = strconv.FormatFloat(t, 'g', -1, 64)
		}
		args = append(args, "--cascade", "--thresholds", strings.Join(ts, ","))
	}
	return args
}

// Env returns the variables the harness needs besides the sandbox's clean environment.
func (h *Harness) Env() []string { return []string{"PYTHONPATH=" + h.Dir} }

// Report is what the harness wrote.
type Report struct {
	Metrics   map[string]float64 `json:"metrics"`
	Artifacts map[string]string  `json:"artifacts"`
	// Stage is the last cascade stage that ran; 0 without a cascade.
	Stage int `json:"stage"`
	// Error is the last line of the evaluator's exception, with its Traceback.
	Error     string `json:"error"`
	Traceback string `json:"traceback"`
}

// MaxReportBytes bounds the report file read back; artifacts are capped later anyway.
const MaxReportBytes = 16 << 20

// ReadReport reads the harness' report file.
func ReadReport(path string) (*Report, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read harness report: %w", err)
	}
	if info.Size() > MaxReportBytes {
		return nil, fmt.Errorf("read harness report: %d bytes > %d", info.Size(), MaxReportBytes)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read harness report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("read harness report: %w", err)
	}
	return &r, nil
}
