// Package runconfig reads a run's config.yaml: OpenEvolve's keys, unchanged, plus a few of
// shoal's own (target_score, max_wall_time, llm.models[].backend, .concurrency and .launch,
// evaluator.file and .command).
//
// Parse starts from Default and lays the YAML over it. Nothing in the file is dropped
// without a word: a key shoal does not know comes back as a Warning with its full dotted path
// (llm.models[1].colour), and so does an OpenEvolve key that shoal accepts but does not act on.
// A value that cannot be used is an error naming the key, the value and what is allowed; all
// of them are joined into one error so that a user fixes the file in one pass.
//
// A null value (`key:` or `key: null`) means "not set": the default stays, and a model's
// unset field inherits the llm-level value.
package runconfig

import (
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Config is one run's settings. Durations are seconds in YAML.
type Config struct {
	// MaxIterations bounds the candidates a run generates.
	MaxIterations int64
	RandomSeed    int64
	// Language names the programs' language (the seed's extension says the same).
	Language string
	// DiffBasedEvolution asks models for SEARCH/REPLACE blocks; false asks for whole programs.
	DiffBasedEvolution bool
	MaxCodeLength      int
	// EarlyStoppingPatience is how many iterations without an improvement of at least
	// ConvergenceThreshold in EarlyStoppingMetric end the run; 0 turns early stopping off.
	EarlyStoppingPatience int
	ConvergenceThreshold  float64
	EarlyStoppingMetric   string
	CheckpointInterval    int
	// LogLevel is one of DEBUG, INFO, WARNING, ERROR, CRITICAL (upper case after Parse).
	LogLevel string
	// DiffPattern is OpenEvolve's regular expression for a diff block, with the SEARCH text in
	// group 1 and the REPLACE text in group 2; OpenEvolve applies it with re.DOTALL, so match
	// it in Go with a "(?s)" prefix.
	DiffPattern string

	// TargetScore ends the run when the best score reaches it; nil runs on.
	TargetScore *float64
	// MaxWallTime ends the run after this long; 0 means no limit.
	MaxWallTime time.Duration

	LLM       LLM
	Prompt    Prompt
	Database  Database
	Evaluator Evaluator
}

// LLM holds the generator models and the request settings they inherit.
type LLM struct {
	// Models write candidates, chosen in proportion to Weight, or by the improvements each
	// produces when ModelSelection is bandit.
	Models []Model
	// ModelSelection is how the planner shares tasks among Models: ModelSelectionWeights
	// (default: in proportion to Weight, each model kept busy to its concurrency) or
	// ModelSelectionBandit (discounted Thompson sampling over the gains each model's
	// candidates made over their parents, Weight as the prior; docs/search.md).
	ModelSelection string
	// BanditDiscount is what each folded result multiplies every model's bandit counts by,
	// so that old evidence fades and shares can move: the default 0.998 forgets with a
	// half-life of about 350 results. BanditFloor is the share of tasks drawn by weight
	// whatever the rewards, so that no model starves.
	BanditDiscount float64
	BanditFloor    float64
	// EvaluatorModels give feedback when Evaluator.UseLLMFeedback is on; when empty, Models
	// serve (see FeedbackModels).
	EvaluatorModels []Model

	// The values below are inherited by every model that does not set its own.
	APIBase     string
	APIKey      string
	Temperature float64
	// TopP of 0 leaves top_p to the server.
	TopP       float64
	MaxTokens  int
	Timeout    time.Duration
	Retries    int
	RetryDelay time.Duration
}

// Model is one generator of the ensemble.
type Model struct {
	Name        string
	Weight      float64
	APIBase     string
	APIKey      string
	Temperature float64
	TopP        float64
	MaxTokens   int
	Timeout     time.Duration
	Retries     int
	RetryDelay  time.Duration

	// Backend is BackendOpenAI (an OpenAI-compatible endpoint at APIBase), BackendMutate
	// (shoal's built-in mutator, no LLM) or BackendLaunch (shoal starts the model itself).
	Backend string
	// Concurrency is the number of requests in flight per generator.
	Concurrency int
	// Launch names the profile with which a generator starts the model's server on leased
	// GPUs; only a model whose Backend is BackendLaunch uses it.
	Launch Launch
}

// Launch names the model server a generator starts for a BackendLaunch model: a profile
// declared in the generator's own configuration (see Profile), never a command. A run config
// travels over the bus and is kept in the runs bucket; a command in it would run on the
// generator's host as the generator's user, outside the sandbox, for whoever can publish a
// seed. So the operator of a host declares what may run there, and a run only picks.
type Launch struct {
	// Profile is the name of a profile in the generator's configuration.
	Profile string
}

// Placeholders are the names that Profile.Command may hold in braces.
func Placeholders() []string { return []string{"port", "gpus", "n_gpus", "model", "variant"} }

// Variant is one way to serve a launched model: a model file and the GPU memory it needs.
// Memory is in MiB as plain numbers, so that reading a config does not pull in GPU discovery
// (pkg/gpu's gpu.Variant is what placement takes).
type Variant struct {
	Name string
	// ModelPath is the model the server loads ({model}); it is also the model name sent in
	// requests. Empty: the model's name.
	ModelPath string
	// NeedMiB is the memory the variant needs over all its GPUs (weights + KV cache); 0
	// asks the generator to estimate it from ModelPath for ContextLength tokens.
	NeedMiB int64
	// PerGPUOverheadMiB is added on every GPU the variant spans (CUDA context, activations).
	PerGPUOverheadMiB int64
	// GroupSizes are the GPU counts the server can split over; empty: 1, 2, 4, 8.
	GroupSizes []int
	// ContextLength sizes the KV cache when the need is estimated.
	ContextLength int
}

// Launch defaults, applied when a model's launch section is read.
const (
	DefaultHealthPath        = "/v1/models"
	DefaultStartupTimeout    = 600 * time.Second
	DefaultPerGPUOverheadMiB = 512
	DefaultContextLength     = 4096
)

// ServedName is the model name a launched server answers to: the variant's ModelPath, or
// the model's name when the variant names no file.
func (m Model) ServedName(v Variant) string {
	if v.ModelPath != "" {
		return v.ModelPath
	}
	return m.Name
}

// Backends a model can name.
const (
	BackendOpenAI = "openai"
	BackendMutate = "mutate"
	BackendLaunch = "launch"
)

// Ways the planner shares tasks among a run's models (llm.model_selection).
const (
	ModelSelectionWeights = "weights"
	ModelSelectionBandit  = "bandit"
)

// Prompt says what goes into a generation prompt.
type Prompt struct {
	// SystemMessage replaces shoal's system message when set.
	SystemMessage string
	// TemplateDir holds prompt templates; Load makes a relative one relative to the config
	// file, as OpenEvolve does.
	TemplateDir        string
	NumTopPrograms     int
	NumDiversePrograms int
	// IncludeArtifacts feeds a parent's artifacts (stderr, tracebacks, evaluator text) into
	// the prompt, cut to MaxArtifactBytes.
	IncludeArtifacts bool
	MaxArtifactBytes int
}

// Database holds the population: islands, MAP-Elites grid, selection and migration.
type Database struct {
	PopulationSize      int
	ArchiveSize         int
	NumIslands          int
	EliteSelectionRatio float64
	ExplorationRatio    float64
	ExploitationRatio   float64
	// FeatureDimensions are the grid's axes: complexity, diversity, score, or metric names.
	FeatureDimensions []string
	// FeatureBins splits every dimension not named in FeatureBinsByDimension.
	FeatureBins int
	// FeatureBinsByDimension is set when feature_bins is a mapping of dimension to bins, as
	// OpenEvolve allows.
	FeatureBinsByDimension map[string]int
	MigrationInterval      int
	MigrationRate          float64
	SimilarityThreshold    float64
	// NoveltyThreshold skips, before evaluation, a candidate whose code is at least this
	// similar (1 − code distance, docs/search.md "Novelty") to one of the programs its island
	// evaluated lately, or to its parent: 1 skips exact duplicates (after normalising
	// whitespace), lower values near ones too; 0 (the default) evaluates every candidate.
	NoveltyThreshold float64
}

// Evaluator says how candidates are scored.
type Evaluator struct {
	Timeout    time.Duration
	MaxRetries int
	// CascadeEvaluation runs evaluate_stage1..3 when the evaluator defines them; stage k+1
	// runs only if stage k's combined_score reaches CascadeThresholds[k].
	CascadeEvaluation   bool
	CascadeThresholds   []float64
	ParallelEvaluations int
	UseLLMFeedback      bool
	EnableArtifacts     bool
	// MemoryLimitMB and CPULimit bound one evaluation; 0 means the evaluator service's
	// default (2 GiB of memory unless its operator set another; no CPU limit).
	MemoryLimitMB int
	CPULimit      float64
	// WorkDirLimitMB bounds the bytes one evaluation may write to its work dir and /tmp
	// together; 0 means the evaluator service's default (256 MiB unless its operator set
	// another).
	WorkDirLimitMB int

	// File is the evaluator's entry file inside the bundle.
	File string
	// Command, when set, runs this executable instead of a Python evaluate(); "{program}" in
	// any argument is replaced by the candidate's path, and it must print one JSON object of
	// metrics.
	Command []string
}

// Default is the config of an empty file: OpenEvolve's defaults, with shoal's built-in
// mutator as the only model so that a run works without an LLM.
func Default() *Config {
	return &Config{
		MaxIterations:         10000,
		RandomSeed:            42,
		Language:              "python",
		DiffBasedEvolution:    true,
		MaxCodeLength:         10000,
		EarlyStoppingPatience: 0,
		ConvergenceThreshold:  0.001,
		EarlyStoppingMetric:   "combined_score",
		CheckpointInterval:    100,
		LogLevel:              "INFO",
		DiffPattern:           `<<<<<<< SEARCH\n(.*?)=======\n(.*?)>>>>>>> REPLACE`,
		LLM: LLM{
			Models:         []Model{{Name: "mutate", Backend: BackendMutate, Weight: 1, Concurrency: 4}},
			ModelSelection: ModelSelectionWeights,
			BanditDiscount: 0.998,
			BanditFloor:    0.1,
			APIBase:        "https://api.openai.com/v1",
			Temperature:    0.7,
			MaxTokens:      4096,
			Timeout:        60 * time.Second,
			Retries:        3,
			RetryDelay:     5 * time.Second,
		},
		Prompt: Prompt{
			NumTopPrograms:     3,
			NumDiversePrograms: 2,
			IncludeArtifacts:   true,
			MaxArtifactBytes:   20480,
		},
		Database: Database{
			PopulationSize:      1000,
			ArchiveSize:         100,
			NumIslands:          5,
			EliteSelectionRatio: 0.1,
			ExplorationRatio:    0.2,
			ExploitationRatio:   0.7,
			FeatureDimensions:   []string{"complexity", "diversity"},
			FeatureBins:         10,
			MigrationInterval:   50,
			MigrationRate:       0.1,
			SimilarityThreshold: 0.99,
		},
		Evaluator: Evaluator{
			Timeout:             300 * time.Second,
			MaxRetries:          3,
			CascadeEvaluation:   true,
			CascadeThresholds:   []float64{0.5, 0.75, 0.9},
			ParallelEvaluations: 1,
			EnableArtifacts:     true,
			File:                "evaluator.py",
		},
	}
}

// ModelByName finds a model among LLM.Models, then LLM.EvaluatorModels.
func (c *Config) ModelByName(name string) (Model, bool) {
	for _, list := range [][]Model{c.LLM.Models, c.LLM.EvaluatorModels} {
		for _, m := range list {
			if m.Name == name {
				return m, true
			}
		}
	}
	return Model{}, false
}

// FeedbackModels are the models that judge programs when Evaluator.UseLLMFeedback is on:
// EvaluatorModels, or Models when none are given (as in OpenEvolve).
func (l LLM) FeedbackModels() []Model {
	if len(l.EvaluatorModels) > 0 {
		return l.EvaluatorModels
	}
	return l.Models
}

// ResolveAPIKey returns the key to send: "${VAR}" or "$VAR" is read with getenv, any other
// value is the key itself, and an empty one falls back to OPENAI_API_KEY.
//
// A named variable that is unset gives "", not OPENAI_API_KEY: a config that points a model
// at another provider's variable must not send the OpenAI key to that provider.
func (m Model) ResolveAPIKey(getenv func(string) string) string {
	if m.APIKey == "" {
		return getenv("OPENAI_API_KEY")
	}
	if name, ok := envVarName(m.APIKey); ok {
		return getenv(name)
	}
	return m.APIKey
}

// envVarName reads "${NAME}" or "$NAME", a whole value naming one environment variable.
func envVarName(s string) (string, bool) {
	var name string
	switch {
	case strings.HasPrefix(s, "${") && strings.HasSuffix(s, "}"):
		name = s[2 : len(s)-1]
	case strings.HasPrefix(s, "$"):
		name = s[1:]
	default:
		return "", false
	}
	if name == "" || name[0] >= '0' && name[0] <= '9' {
		return "", false
	}
	for _, r := range name {
		if r != '_' && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') {
			return "", false
		}
	}
	return name, true
}

// Fitness is a program's score, higher better: its combined_score when that is a finite
// number (fromCombined true); otherwise, as OpenEvolve does, the mean of its finite metrics
// that are not feature dimensions, or of all its finite metrics when every one is a feature
// dimension, or 0 when none is finite. The result is always finite, so it can be compared
// and encoded as JSON.
func (c *Config) Fitness(metrics map[string]float64) (score float64, fromCombined bool) {
	if v, ok := metrics["combined_score"]; ok && finite(v) {
		return v, true
	}
	isFeature := make(map[string]bool, len(c.Database.FeatureDimensions))
	for _, f := range c.Database.FeatureDimensions {
		isFeature[f] = true
	}
	// Sorted, so that the sum is the same bit for bit on every call.
	names := slices.Sorted(maps.Keys(metrics))
	var fitness, all []float64
	for _, k := range names {
		v := metrics[k]
		if !finite(v) {
			continue
		}
		all = append(all, v)
		if !isFeature[k] {
			fitness = append(fitness, v)
		}
	}
	if len(fitness) == 0 {
		fitness = all
	}
	return mean(fitness), false
}

// mean divides before adding so that large values cannot overflow to Inf.
func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	n := float64(len(xs))
	var m float64
	for _, x := range xs {
		m += x / n
	}
	return m
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
