package runconfig

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Profile is a model server that a generator may start for a BackendLaunch model: what runs
// on the host, on which GPUs and with what environment. Profiles belong to the operator of
// the host and live in the generator's own configuration (ParseProfiles), never in a run
// config, which only names one (Launch.Profile).
type Profile struct {
	// Name is how run configs ask for the profile.
	Name string
	// Command is the server's executable and arguments. In every argument {port} becomes
	// the port the server must listen on (on 127.0.0.1), {gpus} the leased GPUs' UUIDs
	// joined by commas, {n_gpus} their number, {model} the variant's ModelPath (or the
	// model's name) and {variant} the variant's name.
	Command []string
	// HealthPath is fetched until it answers 200; then the server is ready.
	HealthPath string
	// StartupTimeout bounds the wait from the start of the command to a healthy server.
	StartupTimeout time.Duration
	// Env is added to the server's environment (the generator's own, with
	// CUDA_VISIBLE_DEVICES set to the leased GPUs).
	Env map[string]string
	// Variants are the ways to serve the model, most preferred first (Q8 on two GPUs, then
	// Q4 on one); the lease goes to the first that fits.
	Variants []Variant
}

// Variant finds one of the profile's variants by name.
func (p Profile) Variant(name string) (Variant, bool) {
	for _, v := range p.Variants {
		if v.Name == name {
			return v, true
		}
	}
	return Variant{}, false
}

// Profiles are a generator's launch profiles by name.
type Profiles map[string]Profile

// Lookup returns the profile a launched model names; ErrUnknownProfile, with the profiles
// there are, when the generator declares none by that name.
func (ps Profiles) Lookup(m Model) (Profile, error) {
	if p, ok := ps[m.Launch.Profile]; ok {
		return p, nil
	}
	have := "none are declared: start the generator with --profiles FILE (or SHOAL_PROFILES)"
	if len(ps) > 0 {
		have = "it has " + strings.Join(slices.Sorted(maps.Keys(ps)), ", ") + "; declare the profile in its --profiles file"
	}
	return Profile{}, fmt.Errorf("model %q: %w %q: %s", m.Name, ErrUnknownProfile, m.Launch.Profile, have)
}

// Check reports every launched model of c whose profile is not among ps, so that a run a
// generator could never serve is refused when it is seeded.
func (ps Profiles) Check(c *Config) error {
	var errs []error
	for _, list := range [][]Model{c.LLM.Models, c.LLM.EvaluatorModels} {
		for _, m := range list {
			if m.Backend != BackendLaunch {
				continue
			}
			if _, err := ps.Lookup(m); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// ParseProfiles reads a generator's profiles file:
//
//	profiles:
//	  vllm-qwen:
//	    command: [vllm, serve, "{model}", --port, "{port}", --tensor-parallel-size, "{n_gpus}"]
//	    health_path: /health
//	    startup_timeout: 600
//	    env: {HF_HOME: /srv/hf}
//	    variants:
//	      - {name: awq, model_path: Qwen/Qwen2.5-Coder-14B-Instruct-AWQ, need_gib: 14}
//
// As with Parse, unknown keys come back as warnings and every unusable value is an error
// naming its key (profiles.vllm-qwen.command), all joined into one error.
func ParseProfiles(data []byte) (Profiles, []Warning, error) {
	root, err := parseYAML(data)
	if err != nil {
		return nil, nil, err
	}
	ps := Profiles{}
	d := &decoder{}
	if root != nil && !isNull(root) {
		if root.Kind != yaml.MappingNode {
			return nil, nil, fmt.Errorf("%w: the file holds %s, want a mapping with profiles", ErrInvalid, describe(root))
		}
		d.section(root, "", schema{fields: []field{
			{name: "profiles", set: func(d *decoder, n *yaml.Node, key string) { d.profiles(ps, n, key) },
				sub: func() schema { return profileSchema(new(Profile)) }},
		}})
	}
	errs := make([]error, 0, len(d.errs))
	failed := make(map[string]bool, len(d.errs))
	for _, e := range d.errs {
		failed[e.Key] = true
		errs = append(errs, e)
	}
	v := &validator{}
	for _, name := range slices.Sorted(maps.Keys(ps)) {
		key := "profiles." + name
		if !validProfileName(name) {
			v.add(key, "%q is not a profile name; want letters, digits, '.', '_' or '-'", name)
		}
		v.profile(key, ps[name])
	}
	for _, e := range v.problems {
		if !failed[e.Key] {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return nil, d.warnings, errors.Join(errs...)
	}
	return ps, d.warnings, nil
}

// LoadProfiles reads and parses the profiles file at path; every error names the path.
func LoadProfiles(path string) (Profiles, []Warning, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read profiles: %w", err)
	}
	ps, warnings, err := ParseProfiles(data)
	if err != nil {
		return nil, warnings, inFile(path, err)
	}
	return ps, warnings, nil
}

// profiles reads the mapping of profile names to profiles, each over the profile defaults.
func (d *decoder) profiles(ps Profiles, n *yaml.Node, key string) {
	if !d.mapping(n, key, "a mapping of profile names to profiles") {
		return
	}
	for _, p := range d.pairs(n, key) {
		k := join(key, p.name)
		if !d.mapping(p.val, k, "a mapping with command and variants") {
			continue
		}
		prof := Profile{Name: p.name, HealthPath: DefaultHealthPath, StartupTimeout: DefaultStartupTimeout}
		d.section(p.val, k, profileSchema(&prof))
		ps[p.name] = prof
	}
}

func profileSchema(p *Profile) schema {
	return schema{
		fields: []field{
			{name: "command", set: stringsTo(&p.Command)},
			{name: "health_path", set: stringTo(&p.HealthPath)},
			{name: "startup_timeout", set: durationTo(&p.StartupTimeout)},
			{name: "env", set: func(d *decoder, n *yaml.Node, key string) {
				if !d.mapping(n, key, "a mapping of variable names to values") {
					return
				}
				p.Env = map[string]string{}
				for _, kv := range d.pairs(n, key) {
					if v, ok := d.string(kv.val, join(key, kv.name)); ok {
						p.Env[kv.name] = v
					}
				}
			}},
			{name: "variants", set: func(d *decoder, n *yaml.Node, key string) { p.Variants = d.variants(n, key) },
				sub: func() schema { return variantSchema(new(Variant), new(float64)) }, list: true},
		},
	}
}
