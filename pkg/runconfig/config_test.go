package runconfig

import (
	"math"
	"regexp"
	"testing"
	"time"
)

func TestResolveAPIKey(t *testing.T) {
	env := map[string]string{"OPENAI_API_KEY": "sk-openai", "OPENROUTER_API_KEY": "sk-or", "EMPTY": ""}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name   string
		apiKey string
		want   string
	}{
		{"empty falls back to OPENAI_API_KEY", "", "sk-openai"},
		{"braced variable", "${OPENROUTER_API_KEY}", "sk-or"},
		{"bare variable", "$OPENROUTER_API_KEY", "sk-or"},
		{"the OpenAI variable by name", "${OPENAI_API_KEY}", "sk-openai"},
		{"unset variable gives empty, not the OpenAI key", "${ANTHROPIC_API_KEY}", ""},
		{"empty variable", "$EMPTY", ""},
		{"literal key", "sk-literal", "sk-literal"},
		{"embedded reference stays literal", "Bearer ${OPENAI_API_KEY}", "Bearer ${OPENAI_API_KEY}"},
		{"unclosed brace stays literal", "${OPENAI_API_KEY", "${OPENAI_API_KEY"},
		{"lone dollar stays literal", "$", "$"},
		{"digit first stays literal", "$1abc", "$1abc"},
		{"empty braces stay literal", "${}", "${}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (Model{APIKey: tt.apiKey}).ResolveAPIKey(getenv); got != tt.want {
				t.Errorf("ResolveAPIKey(%q) = %q, want %q", tt.apiKey, got, tt.want)
			}
		})
	}
}

func TestFitness(t *testing.T) {
	c := Default() // feature dimensions: complexity, diversity
	tests := []struct {
		name         string
		metrics      map[string]float64
		want         float64
		wantCombined bool
	}{
		{"combined_score", map[string]float64{"combined_score": 0.8, "a": 0.1}, 0.8, true},
		{"negative combined_score", map[string]float64{"combined_score": -3}, -3, true},
		{"mean without combined_score", map[string]float64{"a": 0.2, "b": 0.4}, 0.30000000000000004, false},
		{"feature dimensions left out", map[string]float64{"a": 1, "complexity": 100, "diversity": 50}, 1, false},
		{"only feature dimensions", map[string]float64{"complexity": 2, "diversity": 4}, 3, false},
		{"NaN and Inf left out", map[string]float64{"a": 1, "b": math.NaN(), "c": math.Inf(1), "d": math.Inf(-1)}, 1, false},
		{"NaN combined_score falls back", map[string]float64{"combined_score": math.NaN(), "a": 0.5}, 0.5, false},
		{"Inf combined_score falls back", map[string]float64{"combined_score": math.Inf(1), "a": 0.5}, 0.5, false},
		{"no metrics", map[string]float64{}, 0, false},
		{"nil metrics", nil, 0, false},
		{"nothing finite", map[string]float64{"a": math.NaN()}, 0, false},
		{"no overflow", map[string]float64{"a": math.MaxFloat64, "b": math.MaxFloat64}, math.MaxFloat64, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, combined := c.Fitness(tt.metrics)
			if got != tt.want || combined != tt.wantCombined {
				t.Errorf("Fitness(%v) = %v, %v; want %v, %v", tt.metrics, got, combined, tt.want, tt.wantCombined)
			}
		})
	}
}

func TestModelByName(t *testing.T) {
	c, _, err := Parse([]byte("llm: {models: [{name: a}, {name: b, weight: 2}], evaluator_models: [{name: judge}, {name: a, weight: 9}]}"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	tests := []struct {
		name       string
		wantOK     bool
		wantWeight float64
	}{
		{"a", true, 1}, // Models before EvaluatorModels
		{"b", true, 2},
		{"judge", true, 1},
		{"mutate", false, 0},
		{"", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := c.ModelByName(tt.name)
			if ok != tt.wantOK || m.Weight != tt.wantWeight {
				t.Errorf("ModelByName(%q) = weight %v, %v; want weight %v, %v", tt.name, m.Weight, ok, tt.wantWeight, tt.wantOK)
			}
		})
	}
	if got := c.LLM.FeedbackModels(); len(got) != 2 || got[0].Name != "judge" {
		t.Errorf("FeedbackModels = %+v, want the evaluator models", got)
	}
	if got := Default().LLM.FeedbackModels(); len(got) != 1 || got[0].Name != "mutate" {
		t.Errorf("default FeedbackModels = %+v, want the models", got)
	}
}

func TestDigest(t *testing.T) {
	parse := func(in string) *Config {
		t.Helper()
		c, _, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		return c
	}
	base := Default().Digest()
	if !regexp.MustCompile(`^sha256-[0-9a-f]{64}$`).MatchString(base) {
		t.Fatalf("Digest = %q, want sha256-<64 hex>", base)
	}
	if again := Default().Digest(); again != base {
		t.Errorf("Digest not stable: %s then %s", base, again)
	}

	t.Run("same config, different file", func(t *testing.T) {
		files := []string{
			"",
			"# a comment\nmax_iterations: 10000\n",
			"database: {num_islands: 5, population_size: 1000}\nevaluator:\n  timeout: 5m\n",
			"llm:\n  temperature: 0.7\n  models: []\n",
		}
		for _, f := range files {
			if got := parse(f).Digest(); got != base {
				t.Errorf("Digest of %q = %s, want the default's %s", f, got, base)
			}
		}
		a := parse("llm: {models: [{name: a}, {name: b}]}\nmax_iterations: 5")
		b := parse("max_iterations: 5\nllm:\n  models:\n    - name: a\n    - {name: b}\n")
		if a.Digest() != b.Digest() {
			t.Errorf("key order changed the digest")
		}
	})

	t.Run("changes", func(t *testing.T) {
		score := 0.9
		changes := map[string]func(c *Config){
			"max_iterations":   func(c *Config) { c.MaxIterations++ },
			"target_score":     func(c *Config) { c.TargetScore = &score },
			"max_wall_time":    func(c *Config) { c.MaxWallTime = time.Hour },
			"model weight":     func(c *Config) { c.LLM.Models[0].Weight = 2 },
			"model added":      func(c *Config) { c.LLM.Models = append(c.LLM.Models, Model{Name: "x"}) },
			"api key":          func(c *Config) { c.LLM.APIKey = "${OTHER}" },
			"feature bins map": func(c *Config) { c.Database.FeatureBinsByDimension = map[string]int{"score": 3} },
			"thresholds":       func(c *Config) { c.Evaluator.CascadeThresholds = []float64{0.5, 0.75} },
			"command":          func(c *Config) { c.Evaluator.Command = []string{"./score"} },
			"bool":             func(c *Config) { c.Evaluator.UseLLMFeedback = true },
			"string":           func(c *Config) { c.Prompt.SystemMessage = "be brief" },
		}
		seen := map[string]string{base: "default"}
		for name, change := range changes {
			c := Default()
			change(c)
			d := c.Digest()
			if other, dup := seen[d]; dup {
				t.Errorf("%s: digest equals that of %s", name, other)
			}
			seen[d] = name
		}
	})

	t.Run("map order", func(t *testing.T) {
		c := Default()
		c.Database.FeatureBinsByDimension = map[string]int{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
		want := c.Digest()
		for range 20 {
			if got := c.Digest(); got != want {
				t.Fatalf("Digest varies with map order: %s vs %s", got, want)
			}
		}
	})

	t.Run("invalid config", func(t *testing.T) {
		c := Default()
		c.ConvergenceThreshold = math.NaN()
		nan := math.Inf(-1)
		c.TargetScore = &nan
		if got := c.Digest(); got == base || got == "" {
			t.Errorf("Digest of a config holding NaN = %q, want a distinct digest", got)
		}
	})
}
