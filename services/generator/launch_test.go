package generator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/services/generator"
)

const testHost = "launch-host"

// standin is the stand-in model server of deploy/standin: a real OpenAI-compatible server on
// the standard library, which reports its CUDA_VISIBLE_DEVICES.
func standin(t *testing.T) string {
	t.Helper()
	path, err := filepath.Abs("../../deploy/standin/server.py")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the stand-in model server is missing: %v", err)
	}
	return path
}

// recorded wraps a server command in a shell that appends its pid (which is also its process
// group: the generator starts each server in a group of its own) to dir/pids and writes its
// CUDA_VISIBLE_DEVICES to dir/cvd and its STANDIN_NOTE (a profile's env) to dir/note, then
// execs the server under the same pid.
func recorded(dir, server string) []string {
	return []string{"sh", "-c", fmt.Sprintf(`echo $$ >> %s/pids; printf %%s "$CUDA_VISIBLE_DEVICES" > %s/cvd; printf %%s "$STANDIN_NOTE" > %s/note; exec %s`, dir, dir, dir, server)}
}

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

// profile is one entry of a generator's profiles file; extra holds its other keys, indented
// by four spaces.
func profile(name string, command []string, extra string) string {
	quoted := make([]string, len(command))
	for i, a := range command {
		quoted[i] = strconv.Quote(a)
	}
	return fmt.Sprintf("  %s:\n    command: [%s]\n%s", name, strings.Join(quoted, ", "), extra)
}

// profiles reads entries as the generator reads its --profiles file.
func profiles(t *testing.T, entries ...string) runconfig.Profiles {
	t.Helper()
	ps, warnings, err := runconfig.ParseProfiles([]byte("profiles:\n" + strings.Join(entries, "")))
	if err != nil || len(warnings) > 0 {
		t.Fatalf("profiles: %v %v", err, warnings)
	}
	return ps
}

// promptTask is a task whose prompt shows the parent the way the planner does, which the
// stand-in reads to propose its edit.
func promptTask(run, id, model string) *protocol.Task {
	tk := task(run, id, model)
	tk.Messages[1].Content = "# Current Program\n```python\n" + parent + "\n```\n"
	return tk
}

func pids(t *testing.T, dir string) []int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "pids"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pids file: %v", err)
		}
		out = append(out, pid)
	}
	return out
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func groupGone(pgid int) bool {
	return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}

// killGroups makes sure no server outlives a failing test.
func killGroups(t *testing.T, dirs ...string) {
	t.Cleanup(func() {
		for _, dir := range dirs {
			for _, pid := range pids(t, dir) {
				if !groupGone(pid) {
					t.Errorf("server process group %d outlived the test", pid)
					_ = syscall.Kill(-pid, syscall.SIGKILL)
				}
			}
		}
	})
}

func leasesKV(t *testing.T, e *env) jetstream.KeyValue {
	t.Helper()
	kv, err := e.JS.KeyValue(e.ctx, e.Names.GPULeasesBucket())
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// allocation returns the live allocation in the host's ledger of the server of a replica's
// model (holder <replica>/<model>/<config>), if any.
func allocation(t *testing.T, e *env, holder string) (gpu.Allocation, bool) {
	t.Helper()
	l, err := lease.Read(e.ctx, leasesKV(t, e), testHost)
	if errors.Is(err, lease.ErrNoLedger) {
		return gpu.Allocation{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range l.Live(time.Now()) {
		if strings.HasPrefix(a.Holder, holder+"/") {
			return a, true
		}
	}
	return gpu.Allocation{}, false
}

func uuids(a gpu.Allocation) string {
	ids := make([]string, len(a.Shares))
	for i, s := range a.Shares {
		ids[i] = s.UUID
	}
	return strings.Join(ids, ",")
}

// TestLaunchServesOnLeasedGPUs runs a launched model end to end on a declared 2×24 GiB host:
// the first task claims a lease and starts the stand-in server on the leased GPUs; a server
// killed from outside is restarted on the same lease; shutdown stops the server's whole
// process group and releases the lease.
func TestLaunchServesOnLeasedGPUs(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	killGroups(t, dir)
	server := recorded(dir, "python3 "+standin(t)+" --port {port} --model-name {model}")
	// The profile comes from the generator's profiles file, as --profiles gives it.
	file := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(file, []byte("profiles:\n"+profile("standin", server, `
    health_path: /health
    startup_timeout: 60
    env: {STANDIN_NOTE: from-profile}
    variants:
      - {name: big, need_gib: 30, group_sizes: [2]}
`)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := launchConfig(launchModel("coder", "standin"))
	e := start(t, generator.Config{ID: "gen-l", GPUs: "2x24GiB", Host: testHost, ProfilesFile: file}, map[string]string{"r1": cfg, "r2": cfg})
	const holder = "gen-l/coder"

	// The host's GPUs are published for `shoal leases`.
	invKV, err := e.JS.KeyValue(e.ctx, e.Names.GPUInventoryBucket())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "inventory published", func() bool {
		_, err := invKV.Get(e.ctx, lease.Key(testHost))
		return err == nil
	})
	entry, err := invKV.Get(e.ctx, lease.Key(testHost))
	if err != nil {
		t.Fatal(err)
	}
	var inv gpu.Inventory
	if err := json.Unmarshal(entry.Value(), &inv); err != nil || inv.Host != testHost || len(inv.GPUs) != 2 || inv.GPUs[0].TotalMiB != 24*gpu.GiB {
		t.Errorf("published inventory = %+v (%v), want 2×24 GiB of %s", inv, err, testHost)
	}

	e.publish(t, promptTask("r1", "r1.t1", "coder"))
	first := e.candidates(t, 1)[0]
	if first.Rejected != "" {
		t.Fatalf("first candidate rejected: %s", first.Rejected)
	}
	assertChangedInsideBlockOnly(t, parent, first.Code)

	a, ok := allocation(t, e, holder)
	if !ok {
		t.Fatalf("no lease for %s in the ledger", holder)
	}
	if len(a.Shares) != 2 || a.State != gpu.LeaseReady || a.Model != "coder" || a.Variant != "big" {
		t.Errorf("allocation = %+v, want a READY lease of variant big on both GPUs", a)
	}
	cvd, err := os.ReadFile(filepath.Join(dir, "cvd"))
	if err != nil {
		t.Fatal(err)
	}
	if string(cvd) != uuids(a) {
		t.Errorf("server ran with CUDA_VISIBLE_DEVICES=%q, want the lease's GPUs %q", cvd, uuids(a))
	}
	if note, err := os.ReadFile(filepath.Join(dir, "note")); err != nil || string(note) != "from-profile" {
		t.Errorf("server ran with STANDIN_NOTE=%q (%v), want the profile's env value from-profile", note, err)
	}

	// Another run that launches the model the same way shares its server.
	e.publish(t, promptTask("r2", "r2.t1", "coder"))
	if c := e.candidates(t, 2)[1]; c.Rejected != "" || c.Run != "r2" {
		t.Fatalf("candidate of the second run = %+v", c)
	}

	// Killed from outside, the server is restarted on the same lease.
	p := pids(t, dir)
	if len(p) != 1 {
		t.Fatalf("servers started: %v, want one", p)
	}
	if err := syscall.Kill(p[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "server restarted", func() bool { return len(pids(t, dir)) == 2 })
	e.publish(t, promptTask("r1", "r1.t2", "coder"))
	second := e.candidates(t, 3)[2]
	if second.Rejected != "" {
		t.Fatalf("candidate after the restart rejected: %s", second.Rejected)
	}
	if b, ok := allocation(t, e, holder); !ok || b.Revision != a.Revision {
		t.Errorf("lease after the restart = %+v (%v), want the same grant (revision %d)", b, ok, a.Revision)
	}

	// Shutdown stops the server's whole group and gives the GPUs back.
	e.shutdown(t)
	for _, pid := range pids(t, dir) {
		if !groupGone(pid) {
			t.Errorf("server process group %d is still there after shutdown", pid)
		}
	}
	if a, ok := allocation(t, e, holder); ok {
		t.Errorf("lease still in the ledger after shutdown: %+v", a)
	}
}

// A lost lease (here removed from the ledger, as another claimer would after its expiry)
// kills the server at once; the model claims GPUs again and goes on serving.
func TestLaunchLostLeaseKillsServer(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	killGroups(t, dir)
	server := recorded(dir, "python3 "+standin(t)+" --port {port}")
	ps := profiles(t, profile("standin", server, `
    health_path: /health
    startup_timeout: 60
    variants: [{name: small, need_gib: 8}]
`))
	cfg := launchConfig(launchModel("coder", "standin"))
	e := start(t, generator.Config{ID: "gen-f", GPUs: "2x24GiB", Host: testHost, LeaseTTL: 3 * time.Second, Profiles: ps}, map[string]string{"r1": cfg})
	const holder = "gen-f/coder"
	e.publish(t, promptTask("r1", "r1.t1", "coder"))
	if c := e.candidates(t, 1)[0]; c.Rejected != "" {
		t.Fatalf("rejected: %s", c.Rejected)
	}
	a, ok := allocation(t, e, holder)
	if !ok {
		t.Fatal("no lease in the ledger")
	}

	// Take the lease away behind the holder's back.
	kv := leasesKV(t, e)
	entry, err := kv.Get(e.ctx, lease.Key(testHost))
	if err != nil {
		t.Fatal(err)
	}
	var led lease.Ledger
	if err := json.Unmarshal(entry.Value(), &led); err != nil {
		t.Fatal(err)
	}
	led.Allocations = slices.DeleteFunc(led.Allocations, func(x gpu.Allocation) bool { return x.Holder == a.Holder })
	data, err := json.Marshal(&led)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(e.ctx, lease.Key(testHost), data, entry.Revision()); err != nil {
		t.Fatal(err)
	}
	lostAt := time.Now()
	first := pids(t, dir)[0]
	waitFor(t, 10*time.Second, "server killed after its lease was lost", func() bool { return groupGone(first) })
	t.Logf("server killed %s after the lease was removed", time.Since(lostAt).Round(time.Millisecond))

	waitFor(t, 20*time.Second, "server started on a new lease", func() bool { return len(pids(t, dir)) == 2 })
	e.publish(t, promptTask("r1", "r1.t2", "coder"))
	if c := e.candidates(t, 2)[1]; c.Rejected != "" {
		t.Fatalf("candidate after the new lease rejected: %s", c.Rejected)
	}
	b, ok := allocation(t, e, holder)
	if !ok || b.Revision == a.Revision {
		t.Errorf("lease after the loss = %+v (%v), want a new grant", b, ok)
	}
	cvd, err := os.ReadFile(filepath.Join(dir, "cvd"))
	if err != nil {
		t.Fatal(err)
	}
	if string(cvd) != uuids(b) {
		t.Errorf("new server ran with CUDA_VISIBLE_DEVICES=%q, want %q", cvd, uuids(b))
	}
	e.shutdown(t)
	if _, ok := allocation(t, e, holder); ok {
		t.Error("lease still in the ledger after shutdown")
	}
}

// A server that never answers its health check, and one that exits while starting, reject
// their tasks with the reason; neither leaves a process behind.
func TestLaunchStartupFailuresRejectTasks(t *testing.T) {
	noLeaks(t)
	hangs, exits := t.TempDir(), t.TempDir()
	killGroups(t, hangs, exits)
	ps := profiles(t,
		profile("hangs", recorded(hangs, `python3 -c "import time; time.sleep(600)" {port}`), `
    startup_timeout: 2
    variants: [{name: v, need_gib: 10}]
`),
		profile("exits", recorded(exits, `sh -c "echo loading weights; echo 'fatal: no model at /models/x.gguf' >&2; exit 3" {port}`), `
    startup_timeout: 60
    variants: [{name: v, need_gib: 10}]
`))
	cfg := launchConfig(launchModel("hangs", "hangs"), launchModel("exits", "exits"))
	e := start(t, generator.Config{ID: "gen-s", GPUs: "2x24GiB", Host: testHost, Profiles: ps}, map[string]string{"r1": cfg})
	e.publish(t, promptTask("r1", "r1.hangs", "hangs"))
	e.publish(t, promptTask("r1", "r1.exits", "exits"))
	got := map[string]protocol.Candidate{}
	for _, c := range e.candidates(t, 2) {
		got[c.Model] = c
	}
	tests := []struct {
		model string
		want  []string
		limit time.Duration
	}{
		{"hangs", []string{"launch: server not healthy within startup_timeout 2s", "/v1/models"}, 10 * time.Second},
		{"exits", []string{"launch: server exited during startup: fatal: no model at /models/x.gguf (exit status 3)"}, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			c := got[tt.model]
			for _, w := range tt.want {
				if !strings.Contains(c.Rejected, w) {
					t.Errorf("rejection %q does not say %q", c.Rejected, w)
				}
			}
			if d := time.Duration(c.GenerateMS) * time.Millisecond; d > tt.limit {
				t.Errorf("rejected after %s, want within %s", d, tt.limit)
			}
		})
	}
	e.shutdown(t)
	for _, dir := range []string{hangs, exits} {
		p := pids(t, dir)
		if len(p) == 0 {
			t.Errorf("%s: no server was started", dir)
		}
		for _, pid := range p {
			if !groupGone(pid) {
				t.Errorf("server process group %d is still there after shutdown", pid)
			}
		}
	}
	for _, holder := range []string{"gen-s/hangs", "gen-s/exits"} {
		if a, ok := allocation(t, e, holder); ok {
			t.Errorf("lease of %s still in the ledger after shutdown: %+v", holder, a)
		}
	}
}

// A variant too large for every GPU of the host is rejected at once, with placement's reason.
func TestLaunchVariantThatNeverFits(t *testing.T) {
	noLeaks(t)
	ps := profiles(t, profile("huge", []string{"./serve", "{port}"}, `
    variants: [{name: fp16, need_gib: 100, group_sizes: [1, 2]}]
`))
	cfg := launchConfig(launchModel("huge", "huge"))
	e := start(t, generator.Config{GPUs: "2x24GiB", Host: testHost, Profiles: ps}, map[string]string{"r1": cfg})
	e.publish(t, promptTask("r1", "r1.t1", "huge"))
	c := e.candidates(t, 1)[0]
	for _, w := range []string{"launch: ", "fp16"} {
		if !strings.Contains(c.Rejected, w) {
			t.Errorf("rejection %q does not say %q", c.Rejected, w)
		}
	}
}

// Tasks of a launched model on a replica without GPUs are rejected with the way out.
func TestLaunchWithoutGPUs(t *testing.T) {
	noLeaks(t)
	ps := profiles(t, profile("serve", []string{"./serve", "{port}"}, `
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
	noLeaks(t)
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
	ps := profiles(t, profile("serve", []string{"sh", "-c", "touch " + marker, "{port}"}, "    variants: [{name: v, need_gib: 1}]\n"))
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

// A run that names a profile this generator does not declare gets its tasks rejected with
// that reason and the profiles there are; nothing is started.
func TestLaunchUnknownProfileRejected(t *testing.T) {
	noLeaks(t)
	ps := profiles(t, profile("llama-cpp", []string{"./serve", "{port}"}, "    variants: [{name: v, need_gib: 1}]\n"))
	tests := []struct {
		name string
		ps   runconfig.Profiles
		want string
	}{
		{"others declared", ps, `launch: model "coder": unknown launch profile "vllm-qwen": it has llama-cpp; declare the profile in its --profiles file`},
		{"none declared", nil, `launch: model "coder": unknown launch profile "vllm-qwen": none are declared: start the generator with --profiles FILE (or SHOAL_PROFILES)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := start(t, generator.Config{GPUs: "2x24GiB", Host: testHost, Profiles: tt.ps}, map[string]string{"r1": launchConfig(launchModel("coder", "vllm-qwen"))})
			e.publish(t, promptTask("r1", "r1.t1", "coder"))
			if c := e.candidates(t, 1)[0]; c.Rejected != tt.want {
				t.Errorf("rejection = %q, want %q", c.Rejected, tt.want)
			}
		})
	}
}

// A variant without a declared need is sized from its model file; a file that cannot be read
// rejects the model's tasks with the way out.
func TestLaunchNeedEstimateFails(t *testing.T) {
	noLeaks(t)
	ps := profiles(t, profile("est", []string{"./serve", "{port}"}, `
    variants: [{name: q4, model_path: /nonexistent/model.gguf}]
`))
	cfg := launchConfig(launchModel("est", "est"))
	e := start(t, generator.Config{GPUs: "2x24GiB", Host: testHost, Profiles: ps}, map[string]string{"r1": cfg})
	e.publish(t, promptTask("r1", "r1.t1", "est"))
	c := e.candidates(t, 1)[0]
	for _, w := range []string{`launch: variant "q4"`, "/nonexistent/model.gguf", "declare need_gib"} {
		if !strings.Contains(c.Rejected, w) {
			t.Errorf("rejection %q does not say %q", c.Rejected, w)
		}
	}
}

func TestGPUsConfig(t *testing.T) {
	noLeaks(t)
	e := natstest.StartTestEnv(t)
	dir := t.TempDir()
	inventory := filepath.Join(dir, "gpus.json")
	if err := os.WriteFile(inventory, []byte(`{"host": "box-1", "gpus": [{"uuid": "GPU-a", "name": "RTX 3090", "total_mib": 24576}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	profilesFile, badProfiles := filepath.Join(dir, "profiles.yaml"), filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(profilesFile, []byte("profiles:\n"+profile("p", []string{"./serve", "{port}"}, "    variants: [{name: v, need_gib: 1}]\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(badProfiles, []byte("profiles:\n"+profile("p", []string{"./serve"}, "    variants: [{name: v, need_gib: 1}]\n")), 0o644); err != nil {
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

// A server that no task has used for LaunchIdle stops and gives its GPUs back; the next task
// starts it again.
func TestLaunchIdleServerStops(t *testing.T) {
	noLeaks(t)
	dir := t.TempDir()
	killGroups(t, dir)
	server := recorded(dir, "python3 "+standin(t)+" --port {port}")
	ps := profiles(t, profile("standin", server, `
    health_path: /health
    variants: [{name: small, need_gib: 8}]
`))
	cfg := launchConfig(launchModel("coder", "standin"))
	e := start(t, generator.Config{ID: "gen-i", GPUs: "2x24GiB", Host: testHost, LaunchIdle: 2 * time.Second, Profiles: ps}, map[string]string{"r1": cfg})
	e.publish(t, promptTask("r1", "r1.t1", "coder"))
	if c := e.candidates(t, 1)[0]; c.Rejected != "" {
		t.Fatalf("rejected: %s", c.Rejected)
	}
	first := pids(t, dir)[0]
	waitFor(t, 15*time.Second, "idle server stopped", func() bool { return groupGone(first) })
	waitFor(t, 5*time.Second, "idle server's lease released", func() bool {
		_, ok := allocation(t, e, "gen-i/coder")
		return !ok
	})
	e.publish(t, promptTask("r1", "r1.t2", "coder"))
	if c := e.candidates(t, 2)[1]; c.Rejected != "" {
		t.Fatalf("candidate after the idle stop rejected: %s", c.Rejected)
	}
	if p := pids(t, dir); len(p) != 2 {
		t.Errorf("servers started: %v, want a second one for the task after the idle stop", p)
	}
}
