package runconfig

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// openEvolveConfig is laid out like the config.yaml files of OpenEvolve's examples, with
// every key of its documented sections.
const openEvolveConfig = `# Configuration for the function minimization example
max_iterations: 100
checkpoint_interval: 10
log_level: "INFO"
random_seed: 42
language: "python"
diff_based_evolution: true
max_code_length: 10000
diff_pattern: "<<<<<<< SEARCH\\n(.*?)=======\\n(.*?)>>>>>>> REPLACE"
early_stopping_patience: null
convergence_threshold: 0.001
early_stopping_metric: "combined_score"

# LLM configuration
llm:
  models:
    - name: "gpt-4o-mini"
      weight: 0.8
    - name: "gpt-4o"
      weight: 0.2
      temperature: 0.4
      max_tokens: 8192
  evaluator_models:
    - name: "gpt-4o-mini"
  api_base: "https://api.openai.com/v1"
  api_key: "${OPENAI_API_KEY}"
  temperature: 0.7
  top_p: 0.95
  max_tokens: 4096
  timeout: 60
  retries: 3
  retry_delay: 5

# Prompt configuration
prompt:
  system_message: "You are an expert programmer specializing in optimization algorithms."
  template_dir: null
  num_top_programs: 3
  num_diverse_programs: 2
  include_artifacts: true
  max_artifact_bytes: 20480

# Database configuration
database:
  population_size: 500
  archive_size: 100
  num_islands: 4
  elite_selection_ratio: 0.1
  exploration_ratio: 0.2
  exploitation_ratio: 0.7
  feature_dimensions: ["complexity", "diversity"]
  feature_bins: 10
  migration_interval: 50
  migration_rate: 0.1
  similarity_threshold: 0.99

# Evaluator configuration
evaluator:
  timeout: 60
  max_retries: 3
  memory_limit_mb: null
  cpu_limit: null
  cascade_evaluation: true
  cascade_thresholds: [0.5, 0.75]
  parallel_evaluations: 4
  use_llm_feedback: false
  enable_artifacts: true
`

func TestParseOpenEvolveConfig(t *testing.T) {
	got, warnings, err := Parse([]byte(openEvolveConfig))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %v, want none", warnings)
	}

	openai := func(name string, weight float64) Model {
		return Model{
			Name: name, Weight: weight, APIBase: "https://api.openai.com/v1", APIKey: "${OPENAI_API_KEY}",
			Temperature: 0.7, TopP: 0.95, MaxTokens: 4096, Timeout: time.Minute, Retries: 3,
			RetryDelay: 5 * time.Second, Backend: BackendOpenAI, Concurrency: 4,
		}
	}
	want := Default()
	want.MaxIterations = 100
	want.CheckpointInterval = 10
	mini, full := openai("gpt-4o-mini", 0.8), openai("gpt-4o", 0.2)
	full.Temperature, full.MaxTokens = 0.4, 8192
	want.LLM = LLM{
		Models:          []Model{mini, full},
		EvaluatorModels: []Model{openai("gpt-4o-mini", 1)},
		APIBase:         "https://api.openai.com/v1", APIKey: "${OPENAI_API_KEY}",
		Temperature: 0.7, TopP: 0.95, MaxTokens: 4096, Timeout: time.Minute, Retries: 3, RetryDelay: 5 * time.Second,
		ModelSelection: ModelSelectionWeights, BanditDiscount: 0.998, BanditFloor: 0.1,
	}
	want.Prompt.SystemMessage = "You are an expert programmer specializing in optimization algorithms."
	want.Database.PopulationSize = 500
	want.Database.NumIslands = 4
	want.Evaluator.Timeout = time.Minute
	want.Evaluator.CascadeThresholds = []float64{0.5, 0.75}
	want.Evaluator.ParallelEvaluations = 4

	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse:\ngot  %+v\nwant %+v", got, want)
	}
}

// TestParseOpenEvolveExtras: keys of OpenEvolve that shoal does not act on are accepted,
// each with a warning that says so, and never an error.
func TestParseOpenEvolveExtras(t *testing.T) {
	in := `
log_dir: logs
llm:
  primary_model: gemini-2.0-flash
  primary_model_weight: 0.8
  secondary_model: gemini-2.0-pro
  secondary_model_weight: 0.2
  reasoning_effort: high
prompt:
  use_template_stochasticity: true
  template_variations: {greeting: [a, b]}
database:
  in_memory: true
  db_path: ./db
  random_seed: 7
evaluator:
  distributed: false
evolution_trace:
  enabled: true
`
	c, warnings, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	wantKeys := []string{"log_dir", "llm.reasoning_effort", "prompt.use_template_stochasticity",
		"prompt.template_variations", "database.in_memory", "database.db_path", "database.random_seed",
		"evaluator.distributed", "evolution_trace"}
	if got := warningKeys(warnings); !reflect.DeepEqual(got, wantKeys) {
		t.Errorf("warning keys = %q, want %q", got, wantKeys)
	}
	for _, w := range warnings {
		if !strings.Contains(w.Message, "OpenEvolve setting that shoal does not use") {
			t.Errorf("warning %q does not say it is an OpenEvolve setting shoal ignores", w)
		}
	}
	gotModels := [][2]any{}
	for _, m := range c.LLM.Models {
		gotModels = append(gotModels, [2]any{m.Name, m.Weight})
	}
	wantModels := [][2]any{{"gemini-2.0-flash", 0.8}, {"gemini-2.0-pro", 0.2}}
	if !reflect.DeepEqual(gotModels, wantModels) {
		t.Errorf("models from primary_model/secondary_model = %v, want %v", gotModels, wantModels)
	}
}

func TestParsePrimaryModel(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // name:weight
	}{
		{"primary only", "llm: {primary_model: a}", []string{"a:1"}},
		{"primary weight 0 means 1", "llm: {primary_model: a, primary_model_weight: 0}", []string{"a:1"}},
		{"secondary default weight", "llm: {primary_model: a, secondary_model: b}", []string{"a:1", "b:0.2"}},
		{"secondary weight 0 drops it", "llm: {primary_model: a, secondary_model: b, secondary_model_weight: 0}", []string{"a:1"}},
		{"after models", "llm: {models: [{name: m}], primary_model: a}", []string{"m:1", "a:1"}},
		{"neither", "llm: {temperature: 0.1}", []string{"mutate:1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var got []string
			for _, m := range c.LLM.Models {
				got = append(got, m.Name+":"+num(m.Weight))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("models = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseUnknownKeys(t *testing.T) {
	in := `
max_iteration: 5
modles: []
extra: {nested: 1}
llm:
  modles: []
  model: gpt-4o
  models:
    - name: a
    - name: b
      colour: red
  evaluator_models:
    - {name: c, wieght: 2}
prompt: {sytem_message: hi}
database: {foo: 1, population_size: 10}
evaluator: {timout: 5, command: [./score]}
temperature: 0.3
`
	_, warnings, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []string{
		"max_iteration: unknown key, ignored (did you mean max_iterations?)",
		"modles: unknown key, ignored",
		"extra: unknown key, ignored",
		"llm.modles: unknown key, ignored (did you mean llm.models?)",
		"llm.model: unknown key, ignored (did you mean llm.models?)",
		"llm.models[1].colour: unknown key, ignored",
		"llm.evaluator_models[0].wieght: unknown key, ignored (did you mean llm.evaluator_models[0].weight?)",
		"prompt.sytem_message: unknown key, ignored (did you mean prompt.system_message?)",
		"database.foo: unknown key, ignored",
		"evaluator.timout: unknown key, ignored (did you mean evaluator.timeout?)",
		"temperature: unknown key, ignored (did you mean llm.temperature?)",
	}
	var got []string
	for _, w := range warnings {
		got = append(got, w.String())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("warnings:\ngot  %q\nwant %q", got, want)
	}
}

func TestParseDuplicateKey(t *testing.T) {
	c, warnings, err := Parse([]byte("max_iterations: 5\nmax_iterations: 7\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if c.MaxIterations != 7 {
		t.Errorf("MaxIterations = %d, want 7 (the last, as PyYAML)", c.MaxIterations)
	}
	want := []Warning{{Key: "max_iterations", Message: "set twice (lines 1 and 2); the last is used"}}
	if !reflect.DeepEqual(warnings, want) {
		t.Errorf("warnings = %v, want %v", warnings, want)
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"negative iterations", "max_iterations: -1", "max_iterations: -1 is less than the minimum, 0"},
		{"iterations not a number", "max_iterations: many", `max_iterations: "many" is not a whole number`},
		{"fractional int", "database: {num_islands: 2.5}", "database.num_islands: 2.5 is not a whole number"},
		{"int too large", "max_iterations: 1e300", "max_iterations: 1e300 is too large"},
		{"ratio above 1", "database: {exploration_ratio: 1.5}", "database.exploration_ratio: 1.5 is outside [0, 1]"},
		{"ratio below 0", "database: {elite_selection_ratio: -0.1}", "database.elite_selection_ratio: -0.1 is outside [0, 1]"},
		{"ratios add past 1", "database: {exploration_ratio: 0.5, exploitation_ratio: 0.7}",
			"database.exploration_ratio + database.exploitation_ratio: 0.5 + 0.7 is more than 1; the rest of the parents are picked by fitness, so the two may add up to 1 at most"},
		{"ratio not a number", "database: {migration_rate: lots}", `database.migration_rate: "lots" is not a number`},
		{"ratio NaN", "database: {similarity_threshold: .nan}", "database.similarity_threshold: NaN is not a finite number"},
		{"timeout not seconds", "evaluator: {timeout: abc}", `evaluator.timeout: "abc" is not a number of seconds`},
		{"timeout negative", "evaluator: {timeout: -5}", "evaluator.timeout: -5s is not more than 0; want a number of seconds above 0"},
		{"timeout infinite", "evaluator: {timeout: .inf}", "evaluator.timeout: .inf is not a usable number of seconds"},
		{"llm timeout zero", "llm: {timeout: 0, models: [{name: a}]}", "llm.timeout: 0s is not more than 0; want a number of seconds above 0"},
		{"model timeout", "llm: {models: [{name: a, timeout: 0}]}", "llm.models[0].timeout: 0s is not more than 0; want a number of seconds above 0"},
		{"temperature", "llm: {temperature: 3}", "llm.temperature: 3 is outside [0, 2]"},
		{"top_p", "llm: {models: [{name: a, top_p: 1.5}]}", "llm.models[0].top_p: 1.5 is outside [0, 1]"},
		{"max_tokens", "llm: {max_tokens: 0}", "llm.max_tokens: 0 is less than the minimum, 1"},
		{"retry_delay", "llm: {retry_delay: -1}", "llm.retry_delay: -1s is negative; want 0 or more seconds"},
		{"weight zero", "llm: {models: [{name: a, weight: 0}]}", "llm.models[0].weight: 0 is not more than 0; want a positive weight"},
		{"weight negative", "llm: {models: [{name: a}, {name: b, weight: -1}]}", "llm.models[1].weight: -1 is not more than 0; want a positive weight"},
		{"name missing", "llm: {models: [{weight: 1}]}", "llm.models[0].name: is empty; every model needs a name"},
		{"name repeated", "llm: {models: [{name: a}, {name: a}]}", `llm.models[1].name: "a" is also the name of llm.models[0]; names must be unique`},
		{"backend", "llm: {models: [{name: a, backend: ollama}]}", `llm.models[0].backend: "ollama" is not one of openai, mutate, launch`},
		{"concurrency", "llm: {models: [{name: a, concurrency: 0}]}", "llm.models[0].concurrency: 0 is less than the minimum, 1"},
		{"evaluator model", "llm: {evaluator_models: [{name: a, backend: x}]}", `llm.evaluator_models[0].backend: "x" is not one of openai, mutate, launch`},
		{"models a mapping", "llm: {models: {name: a}}", "llm.models: got a mapping, want a list of models, each a mapping with a name"},
		{"model a string", "llm: {models: [gpt-4o]}", `llm.models[0]: got the string "gpt-4o", want a mapping with a name`},
		{"model null", "llm: {models: [null]}", "llm.models[0]: is null, want a value"},
		{"section not a mapping", "llm: 5", "llm: got the number 5, want a mapping of keys"},
		{"cascade order", "evaluator: {cascade_thresholds: [0.5, 0.9, 0.75]}",
			"evaluator.cascade_thresholds[2]: 0.75 is below the threshold before it, 0.9; thresholds must not decrease"},
		{"cascade not numbers", "evaluator: {cascade_thresholds: [0.5, high]}", `evaluator.cascade_thresholds[1]: "high" is not a number`},
		{"feature_bins", "database: {feature_bins: 0}", "database.feature_bins: 0 is less than the minimum, 1"},
		{"model_selection", "llm: {model_selection: ucb}", `llm.model_selection: "ucb" is not one of weights (by weight), bandit (by the improvements each model makes)`},
		{"bandit_discount zero", "llm: {bandit_discount: 0}", "llm.bandit_discount: 0 is not in (0, 1]; want a factor such as 0.99 (1 never forgets)"},
		{"bandit_discount above 1", "llm: {bandit_discount: 1.5}", "llm.bandit_discount: 1.5 is not in (0, 1]; want a factor such as 0.99 (1 never forgets)"},
		{"bandit_floor 1", "llm: {bandit_floor: 1}", "llm.bandit_floor: 1 is not in [0, 1); want the least share of tasks every model keeps, such as 0.1"},
		{"bandit_floor NaN", "llm: {bandit_floor: .nan}", "llm.bandit_floor: NaN is not a finite number"},
		{"novelty_threshold", "database: {novelty_threshold: 1.2}", "database.novelty_threshold: 1.2 is outside [0, 1]"},
		{"feature_bins per dimension", "database: {feature_bins: {complexity: 0}}", "database.feature_bins.complexity: 0 is less than the minimum, 1"},
		{"feature_dimensions empty", "database: {feature_dimensions: []}", "database.feature_dimensions: is empty; want at least one, such as complexity"},
		{"feature_dimensions repeated", "database: {feature_dimensions: [score, score]}", `database.feature_dimensions[1]: "score" is listed twice`},
		{"num_islands", "database: {num_islands: 0}", "database.num_islands: 0 is less than the minimum, 1"},
		{"population", "database: {population_size: 0}", "database.population_size: 0 is less than the minimum, 1"},
		{"language", `language: ""`, "language: is empty; want a language such as python"},
		{"log_level", "log_level: LOUD", `log_level: "LOUD" is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL`},
		{"diff_pattern", `diff_pattern: "(unclosed"`, "diff_pattern: \"(unclosed\" does not compile as a Go (RE2) regular expression: error parsing regexp: missing closing ): `(?s)(unclosed`"},
		{"diff_pattern groups", `diff_pattern: "SEARCH(.*)"`, `diff_pattern: "SEARCH(.*)" has 1 groups; want 2, the SEARCH text and the REPLACE text`},
		{"checkpoint_interval", "checkpoint_interval: 0", "checkpoint_interval: 0 is less than the minimum, 1"},
		{"patience", "early_stopping_patience: -2", "early_stopping_patience: -2 is less than the minimum, 0"},
		{"target_score", "target_score: .nan", "target_score: NaN is not a finite number"},
		{"max_wall_time", "max_wall_time: -1", "max_wall_time: -1s is negative; want 0 (no limit) or more"},
		{"bool", "prompt: {include_artifacts: maybe}", `prompt.include_artifacts: "maybe" is not true or false`},
		{"bool from number", "diff_based_evolution: 1", "diff_based_evolution: 1 is not true or false"},
		{"string from list", "llm: {api_key: [a]}", "llm.api_key: got a list, want a string"},
		{"artifact bytes", "prompt: {max_artifact_bytes: -1}", "prompt.max_artifact_bytes: -1 is less than the minimum, 0"},
		{"command empty list", "evaluator: {command: []}", `evaluator.command: is an empty list; want the executable and its arguments, such as [./score, "{program}"]`},
		{"command empty arg", `evaluator: {command: [./score, ""]}`, "evaluator.command[1]: is empty"},
		{"command a string", `evaluator: {command: "./score {program}"}`, `evaluator.command: got the string "./score {program}", want a list of strings`},
		{"file outside bundle", "evaluator: {file: ../evaluator.py}", `evaluator.file: "../evaluator.py" is not a relative path inside the bundle`},
		{"file absolute", "evaluator: {file: /etc/passwd}", `evaluator.file: "/etc/passwd" is not a relative path inside the bundle`},
		{"memory", "evaluator: {memory_limit_mb: -1}", "evaluator.memory_limit_mb: -1 is less than the minimum, 0"},
		{"work dir", "evaluator: {work_dir_limit_mb: -5}", "evaluator.work_dir_limit_mb: -5 is less than the minimum, 0"},
		{"cpu", "evaluator: {cpu_limit: -0.5}", "evaluator.cpu_limit: -0.5 is less than the minimum, 0"},
		{"parallel", "evaluator: {parallel_evaluations: 0}", "evaluator.parallel_evaluations: 0 is less than the minimum, 1"},
		{"merge of a string", "llm: {<<: x}", "llm.<<: got the string \"x\", want a mapping or a list of mappings to merge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error %q", tt.in, c, tt.want)
			}
			if c != nil {
				t.Errorf("Parse returned a config with an error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\ngot  %s\nwant %s", got, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false, want true")
			}
		})
	}
}

// TestParseAllErrors: every problem comes back at once, unknown keys as warnings beside them.
func TestParseAllErrors(t *testing.T) {
	in := `
max_iterations: -1
colour: blue
llm:
  models:
    - {name: a, weight: 0}
database:
  exploration_ratio: 1.5
  num_islands: zero
evaluator:
  timeout: abc
`
	_, warnings, err := Parse([]byte(in))
	if err == nil {
		t.Fatal("Parse: no error, want four")
	}
	wantErrs := []string{
		"database.num_islands: \"zero\" is not a whole number",
		"evaluator.timeout: \"abc\" is not a number of seconds",
		"max_iterations: -1 is less than the minimum, 0",
		"llm.models[0].weight: 0 is not more than 0; want a positive weight",
		"database.exploration_ratio: 1.5 is outside [0, 1]",
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, wantErrs) {
		t.Errorf("errors:\ngot  %q\nwant %q", got, wantErrs)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Key != "database.num_islands" {
		t.Errorf("errors.As FieldError = %v, want the one for database.num_islands", fe)
	}
	if got, want := warningKeys(warnings), []string{"colour"}; !reflect.DeepEqual(got, want) {
		t.Errorf("warning keys = %q, want %q", got, want)
	}
}

func TestParseInheritance(t *testing.T) {
	// The llm-level values come after the models on purpose: order in the file must not matter.
	in := `
llm:
  models:
    - name: local
      api_base: http://gpu-1:8000/v1
      api_key: ${LOCAL_KEY}
      temperature: 0
      top_p: 0.5
      max_tokens: 1024
      timeout: 600
      retries: 0
      retry_delay: 0
      backend: launch
      concurrency: 16
      launch:
        profile: llama-q8
    - name: gpt-4o
    - name: built-in
      backend: mutate
  evaluator_models:
    - name: judge
      timeout: 30
  api_base: https://openrouter.ai/api/v1
  api_key: ${OPENROUTER_API_KEY}
  temperature: 0.9
  top_p: 0.8
  max_tokens: 2048
  timeout: 120
  retries: 5
  retry_delay: 2.5
`
	c, _, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	inherited := Model{
		APIBase: "https://openrouter.ai/api/v1", APIKey: "${OPENROUTER_API_KEY}", Temperature: 0.9, TopP: 0.8,
		MaxTokens: 2048, Timeout: 2 * time.Minute, Retries: 5, RetryDelay: 2500 * time.Millisecond,
		Weight: 1, Backend: BackendOpenAI, Concurrency: 4,
	}
	local := Model{
		Name: "local", Weight: 1, APIBase: "http://gpu-1:8000/v1", APIKey: "${LOCAL_KEY}", Temperature: 0, TopP: 0.5,
		MaxTokens: 1024, Timeout: 10 * time.Minute, Retries: 0, RetryDelay: 0, Backend: BackendLaunch, Concurrency: 16,
		Launch: Launch{Profile: "llama-q8"},
	}
	gpt := inherited
	gpt.Name = "gpt-4o"
	builtIn := inherited
	builtIn.Name, builtIn.Backend = "built-in", BackendMutate
	judge := inherited
	judge.Name, judge.Timeout = "judge", 30*time.Second

	tests := []struct {
		name string
		got  Model
		want Model
	}{
		{"all set", c.LLM.Models[0], local},
		{"none set", c.LLM.Models[1], gpt},
		{"backend set", c.LLM.Models[2], builtIn},
		{"evaluator model", c.LLM.EvaluatorModels[0], judge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("model:\ngot  %+v\nwant %+v", tt.got, tt.want)
			}
		})
	}
}

func TestParseEmptyIsDefault(t *testing.T) {
	for _, in := range []string{"", "\n\n", "# nothing yet\n", "---\n", "~", "null", "llm:", "llm: {}",
		"llm: {models: []}", "llm: {models: null}", "early_stopping_patience: null", "target_score: ~",
		"database: {feature_dimensions: null}"} {
		t.Run(in, func(t *testing.T) {
			got, warnings, err := Parse([]byte(in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(warnings) != 0 {
				t.Errorf("warnings = %v, want none", warnings)
			}
			if want := Default(); !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(%q):\ngot  %+v\nwant %+v", in, got, want)
			}
		})
	}
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Errorf("Default().Validate() = %v, want nil", err)
	}
	m := Default().LLM.Models
	want := []Model{{Name: "mutate", Backend: BackendMutate, Weight: 1, Concurrency: 4}}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("default models = %+v, want %+v", m, want)
	}
}

func TestParseValues(t *testing.T) {
	tests := []struct {
		name string
		in   string
		get  func(*Config) any
		want any
	}{
		{"seconds int", "evaluator: {timeout: 60}", func(c *Config) any { return c.Evaluator.Timeout }, time.Minute},
		{"seconds float", "evaluator: {timeout: 0.5}", func(c *Config) any { return c.Evaluator.Timeout }, 500 * time.Millisecond},
		{"seconds quoted", `evaluator: {timeout: "60"}`, func(c *Config) any { return c.Evaluator.Timeout }, time.Minute},
		{"go duration", `evaluator: {timeout: 90s}`, func(c *Config) any { return c.Evaluator.Timeout }, 90 * time.Second},
		{"go duration minutes", `max_wall_time: 2m`, func(c *Config) any { return c.MaxWallTime }, 2 * time.Minute},
		{"wall time seconds", `max_wall_time: 3600`, func(c *Config) any { return c.MaxWallTime }, time.Hour},
		{"target score", `target_score: 0.95`, func(c *Config) any { return *c.TargetScore }, 0.95},
		{"yaml 1.1 yes", `diff_based_evolution: no`, func(c *Config) any { return c.DiffBasedEvolution }, false},
		{"yaml 1.1 on", `evaluator: {use_llm_feedback: on}`, func(c *Config) any { return c.Evaluator.UseLLMFeedback }, true},
		{"int from float", `max_iterations: 1000.0`, func(c *Config) any { return c.MaxIterations }, int64(1000)},
		{"int from exponent", `max_iterations: 1e3`, func(c *Config) any { return c.MaxIterations }, int64(1000)},
		{"float from int", `database: {migration_rate: 1}`, func(c *Config) any { return c.Database.MigrationRate }, 1.0},
		{"log level lower", `log_level: debug`, func(c *Config) any { return c.LogLevel }, "DEBUG"},
		{"log level warn", `log_level: warn`, func(c *Config) any { return c.LogLevel }, "WARNING"},
		{"string keeps zeros", `llm: {models: [{name: 0123}]}`, func(c *Config) any { return c.LLM.Models[0].Name }, "0123"},
		{"feature bins per dimension", `database: {feature_dimensions: [complexity, score], feature_bins: {score: 20}}`,
			func(c *Config) any { return c.Database.FeatureBinsByDimension }, map[string]int{"score": 20}},
		{"command", `evaluator: {command: [./score, --in, "{program}"]}`,
			func(c *Config) any { return c.Evaluator.Command }, []string{"./score", "--in", "{program}"}},
		{"evaluator file", `evaluator: {file: eval/main.py}`, func(c *Config) any { return c.Evaluator.File }, "eval/main.py"},
		{"model selection default", ``, func(c *Config) any { return c.LLM.ModelSelection }, ModelSelectionWeights},
		{"model selection bandit", `llm: {model_selection: bandit, bandit_discount: 0.99, bandit_floor: 0.2}`,
			func(c *Config) any { return [3]any{c.LLM.ModelSelection, c.LLM.BanditDiscount, c.LLM.BanditFloor} }, [3]any{"bandit", 0.99, 0.2}},
		{"novelty off by default", ``, func(c *Config) any { return c.Database.NoveltyThreshold }, 0.0},
		{"novelty threshold", `database: {novelty_threshold: 1}`, func(c *Config) any { return c.Database.NoveltyThreshold }, 1.0},
		{"feature dimensions", `database: {feature_dimensions: [score, speed]}`,
			func(c *Config) any { return c.Database.FeatureDimensions }, []string{"score", "speed"}},
		{"anchor and merge", `
llm:
  models:
    - &base {name: a, api_base: "http://h:8000/v1", temperature: 0.2}
    - <<: *base
      name: b
`, func(c *Config) any { return [2]Model{c.LLM.Models[0], c.LLM.Models[1]} }, func() any {
			a := Model{Name: "a", Weight: 1, APIBase: "http://h:8000/v1", Temperature: 0.2, MaxTokens: 4096,
				Timeout: time.Minute, Retries: 3, RetryDelay: 5 * time.Second, Backend: BackendOpenAI, Concurrency: 4}
			b := a
			b.Name = "b"
			return [2]Model{a, b}
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, warnings, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(warnings) != 0 {
				t.Errorf("warnings = %v, want none", warnings)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseWarnsUnusedFeatureBins(t *testing.T) {
	_, warnings, err := Parse([]byte("database: {feature_bins: {speed: 4}}"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []Warning{{Key: "database.feature_bins.speed", Message: `"speed" is not one of database.feature_dimensions; ignored`}}
	if !reflect.DeepEqual(warnings, want) {
		t.Errorf("warnings = %v, want %v", warnings, want)
	}
}

func TestParseSyntaxErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"bad indentation", "max_iterations: 5\nllm:\n  models: [\n", "line 3"},
		{"tab", "llm:\n\tmodels: []\n", "line 2"},
		{"two documents", "max_iterations: 1\n---\nmax_iterations: 2\n", "line 2: a second document"},
		{"a list", "- a\n- b\n", "the file holds a list"},
		{"a string", "hello", `the file holds the string "hello"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) error = %v, want one containing %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestParseAliasBomb(t *testing.T) {
	// Each level merges the one below twice: 2^40 entries if expanded naively.
	var b strings.Builder
	b.WriteString("a0: &a0 {x: 1}\n")
	for i := 1; i <= 40; i++ {
		prev := "*a" + num(float64(i-1))
		b.WriteString("a" + num(float64(i)) + ": &a" + num(float64(i)) + " {<<: [" + prev + ", " + prev + "]}\n")
	}
	b.WriteString("llm:\n  models:\n")
	for range 2000 {
		b.WriteString("    - {<<: *a40, name: m}\n")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Parse([]byte(b.String()))
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Parse of an alias bomb did not return in 20s")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("ok", func(t *testing.T) {
		p := write("ok.yaml", "max_iterations: 3\nprompt: {template_dir: templates}\ncolour: red\n")
		c, warnings, err := Load(p)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		if c.MaxIterations != 3 {
			t.Errorf("MaxIterations = %d, want 3", c.MaxIterations)
		}
		if want := filepath.Join(dir, "templates"); c.Prompt.TemplateDir != want {
			t.Errorf("TemplateDir = %q, want %q (relative to the config file)", c.Prompt.TemplateDir, want)
		}
		if got := warningKeys(warnings); !reflect.DeepEqual(got, []string{"colour"}) {
			t.Errorf("warning keys = %q, want [colour]", got)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		p := write("bad.yaml", "max_iterations: -1\nlanguage: ''\n")
		_, _, err := Load(p)
		want := p + ": max_iterations: -1 is less than the minimum, 0\n" + p + ": language: is empty; want a language such as python"
		if err == nil || err.Error() != want {
			t.Errorf("Load error:\ngot  %v\nwant %s", err, want)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("errors.Is(err, ErrInvalid) = false, want true")
		}
	})
	t.Run("syntax", func(t *testing.T) {
		p := write("syntax.yaml", "a: [\n")
		_, _, err := Load(p)
		if err == nil || !strings.HasPrefix(err.Error(), p+": yaml: line 1") {
			t.Errorf("Load error = %v, want one starting %q", err, p+": yaml: line 1")
		}
	})
	t.Run("missing", func(t *testing.T) {
		p := filepath.Join(dir, "missing.yaml")
		_, _, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), p) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Load error = %v, want a not-exist error naming %s", err, p)
		}
	})
}

// TestKnownKeys: every listed key is read without a warning, and every ignored key is warned
// about as OpenEvolve's; both lists are built from the tables Parse reads with.
func TestKnownKeys(t *testing.T) {
	known := KnownKeys()
	seen := map[string]bool{}
	for _, key := range known {
		if seen[key] {
			t.Errorf("KnownKeys lists %q twice", key)
		}
		seen[key] = true
	}
	for _, key := range []string{"max_iterations", "target_score", "max_wall_time", "llm.models[].name",
		"llm.models[].backend", "llm.models[].concurrency", "llm.api_key", "database.feature_bins",
		"evaluator.command", "evaluator.file"} {
		if !seen[key] {
			t.Errorf("KnownKeys lacks %q", key)
		}
	}
	for _, key := range known {
		t.Run(key, func(t *testing.T) {
			_, warnings, _ := Parse([]byte(yamlFor(key)))
			if len(warnings) != 0 {
				t.Errorf("Parse(%q) warnings = %v, want none", yamlFor(key), warnings)
			}
		})
	}
	for _, key := range IgnoredKeys() {
		t.Run("ignored "+key, func(t *testing.T) {
			_, warnings, _ := Parse([]byte(yamlFor(key)))
			want := strings.ReplaceAll(key, "[]", "[0]")
			if len(warnings) != 1 || warnings[0].Key != want || !strings.Contains(warnings[0].Message, "OpenEvolve") {
				t.Errorf("Parse(%q) warnings = %v, want one OpenEvolve warning for %s", yamlFor(key), warnings, want)
			}
		})
	}
}

// yamlFor writes a file that sets key ("llm.models[].name") to null, in flow style:
// {llm: {models: [{name: null}]}}.
func yamlFor(key string) string {
	var open, closing string
	parts := strings.Split(key, ".")
	for i, part := range parts {
		name, list := strings.CutSuffix(part, "[]")
		if i == len(parts)-1 {
			open += "{" + name + ": null}"
			break
		}
		open += "{" + name + ": "
		closing = "}" + closing
		if list {
			open += "["
			closing = "]" + closing
		}
	}
	return open + closing
}

func warningKeys(ws []Warning) []string {
	var keys []string
	for _, w := range ws {
		keys = append(keys, w.Key)
	}
	return keys
}
