package runconfig

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Validate checks every value and returns all the problems at once, joined; each is a
// *FieldError naming the YAML key, and errors.Is(err, ErrInvalid) holds.
func (c *Config) Validate() error {
	problems := c.problems()
	if len(problems) == 0 {
		return nil
	}
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = p
	}
	return errors.Join(errs...)
}

func (c *Config) problems() []*FieldError {
	v := &validator{}
	v.atLeast("max_iterations", c.MaxIterations, 0)
	v.atLeast("checkpoint_interval", int64(c.CheckpointInterval), 1)
	switch normalLogLevel(c.LogLevel) {
	case "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL":
	default:
		v.add("log_level", "%q is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL", c.LogLevel)
	}
	v.nonEmpty("language", c.Language, "a language such as python")
	v.atLeast("max_code_length", int64(c.MaxCodeLength), 1)
	v.diffPattern(c.DiffPattern)
	v.atLeast("early_stopping_patience", int64(c.EarlyStoppingPatience), 0)
	v.atLeastFloat("convergence_threshold", c.ConvergenceThreshold, 0)
	v.nonEmpty("early_stopping_metric", c.EarlyStoppingMetric, "a metric name such as combined_score")
	if c.TargetScore != nil {
		v.finite("target_score", *c.TargetScore)
	}
	if c.MaxWallTime < 0 {
		v.add("max_wall_time", "%s is negative; want 0 (no limit) or more", c.MaxWallTime)
	}

	l := c.LLM
	v.request("llm", l.request(), nothing())
	v.apiKey("llm.api_key", l.APIKey)
	if len(l.Models) == 0 {
		v.add("llm.models", "is empty; want at least one model")
	}
	v.models("llm.models", l.Models, l)
	switch l.ModelSelection {
	case ModelSelectionWeights, ModelSelectionBandit:
	default:
		v.add("llm.model_selection", "%q is not one of %s (by weight), %s (by the improvements each model makes)",
			l.ModelSelection, ModelSelectionWeights, ModelSelectionBandit)
	}
	if v.finite("llm.bandit_discount", l.BanditDiscount) && (l.BanditDiscount <= 0 || l.BanditDiscount > 1) {
		v.add("llm.bandit_discount", "%s is not in (0, 1]; want a factor such as 0.99 (1 never forgets)", num(l.BanditDiscount))
	}
	if v.finite("llm.bandit_floor", l.BanditFloor) && (l.BanditFloor < 0 || l.BanditFloor >= 1) {
		v.add("llm.bandit_floor", "%s is not in [0, 1); want the least share of tasks every model keeps, such as 0.1", num(l.BanditFloor))
	}
	v.models("llm.evaluator_models", l.EvaluatorModels, l)

	p := c.Prompt
	v.atLeast("prompt.num_top_programs", int64(p.NumTopPrograms), 0)
	v.atLeast("prompt.num_diverse_programs", int64(p.NumDiversePrograms), 0)
	v.atLeast("prompt.max_artifact_bytes", int64(p.MaxArtifactBytes), 0)

	db := c.Database
	v.atLeast("database.population_size", int64(db.PopulationSize), 1)
	v.atLeast("database.archive_size", int64(db.ArchiveSize), 1)
	v.atLeast("database.num_islands", int64(db.NumIslands), 1)
	v.ratio("database.elite_selection_ratio", db.EliteSelectionRatio)
	explore := v.ratio("database.exploration_ratio", db.ExplorationRatio)
	exploit := v.ratio("database.exploitation_ratio", db.ExploitationRatio)
	if explore && exploit && db.ExplorationRatio+db.ExploitationRatio > 1+1e-9 {
		v.add("database.exploration_ratio + database.exploitation_ratio",
			"%s + %s is more than 1; the rest of the parents are picked by fitness, so the two may add up to 1 at most",
			num(db.ExplorationRatio), num(db.ExploitationRatio))
	}
	v.featureDimensions(db.FeatureDimensions)
	v.atLeast("database.feature_bins", int64(db.FeatureBins), 1)
	for _, dim := range slices.Sorted(maps.Keys(db.FeatureBinsByDimension)) {
		v.atLeast("database.feature_bins."+dim, int64(db.FeatureBinsByDimension[dim]), 1)
	}
	v.atLeast("database.migration_interval", int64(db.MigrationInterval), 1)
	v.ratio("database.migration_rate", db.MigrationRate)
	v.ratio("database.similarity_threshold", db.SimilarityThreshold)
	v.ratio("database.novelty_threshold", db.NoveltyThreshold)

	e := c.Evaluator
	v.positive("evaluator.timeout", e.Timeout)
	v.atLeast("evaluator.max_retries", int64(e.MaxRetries), 0)
	for i, t := range e.CascadeThresholds {
		key := fmt.Sprintf("evaluator.cascade_thresholds[%d]", i)
		if v.finite(key, t) && i > 0 && finite(e.CascadeThresholds[i-1]) && t < e.CascadeThresholds[i-1] {
			v.add(key, "%s is below the threshold before it, %s; thresholds must not decrease", num(t), num(e.CascadeThresholds[i-1]))
		}
	}
	v.atLeast("evaluator.parallel_evaluations", int64(e.ParallelEvaluations), 1)
	v.atLeast("evaluator.memory_limit_mb", int64(e.MemoryLimitMB), 0)
	v.atLeastFloat("evaluator.cpu_limit", e.CPULimit, 0)
	v.atLeast("evaluator.work_dir_limit_mb", int64(e.WorkDirLimitMB), 0)
	if !filepath.IsLocal(e.File) {
		v.add("evaluator.file", "%q is not a relative path inside the bundle", e.File)
	}
	if e.Command != nil && len(e.Command) == 0 {
		v.add("evaluator.command", "is an empty list; want the executable and its arguments, such as [./score, \"{program}\"]")
	}
	for i, arg := range e.Command {
		if arg == "" {
			v.add(fmt.Sprintf("evaluator.command[%d]", i), "is empty")
		}
	}
	return v.problems
}

// validator collects problems in the order they are found.
type validator struct {
	problems []*FieldError
}

func (v *validator) add(key, format string, args ...any) {
	v.problems = append(v.problems, &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) atLeast(key string, got, least int64) {
	if got < least {
		v.add(key, "%d is less than the minimum, %d", got, least)
	}
}

// finite reports whether f is a usable number, and adds a problem when it is not.
func (v *validator) finite(key string, f float64) bool {
	if !finite(f) {
		v.add(key, "%s is not a finite number", num(f))
		return false
	}
	return true
}

func (v *validator) atLeastFloat(key string, got, least float64) {
	if v.finite(key, got) && got < least {
		v.add(key, "%s is less than the minimum, %s", num(got), num(least))
	}
}

func (v *validator) within(key string, got, lo, hi float64) bool {
	if !v.finite(key, got) {
		return false
	}
	if got < lo || got > hi {
		v.add(key, "%s is outside [%s, %s]", num(got), num(lo), num(hi))
		return false
	}
	return true
}

func (v *validator) ratio(key string, got float64) bool { return v.within(key, got, 0, 1) }

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.add(key, "%s is not more than 0; want a number of seconds above 0", d)
	}
}

func (v *validator) nonEmpty(key, got, want string) {
	if strings.TrimSpace(got) == "" {
		v.add(key, "is empty; want %s", want)
	}
}

// request checks the settings of requests to a model. For a model, skip names the settings
// equal to the llm level's, which were checked there: an inherited bad value is reported once,
// where the user wrote it.
func (v *validator) request(path string, r, skip request) {
	if r.temperature != skip.temperature {
		v.within(path+".temperature", r.temperature, 0, 2)
	}
	if r.topP != skip.topP {
		v.within(path+".top_p", r.topP, 0, 1)
	}
	if r.maxTokens != skip.maxTokens {
		v.atLeast(path+".max_tokens", int64(r.maxTokens), 1)
	}
	if r.timeout != skip.timeout {
		v.positive(path+".timeout", r.timeout)
	}
	if r.retries != skip.retries {
		v.atLeast(path+".retries", int64(r.retries), 0)
	}
	if r.retryDelay != skip.retryDelay && r.retryDelay < 0 {
		v.add(path+".retry_delay", "%s is negative; want 0 or more seconds", r.retryDelay)
	}
}

// request holds the settings shared by LLM and Model.
type request struct {
	temperature, topP float64
	maxTokens         int
	timeout           time.Duration
	retries           int
	retryDelay        time.Duration
}

// nothing matches no request: NaN differs from every float, so every setting is checked.
func nothing() request {
	return request{temperature: math.NaN(), topP: math.NaN(), maxTokens: -1, timeout: -1, retries: -1, retryDelay: -1}
}

func (l LLM) request() request {
	return request{l.Temperature, l.TopP, l.MaxTokens, l.Timeout, l.Retries, l.RetryDelay}
}

func (m Model) request() request {
	return request{m.Temperature, m.TopP, m.MaxTokens, m.Timeout, m.Retries, m.RetryDelay}
}

func (v *validator) models(path string, models []Model, l LLM) {
	first := make(map[string]int, len(models))
	for i, m := range models {
		key := fmt.Sprintf("%s[%d]", path, i)
		switch j, dup := first[m.Name]; {
		case strings.TrimSpace(m.Name) == "":
			v.add(key+".name", "is empty; every model needs a name")
		case dup:
			v.add(key+".name", "%q is also the name of %s[%d]; names must be unique", m.Name, path, j)
		default:
			first[m.Name] = i
		}
		if m.APIKey != l.APIKey { // an inherited key is reported once, at llm.api_key
			v.apiKey(key+".api_key", m.APIKey)
		}
		if v.finite(key+".weight", m.Weight) && m.Weight <= 0 {
			v.add(key+".weight", "%s is not more than 0; want a positive weight", num(m.Weight))
		}
		switch m.Backend {
		case BackendOpenAI:
			// The built-in mutator sends no requests; the others need usable request settings.
			v.request(key, m.request(), l.request())
		case BackendLaunch:
			v.request(key, m.request(), l.request())
			v.profileName(key+".launch.profile", m.Launch.Profile)
		case BackendMutate:
		default:
			v.add(key+".backend", "%q is not one of %s, %s, %s", m.Backend, BackendOpenAI, BackendMutate, BackendLaunch)
		}
		v.atLeast(key+".concurrency", int64(m.Concurrency), 1)
	}
}

// profileName checks the name of the launch profile a model asks for; whether a generator
// declares it is for the generator (or the seeding side that knows its profiles) to say.
func (v *validator) profileName(key, name string) {
	switch {
	case strings.TrimSpace(name) == "":
		v.add(key, "is not set; backend launch names a model-server profile from the generator's configuration, such as launch: {profile: vllm-qwen}")
	case !validProfileName(name):
		v.add(key, "%q is not a profile name; want letters, digits, '.', '_' or '-'", name)
	}
}

// validProfileName: a profile is named like a model or a file, nothing a shell would read.
func validProfileName(name string) bool {
	if name == "" || len(name) > 128 {
		return false
	}
	for _, r := range name {
		if r != '.' && r != '_' && r != '-' && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// apiKey refuses a key written into the config: a run config travels over the bus and is
// kept in the runs bucket, where every reader of the bus would see it. The message never
// repeats the value.
func (v *validator) apiKey(key, value string) {
	if value == "" {
		return
	}
	if _, ok := envVarName(value); ok {
		return
	}
	v.add(key, "holds a literal key; a run config travels over the bus and is stored in the runs bucket, so it must not hold secrets. "+
		"Write a reference such as \"${OPENAI_API_KEY}\" and set that variable in the generator's environment")
}

// profile checks what a generator needs to start a model's server: a command that listens on
// {port}, and variants whose memory need is declared or can be estimated.
func (v *validator) profile(key string, l Profile) {
	switch {
	case len(l.Command) == 0:
		v.add(key+".command", `is not set; a profile needs the server's command, such as [vllm, serve, "{model}", --port, "{port}"]`)
	case !slices.ContainsFunc(l.Command, func(arg string) bool { return strings.Contains(arg, "{port}") }):
		v.add(key+".command", "does not use {port}; the server must listen on the port the generator picks for it")
	}
	known := Placeholders()
	for i, arg := range l.Command {
		ak := fmt.Sprintf("%s.command[%d]", key, i)
		if i == 0 && strings.TrimSpace(arg) == "" {
			v.add(ak, "is empty; want the server's executable")
		}
		for _, name := range placeholdersIn(arg) {
			if !slices.Contains(known, name) {
				v.add(ak, "%q holds {%s}, which is not one of {port}, {gpus}, {n_gpus}, {model}, {variant}", arg, name)
			}
		}
	}
	if !strings.HasPrefix(l.HealthPath, "/") {
		v.add(key+".health_path", "%q does not start with /; want a path such as %s", l.HealthPath, DefaultHealthPath)
	}
	v.positive(key+".startup_timeout", l.StartupTimeout)
	for _, name := range slices.Sorted(maps.Keys(l.Env)) {
		switch _, ok := envVarName("$" + name); {
		case !ok:
			v.add(key+".env."+name, "is not an environment variable name; want letters, digits and '_', not starting with a digit")
		case name == "CUDA_VISIBLE_DEVICES":
			v.add(key+".env."+name, "is set by the generator to the leased GPUs; leave it out")
		}
	}
	if len(l.Variants) == 0 {
		v.add(key+".variants", "is empty; a profile needs at least one variant, such as {name: q8, need_gib: 12}")
	}
	first := make(map[string]int, len(l.Variants))
	for i, vr := range l.Variants {
		vk := fmt.Sprintf("%s.variants[%d]", key, i)
		switch j, dup := first[vr.Name]; {
		case strings.TrimSpace(vr.Name) == "":
			v.add(vk+".name", "is empty; every variant needs a name, such as q8")
		case dup:
			v.add(vk+".name", "%q is also the name of %s.variants[%d]; names must be unique", vr.Name, key, j)
		default:
			first[vr.Name] = i
		}
		switch {
		case vr.NeedMiB < 0:
			v.add(vk+".need_mib", "%d is negative; want the MiB the variant needs", vr.NeedMiB)
		case vr.NeedMiB == 0 && vr.ModelPath == "":
			v.add(vk+".need_gib", "is not set; declare the GPU memory the variant needs (need_gib or need_mib), or give model_path to estimate it from")
		}
		v.atLeast(vk+".per_gpu_overhead_mib", int64(vr.PerGPUOverheadMiB), 0)
		for j, n := range vr.GroupSizes {
			v.atLeast(fmt.Sprintf("%s.group_sizes[%d]", vk, j), int64(n), 1)
		}
		v.atLeast(vk+".context_length", int64(vr.ContextLength), 1)
	}
}

// placeholdersIn lists the names in braces in arg that look like placeholders: {port}, not
// the braces of a JSON argument such as '{"tp": 2}'.
func placeholdersIn(arg string) []string {
	var names []string
	for {
		i := strings.IndexByte(arg, '{')
		if i < 0 {
			return names
		}
		arg = arg[i+1:]
		j := strings.IndexByte(arg, '}')
		if j < 0 {
			return names
		}
		if name := arg[:j]; name != "" && strings.Trim(name, "abcdefghijklmnopqrstuvwxyz_") == "" {
			names = append(names, name)
			arg = arg[j+1:]
		}
	}
}

// diffPattern checks that OpenEvolve's diff regex compiles in Go (RE2, as with re.DOTALL) and
// has the two groups, SEARCH and REPLACE, that it is read with.
func (v *validator) diffPattern(pattern string) {
	re, err := regexp.Compile("(?s)" + pattern)
	if err != nil {
		v.add("diff_pattern", "%q does not compile as a Go (RE2) regular expression: %v", pattern, err)
		return
	}
	if re.NumSubexp() < 2 {
		v.add("diff_pattern", "%q has %d groups; want 2, the SEARCH text and the REPLACE text", pattern, re.NumSubexp())
	}
}

func (v *validator) featureDimensions(dims []string) {
	if len(dims) == 0 {
		v.add("database.feature_dimensions", "is empty; want at least one, such as complexity")
	}
	seen := make(map[string]bool, len(dims))
	for i, dim := range dims {
		key := fmt.Sprintf("database.feature_dimensions[%d]", i)
		switch {
		case strings.TrimSpace(dim) == "":
			v.add(key, "is empty; want complexity, diversity, score or a metric name")
		case seen[dim]:
			v.add(key, "%q is listed twice", dim)
		}
		seen[dim] = true
	}
}

// normalLogLevel spells a Python logging level as Python's logging module names it.
func normalLogLevel(s string) string {
	switch s = strings.ToUpper(strings.TrimSpace(s)); s {
	case "WARN":
		return "WARNING"
	case "FATAL":
		return "CRITICAL"
	}
	return s
}

// num writes a float the way a user would type it.
func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
