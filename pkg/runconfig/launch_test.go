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

func TestParseProfiles(t *testing.T) {
	in := `
profiles:
  qwen:
    command: [vllm, serve, "{model}", --port, "{port}", -tp, "{n_gpus}", --override, '{"x": 1}']
    health_path: /health
    startup_timeout: 90
    env: {HF_HOME: /srv/hf, VLLM_LOGGING_LEVEL: WARNING}
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
  minimal:
    command: [./serve, "--port={port}"]
    variants: [{name: only, need_gib: 1}]
`
	ps, warnings, err := ParseProfiles([]byte(in))
	if err != nil {
		t.Fatalf("ParseProfiles: %v", err)
	}
	if len(warnings) != 0 {
		t.Errorf("warnings = %v, want none", warnings)
	}
	tests := []struct {
		name string
		got  Profile
		want Profile
	}{
		{"all set", ps["qwen"], Profile{
			Name:           "qwen",
			Command:        []string{"vllm", "serve", "{model}", "--port", "{port}", "-tp", "{n_gpus}", "--override", `{"x": 1}`},
			HealthPath:     "/health",
			StartupTimeout: 90 * time.Second,
			Env:            map[string]string{"HF_HOME": "/srv/hf", "VLLM_LOGGING_LEVEL": "WARNING"},
			Variants: []Variant{
				{Name: "fp16", ModelPath: "Qwen/Qwen2.5-Coder-14B", NeedMiB: 12800, PerGPUOverheadMiB: 1024, GroupSizes: []int{2, 4}, ContextLength: 4096},
				{Name: "q4", ModelPath: "/models/q4.gguf", PerGPUOverheadMiB: 512, ContextLength: 8192},
				{Name: "tiny", NeedMiB: 700, PerGPUOverheadMiB: 512, ContextLength: 4096},
			},
		}},
		{"defaults", ps["minimal"], Profile{
			Name:           "minimal",
			Command:        []string{"./serve", "--port={port}"},
			HealthPath:     DefaultHealthPath,
			StartupTimeout: DefaultStartupTimeout,
			Variants:       []Variant{{Name: "only", NeedMiB: 1024, PerGPUOverheadMiB: 512, ContextLength: 4096}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("profile:\ngot  %+v\nwant %+v", tt.got, tt.want)
			}
		})
	}
	m := Model{Name: "qwen"}
	p := ps["qwen"]
	if got := m.ServedName(p.Variants[0]); got != "Qwen/Qwen2.5-Coder-14B" {
		t.Errorf("ServedName(fp16) = %q, want the model path", got)
	}
	if got := m.ServedName(p.Variants[2]); got != "qwen" {
		t.Errorf("ServedName(tiny) = %q, want the model's name", got)
	}
	if v, ok := p.Variant("q4"); !ok || v.ModelPath != "/models/q4.gguf" {
		t.Errorf("Variant(q4) = %+v, %v", v, ok)
	}
}

func TestParseProfilesInvalid(t *testing.T) {
	const cmd = `command: [./serve, "{port}"]`
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty profile", "profiles: {p: {}}", []string{
			`profiles.p.command: is not set; a profile needs the server's command, such as [vllm, serve, "{model}", --port, "{port}"]`,
			"profiles.p.variants: is empty; a profile needs at least one variant, such as {name: q8, need_gib: 12}",
		}},
		{"no port", "profiles: {p: {command: [./serve], variants: [{name: v, need_gib: 1}]}}", []string{
			"profiles.p.command: does not use {port}; the server must listen on the port the generator picks for it",
		}},
		{"unknown placeholder", `profiles: {p: {command: [./serve, "{port}", "{prot}"], variants: [{name: v, need_gib: 1}]}}`, []string{
			`profiles.p.command[2]: "{prot}" holds {prot}, which is not one of {port}, {gpus}, {n_gpus}, {model}, {variant}`,
		}},
		{"command a string", `profiles: {p: {command: "./serve {port}", variants: [{name: v, need_gib: 1}]}}`, []string{
			`profiles.p.command: got the string "./serve {port}", want a list of strings`,
		}},
		{"no need", "profiles: {p: {" + cmd + ", variants: [{name: v}]}}", []string{
			"profiles.p.variants[0].need_gib: is not set; declare the GPU memory the variant needs (need_gib or need_mib), or give model_path to estimate it from",
		}},
		{"both needs", "profiles: {p: {" + cmd + ", variants: [{name: v, need_gib: 1, need_mib: 1024}]}}", []string{
			"profiles.p.variants[0].need_gib: is set together with need_mib; set one of them",
		}},
		{"need negative", "profiles: {p: {" + cmd + ", variants: [{name: v, need_gib: -2}]}}", []string{
			"profiles.p.variants[0].need_gib: -2 is not a positive number; want the GiB the variant needs, such as 12.5",
		}},
		{"variant names", "profiles: {p: {" + cmd + ", variants: [{need_gib: 1}, {name: v, need_gib: 1}, {name: v, need_gib: 2}]}}", []string{
			"profiles.p.variants[0].name: is empty; every variant needs a name, such as q8",
			`profiles.p.variants[2].name: "v" is also the name of profiles.p.variants[1]; names must be unique`,
		}},
		{"variant numbers", "profiles: {p: {" + cmd + ", startup_timeout: 0, health_path: health, variants: [{name: v, need_gib: 1, group_sizes: [2, 0], per_gpu_overhead_mib: -1, context_length: 0}]}}", []string{
			`profiles.p.health_path: "health" does not start with /; want a path such as /v1/models`,
			"profiles.p.startup_timeout: 0s is not more than 0; want a number of seconds above 0",
			"profiles.p.variants[0].per_gpu_overhead_mib: -1 is less than the minimum, 0",
			"profiles.p.variants[0].group_sizes[1]: 0 is less than the minimum, 1",
			"profiles.p.variants[0].context_length: 0 is less than the minimum, 1",
		}},
		{"env", "profiles: {p: {" + cmd + ", variants: [{name: v, need_gib: 1}], env: {1X: a, CUDA_VISIBLE_DEVICES: '0'}}}", []string{
			"profiles.p.env.1X: is not an environment variable name; want letters, digits and '_', not starting with a digit",
			"profiles.p.env.CUDA_VISIBLE_DEVICES: is set by the generator to the leased GPUs; leave it out",
		}},
		{"bad name", "profiles: {'a b': {" + cmd + ", variants: [{name: v, need_gib: 1}]}}", []string{
			`profiles.a b: "a b" is not a profile name; want letters, digits, '.', '_' or '-'`,
		}},
		{"profile a list", "profiles: {p: [x]}", []string{
			"profiles.p: got a list, want a mapping with command and variants",
		}},
		{"not a mapping", "[a]", []string{
			"invalid config: the file holds a list, want a mapping with profiles",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ParseProfiles([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseProfiles(%q) succeeded, want errors %q", tt.in, tt.want)
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

// Unknown keys in a profiles file are warnings, as in a run config; a file that cannot be
// read names itself.
func TestLoadProfiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "profiles.yaml")
	if err := os.WriteFile(path, []byte("profiles:\n  p: {command: [./s, '{port}'], variants: [{name: v, need_gib: 1}], helth_path: /h}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ps, warnings, err := LoadProfiles(path)
	if err != nil {
		t.Fatalf("LoadProfiles: %v", err)
	}
	if len(ps) != 1 || len(warnings) != 1 || !strings.Contains(warnings[0].String(), "profiles.p.helth_path: unknown key, ignored (did you mean profiles.p.health_path?)") {
		t.Errorf("profiles = %v, warnings = %v; want p and a warning about helth_path", ps, warnings)
	}
	if _, _, err := LoadProfiles(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("LoadProfiles(missing) = %v, want an error naming the file", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("profiles: {p: {}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadProfiles(bad); err == nil || !strings.HasPrefix(err.Error(), bad+": profiles.p.command") {
		t.Errorf("LoadProfiles(bad) = %v, want errors prefixed with the file", err)
	}
}

// A run config names a profile and nothing else: a command in it is refused with the way
// out, since it would run on the generator's host.
func TestRunConfigLaunch(t *testing.T) {
	c, warnings, err := Parse([]byte("llm: {models: [{name: a, backend: launch, launch: {profile: vllm-qwen}}]}"))
	if err != nil || len(warnings) != 0 {
		t.Fatalf("Parse = %v, %v; want no error or warning", err, warnings)
	}
	if got := c.LLM.Models[0].Launch; got != (Launch{Profile: "vllm-qwen"}) {
		t.Errorf("launch = %+v, want profile vllm-qwen", got)
	}
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"a command", `llm: {models: [{name: a, backend: launch, launch: {command: [/bin/sh, -c, "id; env"], variants: [{name: v, need_gib: 1}]}}]}`, []string{
			"llm.models[0].launch.command: a run config cannot bring a command: it would run on the generator's host as the generator's user. " +
				"Declare a profile in the generator's configuration (--profiles FILE or SHOAL_PROFILES) and name it here: launch: {profile: NAME}",
			"llm.models[0].launch.variants: belongs in a launch profile in the generator's configuration (--profiles FILE or SHOAL_PROFILES); a run config names the profile only: launch: {profile: NAME}",
			"llm.models[0].launch.profile: is not set; backend launch names a model-server profile from the generator's configuration, such as launch: {profile: vllm-qwen}",
		}},
		{"a command beside a profile", `llm: {models: [{name: a, backend: launch, launch: {profile: p, command: [./serve]}}]}`, []string{
			"llm.models[0].launch.command: a run config cannot bring a command: it would run on the generator's host as the generator's user. " +
				"Declare a profile in the generator's configuration (--profiles FILE or SHOAL_PROFILES) and name it here: launch: {profile: NAME}",
		}},
		{"no launch section", "llm: {models: [{name: a, backend: launch}]}", []string{
			"llm.models[0].launch.profile: is not set; backend launch names a model-server profile from the generator's configuration, such as launch: {profile: vllm-qwen}",
		}},
		{"bad profile name", "llm: {models: [{name: a, backend: launch, launch: {profile: 'x; rm'}}]}", []string{
			`llm.models[0].launch.profile: "x; rm" is not a profile name; want letters, digits, '.', '_' or '-'`,
		}},
		{"launch a list", "llm: {models: [{name: a, backend: launch, launch: [x]}]}", []string{
			"llm.models[0].launch: got a list, want a mapping with the profile to launch, such as {profile: vllm-qwen}",
			"llm.models[0].launch.profile: is not set; backend launch names a model-server profile from the generator's configuration, such as launch: {profile: vllm-qwen}",
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
		})
	}
}

// A launched model whose profile the generator does not declare is refused by name, with
// the profiles there are.
func TestProfilesCheck(t *testing.T) {
	c, _, err := Parse([]byte(`llm: {models: [{name: a, backend: launch, launch: {profile: vllm-qwen}}, {name: m, backend: mutate}]}`))
	if err != nil {
		t.Fatal(err)
	}
	p := Profile{Name: "vllm-qwen"}
	tests := []struct {
		name string
		ps   Profiles
		want string // "" for no error
	}{
		{"declared", Profiles{"vllm-qwen": p}, ""},
		{"others declared", Profiles{"llama-cpp": p, "sglang": p}, `model "a": unknown launch profile "vllm-qwen": it has llama-cpp, sglang; declare the profile in its --profiles file`},
		{"none declared", nil, `model "a": unknown launch profile "vllm-qwen": none are declared: start the generator with --profiles FILE (or SHOAL_PROFILES)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.ps.Check(c)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Check = %v, want nil", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want || !errors.Is(err, ErrUnknownProfile)):
				t.Errorf("Check = %v, want ErrUnknownProfile saying %q", err, tt.want)
			}
		})
	}
}

// A launch section on a model that is not launched is ignored with a warning: the user most
// likely forgot backend: launch.
func TestParseLaunchWithoutBackendWarns(t *testing.T) {
	in := "llm: {models: [{name: a, launch: {profile: p}}]}"
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

// A key written into the config is refused without being repeated; a reference to the
// generator's environment is what a config holds.
func TestLiteralAPIKeyRefused(t *testing.T) {
	const secret = "sk-live-0123456789abcdef"
	want := "holds a literal key; a run config travels over the bus and is stored in the runs bucket, so it must not hold secrets. " +
		`Write a reference such as "${OPENAI_API_KEY}" and set that variable in the generator's environment`
	tests := []struct {
		name string
		in   string
		keys []string // keys refused; none for a config that parses
	}{
		{"llm level", "llm: {api_key: " + secret + "}", []string{"llm.api_key"}},
		{"model level", "llm: {models: [{name: a, api_key: " + secret + "}, {name: b}]}", []string{"llm.models[0].api_key"}},
		{"inherited is reported once", "llm: {api_key: " + secret + ", models: [{name: a}, {name: b}]}", []string{"llm.api_key"}},
		{"evaluator model", "llm: {evaluator_models: [{name: a, api_key: EMPTY}]}", []string{"llm.evaluator_models[0].api_key"}},
		{"reference", "llm: {api_key: '${OPENAI_API_KEY}', models: [{name: a, api_key: '${OTHER_KEY}'}]}", nil},
		{"dollar name", "llm: {api_key: $OPENAI_API_KEY}", nil},
		{"not set", "llm: {models: [{name: a}]}", nil},
		{"not a whole reference", "llm: {api_key: '${A}x'}", []string{"llm.api_key"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.in))
			if len(tt.keys) == 0 {
				if err != nil {
					t.Errorf("Parse = %v, want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded, want %v refused", tt.keys)
			}
			var got []string
			for _, line := range strings.Split(err.Error(), "\n") {
				got = append(got, line)
			}
			var wantLines []string
			for _, k := range tt.keys {
				wantLines = append(wantLines, k+": "+want)
			}
			if !reflect.DeepEqual(got, wantLines) {
				t.Errorf("errors:\ngot  %q\nwant %q", got, wantLines)
			}
			if strings.Contains(err.Error(), secret) {
				t.Error("the error repeats the key")
			}
		})
	}
}
