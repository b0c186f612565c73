package runconfig

import "testing"

// FuzzParse: no input panics Parse, and a config it accepts validates and has a digest.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		openEvolveConfig,
		"llm: {models: [{name: a, weight: 0}], primary_model: b, secondary_model_weight: 0}",
		"a: &a {<<: *a}",
		"x: &x {y: 1}\nllm: {<<: [*x, *x], models: [*x, {<<: *x, name: z}]}",
		"database: {feature_bins: {complexity: 3, score: .nan}}",
		"evaluator: {timeout: 1e400, command: [a, ~]}",
		"max_iterations: 0x7fffffffffffffff\nmax_wall_time: -9223372036s",
		"? [a, b]\n: c\n",
		"--- !!map\n!!str llm: !!null\n",
		"max_iterations: 1\n---\nmax_iterations: 2\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, _, err := Parse(data)
		if err != nil {
			if c != nil {
				t.Errorf("Parse returned a config with error %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Errorf("Parse accepted a config that Validate rejects: %v", err)
		}
		if len(c.LLM.Models) == 0 {
			t.Errorf("Parse accepted a config with no models")
		}
		_ = c.Digest()
	})
}
