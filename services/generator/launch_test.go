package generator_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/services/generator"
	"github.com/shoal-run/shoal/services/generator/internal/launch/launchtest"
)

// The launch backend's own tests (servers on leased GPUs, restarts, fencing, startup
// failures, idle stops) are in internal/launch. These are the generator's side of it: the
// --gpus config, run configs that bring a command, a replica without GPUs, and the helpers
// of the tests that run launched models through whole replicas (handback, registry).

const testHost = "launch-host"

// launchModel is one launched model's entry in a run config: it names a profile.
func launchModel(name, profile string) string {
	return fmt.Sprintf(`
    - name: %s
      backend: launch
      concurrency: 2
      launch: {profile: %s}
`, name, profile)
}

func launchConfig(models ...string) string {
	return `
language: python
llm:
  timeout: 20
  retries: 2
  retry_delay: 0.2
  models:` + strings.Join(models, "")
}

// promptTask is a task whose prompt shows the parent the way the planner does, which the
// stand-in reads to propose its edit.
func promptTask(run, id, model string) *protocol.Task {
	tk := task(run, id, model)
	tk.Messages[1].Content = "# Current Program\n```python\n" + parent + "\n```\n"
	return tk
}

func leasesKV(t *testing.T, e *env) jetstream.KeyValue {
	t.Helper()
	kv, err := e.JS.KeyValue(e.ctx, e.Names.GPULeasesBucket())
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// Tasks of a launched model on a replica without GPUs are rejected with the way out.
func TestLaunchWithoutGPUs(t *testing.T) {
	launchtest.NoLeaks(t)
	ps := launchtest.Profiles(t, launchtest.Profile("serve", []string{"./serve", "{port}"}, `
    variants: [{name: v, need_gib: 1}]
`))
	cfg := launchConfig(launchModel("coder", "serve"))
	e := start(t, generator.Config{GPUs: "none", Profiles: ps}, map[string]string{"r1": cfg})
	e.publish(t, promptTask("r1", "r1.t1", "coder"))
	c := e.candidates(t, 1)[0]
	if !strings.Contains(c.Rejected, "launch: this generator was started with --gpus none") {
		t.Errorf("rejection %q does not explain that the replica has no GPUs", c.Rejected)
	}
}

// A run config that brings its own launch command is refused as a whole, even when it
// reaches the runs bucket without the archive's check: its tasks are dead-lettered and end as
// abandoned candidates with no code (failed results), the command never runs, and a later
// valid run is still served.
func TestLaunchCommandInRunConfigRefused(t *testing.T) {
	launchtest.NoLeaks(t)
	marker := filepath.Join(t.TempDir(), "ran")
	withCommand := fmt.Sprintf(`
language: python
llm:
  models:
    - name: coder
      backend: launch
      launch:
        command: [sh, -c, "id > %s; env >> %s", "{port}"]
        variants: [{name: v, need_gib: 1}]
`, marker, marker)
	noProfile := `
language: python
llm:
  models:
    - name: coder
      backend: launch
`
	ps := launchtest.Profiles(t, launchtest.Profile("serve", []string{"sh", "-c", "touch " + marker, "{port}"}, "    variants: [{name: v, need_gib: 1}]\n"))
	e := start(t, generator.Config{GPUs: "2x24GiB", Host: testHost, Profiles: ps},
		map[string]string{"bad1": withCommand, "bad2": noProfile, "good": mutateConfig})
	e.publish(t, promptTask("bad1", "bad1.t1", "coder"))
	e.publish(t, promptTask("bad2", "bad2.t1", "coder"))
	e.publish(t, task("good", "good.t1", "mutate"))
	e.settled(t, e.Names.GeneratorConsumer(""), 3)
	for _, c := range e.candidates(t, 3) {
		if abandoned := c.TaskID != "good.t1"; abandoned != (c.Abandoned != "") || abandoned != (c.Code == "") {
			t.Errorf("candidate of %s: abandoned %q, code %q; want only good.t1's generated", c.TaskID, c.Abandoned, c.Code)
		}
	}
	for _, tt := range []struct{ run, want string }{
		{"bad1", "llm.models[0].launch.command: a run config cannot bring a command"},
		{"bad2", "llm.models[0].launch.profile: is not set"},
	} {
		if _, err := e.store.Spec(context.Background(), tt.run); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run %s: Spec error = %v, want one saying %q", tt.run, err, tt.want)
		}
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a command ran on the host for a refused run config (%s: %v)", marker, err)
	}
}

func TestGPUsConfig(t *testing.T) {
	launchtest.NoLeaks(t)
	e := natstest.StartTestEnv(t)
	dir := t.TempDir()
	inventory := filepath.Join(dir, "gpus.json")
	if err := os.WriteFile(inventory, []byte(`{"host": "box-1", "gpus": [{"uuid": "GPU-a", "name": "RTX 3090", "total_mib": 24576}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	profilesFile, badProfiles := filepath.Join(dir, "profiles.yaml"), filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(profilesFile, []byte("profiles:\n"+launchtest.Profile("p", []string{"./serve", "{port}"}, "    variants: [{name: v, need_gib: 1}]\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badProfiles, []byte("profiles:\n"+launchtest.Profile("p", []string{"./serve"}, "    variants: [{name: v, need_gib: 1}]\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  generator.Config
		want string // "" for no error
	}{
		{"spec", generator.Config{GPUs: "4x11GiB", Host: "h"}, ""},
		{"spec with topology", generator.Config{GPUs: "2x24GiB:nvlink-pairs"}, ""},
		{"none", generator.Config{GPUs: "none"}, ""},
		{"bad spec", generator.Config{GPUs: "4x11", Host: "h"}, "--gpus"},
		{"file", generator.Config{GPUs: inventory}, ""},
		{"file for this host", generator.Config{GPUs: inventory, Host: "box-1"}, ""},
		{"file for another host", generator.Config{GPUs: inventory, Host: "box-2"}, `inventory file ` + inventory + ` is for host "box-1", and this generator is host "box-2"; set --host to match`},
		{"lease ttl", generator.Config{GPUs: "none", LeaseTTL: time.Millisecond}, "lease ttl 1ms: want at least 1s"},
		{"launch idle", generator.Config{GPUs: "none", LaunchIdle: time.Millisecond}, "launch idle 1ms: want at least 1s"},
		{"profiles file", generator.Config{GPUs: "none", ProfilesFile: profilesFile}, ""},
		{"profiles file missing", generator.Config{GPUs: "none", ProfilesFile: filepath.Join(dir, "missing.yaml")}, "read profiles: open " + filepath.Join(dir, "missing.yaml")},
		{"profiles file invalid", generator.Config{GPUs: "none", ProfilesFile: badProfiles}, badProfiles + ": profiles.p.command: does not use {port}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := generator.New(tt.cfg, e.Conn, nil)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("New: %v", err)
			case tt.want != "" && (!errors.Is(err, generator.ErrConfig) || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("New = %v, want ErrConfig saying %q", err, tt.want)
			}
		})
	}
}
