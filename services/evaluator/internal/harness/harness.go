// Package harness installs and speaks to the Python harness that runs OpenEvolve-style
// evaluators: `evaluate(program_path)` or the cascade `evaluate_stage1/2/3`, returning a dict
// or an EvaluationResult. The harness ships with a small `openevolve` package so that
// evaluators importing `openevolve.evaluation_result` run unchanged.
//
// The sandbox's zygote imports the harness (prepare) and calls it in each confined child
// (run); the report travels over a pipe, not stdout, so candidates and evaluators may print
// freely; see python/harness.py for its shape.
package harness

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

// Report is what the harness wrote to the report pipe.
type Report struct {
	Metrics   map[string]float64 `json:"metrics"`
	Artifacts map[string]string  `json:"artifacts"`
	// Stage is the last cascade stage that ran; 0 without a cascade.
	Stage int `json:"stage"`
	// Error is the last line of the evaluator's exception, with its Traceback.
	Error     string `json:"error"`
	Traceback string `json:"traceback"`
	// Elapsed is the seconds spent in evaluate() or the stages, as the evaluation measured it.
	Elapsed float64 `json:"elapsed"`
}

// ErrNoReport: the evaluation ended without writing its report.
var ErrNoReport = errors.New("no report")

// ParseReport reads the report an evaluation wrote.
func ParseReport(data []byte) (*Report, error) {
	if len(data) == 0 {
		return nil, ErrNoReport
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("read harness report: %w", err)
	}
	return &r, nil
}

// Env returns the variables the harness needs besides the sandbox's clean environment: the
// openevolve package on the evaluator's import path.
func (h *Harness) Env() []string { return []string{"PYTHONPATH=" + h.Dir} }
