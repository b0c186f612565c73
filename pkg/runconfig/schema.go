package runconfig

import (
	"math"
	"strings"

	"go.yaml.in/yaml/v3"
)

// rootSchema is every key config.yaml may hold, bound to c. The tables below are the one
// list of keys: Parse reads with them, KnownKeys and IgnoredKeys list them.
func rootSchema(c *Config) schema {
	return schema{
		fields: []field{
			{name: "max_iterations", set: intTo(&c.MaxIterations)},
			{name: "checkpoint_interval", set: intTo(&c.CheckpointInterval)},
			{name: "log_level", set: func(d *decoder, n *yaml.Node, key string) {
				if v, ok := d.string(n, key); ok {
					c.LogLevel = normalLogLevel(v)
				}
			}},
			{name: "random_seed", set: intTo(&c.RandomSeed)},
			{name: "language", set: stringTo(&c.Language)},
			{name: "diff_based_evolution", set: boolTo(&c.DiffBasedEvolution)},
			{name: "max_code_length", set: intTo(&c.MaxCodeLength)},
			{name: "diff_pattern", set: stringTo(&c.DiffPattern)},
			{name: "early_stopping_patience", set: intTo(&c.EarlyStoppingPatience)},
			{name: "convergence_threshold", set: floatTo(&c.ConvergenceThreshold)},
			{name: "early_stopping_metric", set: stringTo(&c.EarlyStoppingMetric)},
			{name: "target_score", set: func(d *decoder, n *yaml.Node, key string) {
				if v, ok := d.float(n, key); ok {
					c.TargetScore = &v
				}
			}},
			{name: "max_wall_time", set: durationTo(&c.MaxWallTime)},
			{name: "llm", set: func(d *decoder, n *yaml.Node, key string) { d.llm(&c.LLM, n, key) },
				sub: func() schema { return llmSchema(new(LLM), new(llmExtra)) }},
			{name: "prompt", set: sectionTo(func() schema { return promptSchema(&c.Prompt) }),
				sub: func() schema { return promptSchema(new(Prompt)) }},
			{name: "database", set: sectionTo(func() schema { return databaseSchema(&c.Database) }),
				sub: func() schema { return databaseSchema(new(Database)) }},
			{name: "evaluator", set: sectionTo(func() schema { return evaluatorSchema(&c.Evaluator) }),
				sub: func() schema { return evaluatorSchema(new(Evaluator)) }},
		},
		ignored: []ignored{
			{name: "log_dir"},
			{name: "file_suffix", why: "the seed program's file name gives the extension"},
			{name: "enforce_evolve_blocks", why: "shoal always keeps edits inside EVOLVE-BLOCK markers"},
			{name: "max_tasks_per_child"},
			{name: "evolution_trace"},
		},
	}
}

func sectionTo(s func() schema) setFunc {
	return func(d *decoder, n *yaml.Node, key string) {
		if d.mapping(n, key, "a mapping of keys") {
			d.section(n, key, s())
		}
	}
}

// llmExtra holds what the llm section says about models until the whole section is read:
// models inherit llm-level values that may come after them in the file.
type llmExtra struct {
	models, evaluatorModels []modelEntry
	primary, secondary      string
	primaryWeight           *float64
	secondaryWeight         *float64
}

// modelEntry is a model as the file gives it, with the keys it set.
type modelEntry struct {
	Model
	set map[string]bool
}

func llmSchema(l *LLM, x *llmExtra) schema {
	optional := func(dst **float64) setFunc {
		return func(d *decoder, n *yaml.Node, key string) {
			if v, ok := d.float(n, key); ok {
				*dst = &v
			}
		}
	}
	return schema{
		fields: []field{
			{name: "models", set: func(d *decoder, n *yaml.Node, key string) { x.models = d.models(n, key) },
				sub: func() schema { return modelSchema(new(Model)) }, list: true},
			{name: "evaluator_models", set: func(d *decoder, n *yaml.Node, key string) { x.evaluatorModels = d.models(n, key) },
				sub: func() schema { return modelSchema(new(Model)) }, list: true},
			{name: "model_selection", set: stringTo(&l.ModelSelection)},
			{name: "bandit_discount", set: floatTo(&l.BanditDiscount)},
			{name: "bandit_floor", set: floatTo(&l.BanditFloor)},
			{name: "api_base", set: stringTo(&l.APIBase)},
			{name: "api_key", set: stringTo(&l.APIKey)},
			{name: "temperature", set: floatTo(&l.Temperature)},
			{name: "top_p", set: floatTo(&l.TopP)},
			{name: "max_tokens", set: intTo(&l.MaxTokens)},
			{name: "timeout", set: durationTo(&l.Timeout)},
			{name: "retries", set: intTo(&l.Retries)},
			{name: "retry_delay", set: durationTo(&l.RetryDelay)},
			// OpenEvolve's older way to name models, still common in its examples.
			{name: "primary_model", set: stringTo(&x.primary)},
			{name: "primary_model_weight", set: optional(&x.primaryWeight)},
			{name: "secondary_model", set: stringTo(&x.secondary)},
			{name: "secondary_model_weight", set: optional(&x.secondaryWeight)},
		},
		ignored: modelIgnored(),
	}
}

func modelSchema(m *Model) schema {
	return schema{
		fields: []field{
			{name: "name", set: stringTo(&m.Name)},
			{name: "weight", set: floatTo(&m.Weight)},
			{name: "api_base", set: stringTo(&m.APIBase)},
			{name: "api_key", set: stringTo(&m.APIKey)},
			{name: "temperature", set: floatTo(&m.Temperature)},
			{name: "top_p", set: floatTo(&m.TopP)},
			{name: "max_tokens", set: intTo(&m.MaxTokens)},
			{name: "timeout", set: durationTo(&m.Timeout)},
			{name: "retries", set: intTo(&m.Retries)},
			{name: "retry_delay", set: durationTo(&m.RetryDelay)},
			{name: "backend", set: stringTo(&m.Backend)},
			{name: "concurrency", set: intTo(&m.Concurrency)},
			{name: "launch", set: func(d *decoder, n *yaml.Node, key string) { d.launch(&m.Launch, n, key) },
				sub: func() schema { return launchSchema(new(Launch)) }},
		},
		ignored: modelIgnored(),
	}
}

// launchSchema is a run config's launch section: the name of a profile. The keys of a
// profile are known here only to refuse them with the way out, since a run config must not
// say what runs on a generator's host.
func launchSchema(l *Launch) schema {
	return schema{
		fields: []field{
			{name: "profile", set: stringTo(&l.Profile)},
			{name: "command", set: func(d *decoder, _ *yaml.Node, key string) {
				d.fail(key, "a run config cannot bring a command: it would run on the generator's host as the generator's user. "+
					"Declare a profile in the generator's configuration (--profiles FILE or SHOAL_PROFILES) and name it here: launch: {profile: NAME}")
			}},
			{name: "health_path", set: inProfile},
			{name: "startup_timeout", set: inProfile},
			{name: "variants", set: inProfile},
		},
	}
}

// inProfile refuses a setting that belongs to a launch profile.
func inProfile(d *decoder, _ *yaml.Node, key string) {
	d.fail(key, "belongs in a launch profile in the generator's configuration (--profiles FILE or SHOAL_PROFILES); a run config names the profile only: launch: {profile: NAME}")
}

// variantSchema reads need_gib into gib; variants turns it into Variant.NeedMiB.
func variantSchema(v *Variant, gib *float64) schema {
	return schema{
		fields: []field{
			{name: "name", set: stringTo(&v.Name)},
			{name: "model_path", set: stringTo(&v.ModelPath)},
			{name: "need_mib", set: intTo(&v.NeedMiB)},
			{name: "need_gib", set: floatTo(gib)},
			{name: "per_gpu_overhead_mib", set: intTo(&v.PerGPUOverheadMiB)},
			{name: "group_sizes", set: intsTo(&v.GroupSizes)},
			{name: "context_length", set: intTo(&v.ContextLength)},
		},
	}
}

// launch reads a model's launch section.
func (d *decoder) launch(l *Launch, n *yaml.Node, key string) {
	*l = Launch{}
	if d.mapping(n, key, "a mapping with the profile to launch, such as {profile: vllm-qwen}") {
		d.section(n, key, launchSchema(l))
	}
}

// variants reads a list of launch variants, each over the variant defaults.
func (d *decoder) variants(n *yaml.Node, key string) []Variant {
	var out []Variant
	d.list(n, key, "a list of variants, each a mapping with a name and need_gib", func(item *yaml.Node, k string) {
		if !d.mapping(item, k, "a mapping with a name and need_gib") {
			return
		}
		v := Variant{PerGPUOverheadMiB: DefaultPerGPUOverheadMiB, ContextLength: DefaultContextLength}
		var gib float64
		set := d.section(item, k, variantSchema(&v, &gib))
		if set["need_gib"] {
			switch mib := math.Round(gib * 1024); {
			case set["need_mib"]:
				d.fail(k+".need_gib", "is set together with need_mib; set one of them")
			case !finite(gib) || gib <= 0:
				d.fail(k+".need_gib", "%s is not a positive number; want the GiB the variant needs, such as 12.5", num(gib))
			case mib >= 1<<53:
				d.fail(k+".need_gib", "%s is too large", num(gib))
			default:
				v.NeedMiB = max(int64(mib), 1)
			}
		}
		out = append(out, v)
	})
	return out
}

// modelIgnored are OpenEvolve's per-model keys (also accepted at the llm level) that shoal
// does not act on.
func modelIgnored() []ignored {
	return []ignored{
		{name: "system_message", why: "use prompt.system_message"},
		{name: "random_seed", why: "shoal seeds from the top-level random_seed"},
		{name: "reasoning_effort"},
		{name: "provider", why: "use backend"},
		{name: "manual_mode"},
		{name: "max_budget_usd"},
		{name: "max_ai_credits"},
		{name: "allow_all_tools"},
	}
}

func promptSchema(p *Prompt) schema {
	return schema{
		fields: []field{
			{name: "system_message", set: stringTo(&p.SystemMessage)},
			{name: "template_dir", set: stringTo(&p.TemplateDir)},
			{name: "num_top_programs", set: intTo(&p.NumTopPrograms)},
			{name: "num_diverse_programs", set: intTo(&p.NumDiversePrograms)},
			{name: "include_artifacts", set: boolTo(&p.IncludeArtifacts)},
			{name: "max_artifact_bytes", set: intTo(&p.MaxArtifactBytes)},
		},
		ignored: []ignored{
			{name: "evaluator_system_message"},
			{name: "island_system_messages"},
			{name: "programs_as_changes_description"},
			{name: "system_message_changes_description"},
			{name: "initial_changes_description"},
			{name: "use_template_stochasticity"},
			{name: "template_variations"},
			{name: "use_meta_prompting"},
			{name: "meta_prompt_weight"},
			{name: "artifact_security_filter"},
			{name: "suggest_simplification_after_chars"},
			{name: "include_changes_under_chars"},
			{name: "concise_implementation_max_lines"},
			{name: "comprehensive_implementation_min_lines"},
			{name: "diff_summary_max_line_len"},
			{name: "diff_summary_max_lines"},
			{name: "code_length_threshold"},
		},
	}
}

func databaseSchema(db *Database) schema {
	return schema{
		fields: []field{
			{name: "population_size", set: intTo(&db.PopulationSize)},
			{name: "archive_size", set: intTo(&db.ArchiveSize)},
			{name: "num_islands", set: intTo(&db.NumIslands)},
			{name: "elite_selection_ratio", set: floatTo(&db.EliteSelectionRatio)},
			{name: "exploration_ratio", set: floatTo(&db.ExplorationRatio)},
			{name: "exploitation_ratio", set: floatTo(&db.ExploitationRatio)},
			{name: "feature_dimensions", set: stringsTo(&db.FeatureDimensions)},
			{name: "feature_bins", set: func(d *decoder, n *yaml.Node, key string) {
				if n.Kind != yaml.MappingNode {
					intTo(&db.FeatureBins)(d, n, key)
					return
				}
				bins := make(map[string]int)
				for _, p := range d.pairs(n, key) {
					if isNull(p.val) {
						continue
					}
					var b int
					intTo(&b)(d, p.val, join(key, p.name))
					bins[p.name] = b
				}
				db.FeatureBinsByDimension = bins
			}},
			{name: "migration_interval", set: intTo(&db.MigrationInterval)},
			{name: "migration_rate", set: floatTo(&db.MigrationRate)},
			{name: "similarity_threshold", set: floatTo(&db.SimilarityThreshold)},
			{name: "novelty_threshold", set: floatTo(&db.NoveltyThreshold)},
		},
		ignored: []ignored{
			{name: "db_path", why: "shoal keeps the population in JetStream"},
			{name: "in_memory", why: "shoal keeps the population in JetStream"},
			{name: "log_prompts"},
			{name: "diversity_metric"},
			{name: "diversity_reference_size"},
			{name: "random_seed", why: "shoal seeds from the top-level random_seed"},
			{name: "artifacts_base_path"},
			{name: "artifact_size_threshold"},
			{name: "cleanup_old_artifacts"},
			{name: "artifact_retention_days"},
			{name: "max_snapshot_artifacts"},
			{name: "novelty_llm"},
			{name: "embedding_model"},
			{name: "embedding_api_base"},
		},
	}
}

func evaluatorSchema(e *Evaluator) schema {
	return schema{
		fields: []field{
			{name: "timeout", set: durationTo(&e.Timeout)},
			{name: "max_retries", set: intTo(&e.MaxRetries)},
			{name: "cascade_evaluation", set: boolTo(&e.CascadeEvaluation)},
			{name: "cascade_thresholds", set: floatsTo(&e.CascadeThresholds)},
			{name: "parallel_evaluations", set: intTo(&e.ParallelEvaluations)},
			{name: "use_llm_feedback", set: boolTo(&e.UseLLMFeedback)},
			{name: "enable_artifacts", set: boolTo(&e.EnableArtifacts)},
			{name: "memory_limit_mb", set: intTo(&e.MemoryLimitMB)},
			{name: "cpu_limit", set: floatTo(&e.CPULimit)},
			{name: "work_dir_limit_mb", set: intTo(&e.WorkDirLimitMB)},
			{name: "file", set: stringTo(&e.File)},
			{name: "command", set: stringsTo(&e.Command)},
		},
		ignored: []ignored{
			{name: "distributed", why: "shoal spreads evaluations over its evaluator hosts"},
			{name: "llm_feedback_weight"},
			{name: "max_artifact_storage"},
			{name: "evaluator_args"},
		},
	}
}

// llm reads the llm section, then completes its models: OpenEvolve's primary_model and
// secondary_model are appended, every model inherits what it does not set, and with no
// model at all the default mutate model stays.
func (d *decoder) llm(l *LLM, n *yaml.Node, key string) {
	if !d.mapping(n, key, "a mapping of keys") {
		return
	}
	var x llmExtra
	d.section(n, key, llmSchema(l, &x))

	models := x.models
	if x.primary != "" {
		w := 1.0
		if x.primaryWeight != nil && *x.primaryWeight != 0 {
			w = *x.primaryWeight
		}
		models = append(models, modelEntry{Model: Model{Name: x.primary, Weight: w, Concurrency: 4},
			set: map[string]bool{"name": true, "weight": true}})
	} else if x.primaryWeight != nil {
		d.warn(key+".primary_model_weight", "has no effect without llm.primary_model; ignored")
	}
	switch {
	case x.secondary != "" && (x.secondaryWeight == nil || *x.secondaryWeight > 0):
		w := 0.2
		if x.secondaryWeight != nil {
			w = *x.secondaryWeight
		}
		models = append(models, modelEntry{Model: Model{Name: x.secondary, Weight: w, Concurrency: 4},
			set: map[string]bool{"name": true, "weight": true}})
	case x.secondary == "" && x.secondaryWeight != nil:
		d.warn(key+".secondary_model_weight", "has no effect without llm.secondary_model; ignored")
	}

	if len(models) > 0 {
		l.Models = inherit(*l, models)
	}
	l.EvaluatorModels = inherit(*l, x.evaluatorModels)
}

// models reads a list of models; each starts from weight 1 and concurrency 4.
func (d *decoder) models(n *yaml.Node, key string) []modelEntry {
	var out []modelEntry
	d.list(n, key, "a list of models, each a mapping with a name", func(item *yaml.Node, k string) {
		if !d.mapping(item, k, "a mapping with a name") {
			return
		}
		e := modelEntry{Model: Model{Weight: 1, Concurrency: 4}}
		e.set = d.section(item, k, modelSchema(&e.Model))
		if e.Backend != BackendLaunch && e.Launch.Profile != "" {
			d.warn(k+".launch", "is used only with backend: launch; ignored")
		}
		out = append(out, e)
	})
	return out
}

// inherit fills each model's unset request settings from the llm level, and its backend.
func inherit(l LLM, entries []modelEntry) []Model {
	if entries == nil {
		return nil
	}
	out := make([]Model, len(entries))
	for i, e := range entries {
		m := e.Model
		for name, apply := range map[string]func(){
			"api_base":    func() { m.APIBase = l.APIBase },
			"api_key":     func() { m.APIKey = l.APIKey },
			"temperature": func() { m.Temperature = l.Temperature },
			"top_p":       func() { m.TopP = l.TopP },
			"max_tokens":  func() { m.MaxTokens = l.MaxTokens },
			"timeout":     func() { m.Timeout = l.Timeout },
			"retries":     func() { m.Retries = l.Retries },
			"retry_delay": func() { m.RetryDelay = l.RetryDelay },
			"backend":     func() { m.Backend = BackendOpenAI },
		} {
			if !e.set[name] {
				apply()
			}
		}
		out[i] = m
	}
	return out
}

// KnownKeys lists every key Parse acts on, as dotted paths in the order of the schema;
// "[]" marks a list's items ("llm.models[].name").
func KnownKeys() []string {
	var keys []string
	walkSchema("", rootSchema(new(Config)), func(key string, f field) {
		if f.sub == nil {
			keys = append(keys, key)
		}
	})
	return keys
}

// IgnoredKeys lists OpenEvolve's keys that Parse accepts with a warning and does not act on.
func IgnoredKeys() []string {
	var keys []string
	var walk func(path string, s schema)
	walk = func(path string, s schema) {
		for _, ig := range s.ignored {
			keys = append(keys, join(path, ig.name))
		}
		for _, f := range s.fields {
			if f.sub != nil {
				walk(subPath(path, f), f.sub())
			}
		}
	}
	walk("", rootSchema(new(Config)))
	return keys
}

func walkSchema(path string, s schema, visit func(key string, f field)) {
	for _, f := range s.fields {
		visit(join(path, f.name), f)
		if f.sub != nil {
			walkSchema(subPath(path, f), f.sub(), visit)
		}
	}
}

func subPath(path string, f field) string {
	if f.list {
		return join(path, f.name) + "[]"
	}
	return join(path, f.name)
}

// suggest names the key the user probably meant: a near spelling in the same mapping, or the
// same name in another section ("temperature" at the top level is llm.temperature).
func (d *decoder) suggest(path string, s schema, name string) string {
	best, bestDist := "", min(1+len(name)/5, 3)+1
	consider := func(candidate string) {
		if dist := editDistance(strings.ToLower(name), candidate); dist < bestDist {
			best, bestDist = candidate, dist
		}
	}
	for _, f := range s.fields {
		consider(f.name)
	}
	for _, ig := range s.ignored {
		consider(ig.name)
	}
	if best != "" {
		return " (did you mean " + join(path, best) + "?)"
	}
	if d.known == nil {
		d.known = KnownKeys()
	}
	for _, key := range d.known {
		// The shallowest match: llm.temperature rather than llm.models[].temperature.
		if strings.HasSuffix(key, "."+name) && (best == "" || strings.Count(key, ".") < strings.Count(best, ".")) {
			best = key
		}
	}
	if best != "" {
		return " (did you mean " + best + "?)"
	}
	return ""
}

// editDistance is the optimal string alignment distance: insertions, deletions,
// substitutions and swaps of neighbours each cost 1, so "modles" is 1 from "models".
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
