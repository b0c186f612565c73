package runconfig

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseLaunch(t *testing.T) {
	in := `
llm:
  models:
    - name: qwen
      backend: launch
      launch:
        command: [vllm, serve, "{model}", --port, "{port}", -tp, "{n_gpus}", --override, '{"x": 1}']
        health_path: /health
        startup_timeout: 90
        variants:
          - name: fp16
            model_path: Qwen/Qwen2.5-Coder-14B
            need_gib: 12.5
            per_gpu_overhead_mib: 1024
            group_sizes: [2, 4]
          - name: q4
            model_path: /models/q4.gguf
            context_length: 8192
          - {name: tiny, need_mib: 700}
    - name: minimal
      backend: launch
      launch:
        command: [./serve, "--port={port}"]
        variants: [{name: only, need_gib: 1}]
`
	c, warnings, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %v, want none", warnings)
	}
	tests := []struct {
		name string
		got  Launch
		want Launch
	}{
		{"all set", c.LLM.Models[0].Launch, Launch{
			Command:        []string{"vllm", "serve", "{model}", "--port", "{port}", "-tp", "{n_gpus}", "--override", `{"x": 1}`},
			HealthPath:     "/health",
			StartupTimeout: 90 * time.Second,
			Variants: []Variant{
				{Name: "fp16", ModelPath: "Qwen/Qwen2.5-Coder-14B", NeedMiB: 12800, PerGPUOverheadMiB: 1024, GroupSizes: []int{2, 4}, ContextLength: 4096},
				{Name: "q4", ModelPath: "/models/q4.gguf", PerGPUOverheadMiB: 512, ContextLength: 8192},
				{Name: "tiny", NeedMiB: 700, PerGPUOverheadMiB: 512, ContextLength: 4096},
			},
		}},
		{"defaults", c.LLM.Models[1].Launch, Launch{
			Command:        []string{"./serve", "--port={port}"},
			HealthPath:     DefaultHealthPath,
			StartupTimeout: DefaultStartupTimeout,
			Variants:       []Variant{{Name: "only", NeedMiB: 1024, PerGPUOverheadMiB: 512, ContextLength: 4096}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("launch:\ngot  %+v\nwant %+v", tt.got, tt.want)
			}
		})
	}
	m := c.LLM.Models[0]
	if got := m.ServedName(m.Launch.Variants[0]); got != "Qwen/Qwen2.5-Coder-14B" {
		t.Errorf("ServedName(fp16) = %q, want the model path", got)
	}
	if got := m.ServedName(m.Launch.Variants[2]); got != "qwen" {
		t.Errorf("ServedName(tiny) = %q, want the model's name", got)
	}
	if v, ok := m.Variant("q4"); !ok || v.ModelPath != "/models/q4.gguf" {
		t.Errorf("Variant(q4) = %+v, %v", v, ok)
	}
}

func TestParseLaunchInvalid(t *testing.T) {
	const cmd = `command: [./serve, "{port}"]`
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"no launch section", "llm: {models: [{name: a, backend: launch}]}", []string{
			`llm.models[0].launch.command: is not set; backend launch needs the server's command, such as [vllm, serve, "{model}", --port, "{port}"]`,
			`llm.models[0].launch.health_path: "" does not start with /; want a path such as /v1/models`,
			"llm.models[0].launch.startup_timeout: 0s is not more than 0; want a number of seconds above 0",
			"llm.models[0].launch.variants: is empty; backend launch needs at least one variant, such as {name: q8, need_gib: 12}",
		}},
		{"no command", "llm: {models: [{name: a, backend: launch, launch: {variants: [{name: v, need_gib: 1}]}}]}", []string{
			`llm.models[0].launch.command: is not set; backend launch needs the server's command, such as [vllm, serve, "{model}", --port, "{port}"]`,
		}},
		{"no variants", "llm: {models: [{name: a, backend: launch, launch: {" + cmd + "}}]}", []string{
			"llm.models[0].launch.variants: is empty; backend launch needs at least one variant, such as {name: q8, need_gib: 12}",
		}},
		{"no port", "llm: {models: [{name: a, backend: launch, launch: {command: [./serve], variants: [{name: v, need_gib: 1}]}}]}", []string{
			"llm.models[0].launch.command: does not use {port}; the server must listen on the port the generator picks for it",
		}},
		{"unknown placeholder", `llm: {models: [{name: a, backend: launch, launch: {command: [./serve, "{port}", "{prot}"], variants: [{name: v, need_gib: 1}]}}]}`, []string{
			`llm.models[0].launch.command[2]: "{prot}" holds {prot}, which is not one of {port}, {gpus}, {n_gpus}, {model}, {variant}`,
		}},
		{"command a string", `llm: {models: [{name: a, backend: launch, launch: {command: "./serve {port}", variants: [{name: v, need_gib: 1}]}}]}`, []string{
			`llm.models[0].launch.command: got the string "./serve {port}", want a list of strings`,
		}},
		{"no need", "llm: {models: [{name: a, backend: launch, launch: {" + cmd + ", variants: [{name: v}]}}]}", []string{
			"llm.models[0].launch.variants[0].need_gib: is not set; declare the GPU memory the variant needs (need_gib or need_mib), or give model_path to estimate it from",
		}},
		{"both needs", "llm: {models: [{name: a, backend: launch, launch: {" + cmd + ", variants: [{name: v, need_gib: 1, need_mib: 1024}]}}]}", []string{
			"llm.models[0].launch.variants[0].need_gib: is set together with need_mib; set one of them",
		}},
		{"need negative", "llm: {models: [{name: a, backend: launch, launch: {" + cmd + ", variants: [{name: v, need_gib: -2}]}}]}", []string{
			"llm.models[0].launch.variants[0].need_gib: -2 is not a positive number; want the GiB the variant needs, such as 12.5",
		}},
		{"need_mib negative", "llm: {models: [{name: a, backend: launch, launch: {" + cmd + ", variants: [{name: v, need_mib: -2}]}}]}", []string{
			"llm.models[0].launch.variants[0].need_mib: -2 is negative; want the MiB the variant needs",
		}},
		{"variant names", "llm: {models: [{name: a, backend: launch, launch: {" + cmd + ", variants: [{need_gib: 1}, {name: v, need_gib: 1}, {name: v, need_gib: 2}]}}]}", []string{
			"llm.models[0].launch.variants[0].name: is empty; every variant needs a name, such as q8",
			`llm.models[0].launch.variants[2].name: "v" is also the name of llm.models[0].launch.variants[1]; names must be unique`,
		}},
		{"variant numbers", "llm: {models: [{name: a, backend: launch, launch: {" + cmd + ", startup_timeout: 0, health_path: health, variants: [{name: v, need_gib: 1, group_sizes: [2, 0], per_gpu_overhead_mib: -1, context_length: 0}]}}]}", []string{
			`llm.models[0].launch.health_path: "health" does not start with /; want a path such as /v1/models`,
			"llm.models[0].launch.startup_timeout: 0s is not more than 0; want a number of seconds above 0",
			"llm.models[0].launch.variants[0].per_gpu_overhead_mib: -1 is less than the minimum, 0",
			"llm.models[0].launch.variants[0].group_sizes[1]: 0 is less than the minimum, 1",
			"llm.models[0].launch.variants[0].context_length: 0 is less than the minimum, 1",
		}},
		{"group sizes not numbers", "llm: {models: [{name: a, backend: launch, launch: {" + cmd + ", variants: [{name: v, need_gib: 1, group_sizes: [two]}]}}]}", []string{
			`llm.models[0].launch.variants[0].group_sizes[0]: "two" is not a whole number`,
		}},
		{"launch a list", "llm: {models: [{name: a, backend: launch, launch: [x]}]}", []string{
			"llm.models[0].launch: got a list, want a mapping with command and variants",
			`llm.models[0].launch.command: is not set; backend launch needs the server's command, such as [vllm, serve, "{model}", --port, "{port}"]`,
			"llm.models[0].launch.variants: is empty; backend launch needs at least one variant, such as {name: q8, need_gib: 12}",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want errors %q", tt.in, tt.want)
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\ngot  %q\nwant %q", got, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Error("errors.Is(err, ErrInvalid) = false, want true")
			}
		})
	}
}

// A model path without a declared need is valid: the generator estimates the need.
func TestParseLaunchEstimatedNeed(t *testing.T) {
	in := "llm: {models: [{name: a, backend: launch, launch: {command: [./serve, \"{port}\"], variants: [{name: v, model_path: /m.gguf}]}}]}"
	c, _, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if v := c.LLM.Models[0].Launch.Variants[0]; v.NeedMiB != 0 || v.ModelPath != "/m.gguf" {
		t.Errorf("variant = %+v, want need 0 (estimate) and the model path", v)
	}
}

// A launch section on a model that is not launched is ignored with a warning: the user most
// likely forgot backend: launch.
func TestParseLaunchWithoutBackendWarns(t *testing.T) {
	in := "llm: {models: [{name: a, launch: {command: [./serve, \"{port}\"], variants: [{name: v, need_gib: 1}]}}]}"
	c, warnings, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []Warning{{Key: "llm.models[0].launch", Message: "is used only with backend: launch; ignored"}}
	if !reflect.DeepEqual(warnings, want) {
		t.Errorf("warnings = %v, want %v", warnings, want)
	}
	if c.LLM.Models[0].Backend != BackendOpenAI {
		t.Errorf("backend = %q, want openai", c.LLM.Models[0].Backend)
	}
}
