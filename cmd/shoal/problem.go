package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/shoal-run/shoal/examples"
	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/program"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/services/planner"
)

// problem is what a run is seeded with: config, evaluator directory and seed program, in
// OpenEvolve's layout (config.yaml, evaluator.py, initial_program.py).
type problem struct {
	configText  []byte
	configPath  string // where configText was read; prompt.template_dir is relative to it
	evaluator   string // path of the evaluator's entry file
	program     string // path of the seed program
	programText []byte
}

// problemFiles locates a problem from a directory (OpenEvolve's layout) and explicit paths;
// explicit paths win. With neither, the embedded default example is written under stateDir.
func problemFiles(dir, config, evaluator, program, stateDir string) (*problem, error) {
	if dir == "" && config == "" && evaluator == "" && program == "" {
		d, err := extractExample(examples.Default, stateDir)
		if err != nil {
			return nil, err
		}
		dir = d
	}
	if dir != "" {
		config = firstNonEmpty(config, optional(filepath.Join(dir, "config.yaml")))
		evaluator = firstNonEmpty(evaluator, filepath.Join(dir, "evaluator.py"))
		program = firstNonEmpty(program, filepath.Join(dir, "initial_program.py"))
	}
	if evaluator == "" || program == "" {
		return nil, errors.New("name the problem: a directory holding evaluator.py and initial_program.py, or --evaluator and --program (and --config)")
	}
	p := &problem{evaluator: evaluator, program: program, configPath: config}
	var err error
	if config != "" {
		if p.configText, err = os.ReadFile(config); err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
	}
	if p.programText, err = os.ReadFile(program); err != nil {
		return nil, fmt.Errorf("read program: %w", err)
	}
	if _, err := os.Stat(evaluator); err != nil {
		return nil, fmt.Errorf("evaluator: %w", err)
	}
	return p, nil
}

func optional(path string) string {
	if _, err := os.Stat(path); err != nil {
		return ""
	}
	return path
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func extractExample(name, stateDir string) (string, error) {
	src, err := examples.Problem(name)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(stateDir, "examples", name)
	err = fs.WalkDir(src, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(src, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		return "", fmt.Errorf("write example %s: %w", name, err)
	}
	return dir, nil
}

// overrides are command-line changes to a run's config.
type overrides struct {
	backend       string // "mutate": replace the config's models with the mutate backend
	maxIterations int64  // > 0: replace max_iterations
	evaluatorFile string // the evaluator's file name inside its bundle
}

// applyOverrides rewrites the config's YAML with the overrides. Comments are lost; the result
// is what the run is seeded with.
func applyOverrides(text []byte, o overrides) ([]byte, error) {
	doc := map[string]any{}
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if doc == nil {
		doc = map[string]any{}
	}
	section := func(key string) map[string]any {
		m, ok := doc[key].(map[string]any)
		if !ok {
			m = map[string]any{}
			doc[key] = m
		}
		return m
	}
	switch o.backend {
	case "":
	case "mutate":
		section("llm")["models"] = []any{map[string]any{"name": "mutate", "backend": "mutate", "concurrency": 4}}
	default:
		return nil, fmt.Errorf("--backend %q: only \"mutate\" may override the config's models", o.backend)
	}
	if o.maxIterations > 0 {
		doc["max_iterations"] = o.maxIterations
	}
	if o.evaluatorFile != "" && o.evaluatorFile != "evaluator.py" {
		section("evaluator")["file"] = o.evaluatorFile
	}
	return yaml.Marshal(doc)
}

var nonRunChars = regexp.MustCompile(`[^a-z0-9-]+`)

// runIDFor derives a run id from a name such as the problem's directory.
func runIDFor(name string) string {
	id := strings.Trim(nonRunChars.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if len(id) > 64 {
		id = id[:64]
	}
	if id == "" {
		id = "run"
	}
	return id
}

// seedOptions say how a problem is seeded.
type seedOptions struct {
	overrides
	// checkProfiles refuses a launched model whose profile is not in profiles: `shoal up`
	// knows what its own generator may launch.
	checkProfiles bool
	profiles      runconfig.Profiles
	// exclude are paths never packed into the evaluator's bundle, absolute or relative to
	// it: shoal's state dir and the --output dir, wherever the problem is.
	exclude []string
	// wait bounds the wait for the archive to take the seed; 0 is defaultSeedWait.
	wait time.Duration
}

// defaultSeedWait is how long `shoal seed` and `shoal up` wait for the archive to take a
// seed: it answers in milliseconds when it runs, so this is for one that is starting.
const defaultSeedWait = 30 * time.Second

// seedRun seeds a new run with the default options; see seedProblem.
func seedRun(ctx context.Context, c *client, run string, p *problem, o overrides, warn func(string)) (*runconfig.Config, error) {
	return seedProblem(ctx, c, run, p, seedOptions{overrides: o}, warn)
}

// seedProblem validates the config and the program, stores the evaluator's bundle, publishes
// the seed of run and waits until the archive has taken it. It returns the parsed config so
// the caller can follow the run. Everything that can be refused here is, before anything is
// published: a config with a command or a literal key, an empty or non-UTF-8 program, an
// unknown launch profile, a bundle over its limit.
func seedProblem(ctx context.Context, c *client, run string, p *problem, o seedOptions, warn func(string)) (*runconfig.Config, error) {
	if err := protocol.ValidateRunID(run); err != nil {
		return nil, err
	}
	if err := program.CheckText(p.programText); err != nil {
		return nil, fmt.Errorf("%s: %w", p.program, err)
	}
	o.evaluatorFile = filepath.Base(p.evaluator)
	text, err := applyOverrides(p.configText, o.overrides)
	if err != nil {
		return nil, err
	}
	cfg, warnings, err := runconfig.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	for _, w := range warnings {
		warn("config: " + w.String())
	}
	if o.checkProfiles {
		if err := o.profiles.Check(cfg); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	evalDir := filepath.Dir(p.evaluator)
	exclude := append([]string{"config.yaml"}, o.exclude...)
	if rel, err := filepath.Rel(evalDir, p.program); err == nil && !strings.HasPrefix(rel, "..") {
		exclude = append(exclude, rel)
	}
	data, digest, err := bundle.PackWith(evalDir, bundle.Options{Exclude: exclude})
	if err != nil {
		return nil, err
	}
	store, err := c.js.ObjectStore(ctx, c.names.BundlesStore())
	if err != nil {
		return nil, fmt.Errorf("bundles store: %w", err)
	}
	if err := bundle.Put(ctx, store, digest, data); err != nil {
		return nil, err
	}
	templates, err := readTemplates(cfg, p, warn)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	for _, part := range []string{cfg.Digest(), digest, string(p.programText), run} {
		h.Write([]byte(part))
	}
	for _, name := range slices.Sorted(maps.Keys(templates)) {
		h.Write([]byte(name + "\x00" + templates[name]))
	}
	sum := h.Sum(nil)
	seed := &protocol.Seed{
		Meta:         protocol.Meta{ID: "seed-" + hex.EncodeToString(sum[:8]), Run: run},
		Config:       string(text),
		BundleDigest: digest,
		Program:      string(p.programText),
		ProgramName:  filepath.Base(p.program),
		CreatedAt:    time.Now().UTC(),
		Templates:    templates,
	}
	if err := publishSeed(ctx, c, seed, o.wait); err != nil {
		return nil, err
	}
	return cfg, nil
}

// readTemplates reads the config's prompt.template_dir (relative to the config file, as in
// OpenEvolve) so that the templates travel with the run's seed: planners on other hosts never
// see this directory. A template the planner cannot render stops the seed here.
func readTemplates(cfg *runconfig.Config, p *problem, warn func(string)) (map[string]string, error) {
	dir := cfg.Prompt.TemplateDir
	if dir == "" {
		return nil, nil
	}
	if !filepath.IsAbs(dir) && p.configPath != "" {
		dir = filepath.Join(filepath.Dir(p.configPath), dir)
	}
	templates, warnings, err := planner.LoadTemplates(dir)
	for _, w := range warnings {
		warn(w)
	}
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return templates, nil
}

// upSeedOptions are the seed options of `shoal up`: its generator's launch profiles are
// checked when it runs one, and its state dir and --output never go into a bundle.
func upSeedOptions(o upOptions, services []string) (seedOptions, error) {
	so := seedOptions{overrides: overrides{backend: o.backend, maxIterations: o.iterations}}
	for _, dir := range []string{o.stateDir, o.output} {
		if dir == "" {
			continue
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return so, err
		}
		so.exclude = append(so.exclude, abs)
	}
	if !slices.Contains(services, "generator") {
		return so, nil
	}
	so.checkProfiles = true
	if o.profiles != "" {
		ps, _, err := runconfig.LoadProfiles(o.profiles)
		if err != nil {
			return so, fmt.Errorf("--profiles: %w", err)
		}
		so.profiles = ps
	}
	return so, nil
}
