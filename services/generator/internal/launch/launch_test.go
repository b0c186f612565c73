package launch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/services/generator/internal/launch"
	"github.com/shoal-run/shoal/services/generator/internal/launch/launchtest"
)

const testHost = "launch-host"

// env is a launch backend started against an embedded JetStream server, as a generator
// replica starts it.
type env struct {
	*natstest.TestEnv
	ctx      context.Context
	backend  *launch.Backend
	shutdown func() // ends the backend's context, then stops its servers; once
}

// start starts a backend with cfg on a declared inventory of testHost (gpus: "2x24GiB"; ""
// leaves cfg.Inventory as it is) until the test ends.
func start(t *testing.T, cfg launch.Config, gpus string) *env {
	t.Helper()
	return startObserved(t, cfg, gpus, nil)
}

// startObserved is start with the backend's GPU metrics on meter (nil: off).
func startObserved(t *testing.T, cfg launch.Config, gpus string, meter metric.Meter) *env {
	t.Helper()
	e := &env{TestEnv: natstest.StartTestEnv(t)}
	var cancel context.CancelFunc
	e.ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if gpus != "" {
		inv, err := gpu.ParseDeclared(testHost, gpus)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Inventory = inv
	}
	if cfg.Replica == "" {
		cfg.Replica = "gen-test"
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = 15 * time.Second
	}
	if cfg.Idle == 0 {
		cfg.Idle = 10 * time.Minute
	}
	e.backend = launch.New(cfg, slog.New(slog.NewTextHandler(launchtest.Log{T: t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if meter != nil {
		unobserve, err := e.backend.Observe(meter)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(unobserve)
	}
	runCtx, stopRun := context.WithCancel(e.ctx)
	stop, err := e.backend.Start(runCtx, e.JS, e.Names, nil)
	if err != nil {
		stopRun()
		t.Fatal(err)
	}
	e.shutdown = sync.OnceFunc(func() {
		stopRun()
		stop()
	})
	t.Cleanup(e.shutdown)
	return e
}

// ask is one task's use of model m's server in run: it waits for the server's endpoint and
// asks the server for its models there, as a task would ask it for a completion.
func (e *env) ask(run string, m runconfig.Model) (launch.Endpoint, error) {
	ep, done, err := e.backend.Endpoint(e.ctx, run, m)
	defer done()
	if err != nil {
		return ep, err
	}
	req, err := http.NewRequestWithContext(e.ctx, http.MethodGet, ep.APIBase+"/models", nil)
	if err != nil {
		return ep, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ep, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ep, fmt.Errorf("GET %s/models: HTTP %d", ep.APIBase, resp.StatusCode)
	}
	return ep, nil
}

// model is a launched model of a run config that names profile.
func model(name, profile string) runconfig.Model {
	return runconfig.Model{Name: name, Backend: runconfig.BackendLaunch, Concurrency: 2, Launch: runconfig.Launch{Profile: profile}}
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

// TestServesOnLeasedGPUs launches a model on a declared 2×24 GiB host: the first task claims
// a lease and starts the stand-in server on the leased GPUs; a server killed from outside is
// restarted on the same lease; shutdown stops the server's whole process group and releases
// the lease.
func TestServesOnLeasedGPUs(t *testing.T) {
	launchtest.NoLeaks(t)
	dir := t.TempDir()
	launchtest.KillGroups(t, dir)
	server := launchtest.Recorded(dir, "python3 "+launchtest.Standin(t)+" --port {port} --model-name {model}")
	ps := launchtest.Profiles(t, launchtest.Profile("standin", server, `
    health_path: /health
    startup_timeout: 60
    env: {STANDIN_NOTE: from-profile}
    variants:
      - {name: big, need_gib: 30, group_sizes: [2]}
`))
	e := start(t, launch.Config{Replica: "gen-l", Profiles: ps}, "2x24GiB")
	coder := model("coder", "standin")
	const holder = "gen-l/coder"

	// The host's GPUs are published for `shoal leases`.
	invKV, err := e.JS.KeyValue(e.ctx, e.Names.GPUInventoryBucket())
	if err != nil {
		t.Fatal(err)
	}
	entry, err := invKV.Get(e.ctx, lease.Key(testHost))
	if err != nil {
		t.Fatalf("inventory not published by Start: %v", err)
	}
	var inv gpu.Inventory
	if err := json.Unmarshal(entry.Value(), &inv); err != nil || inv.Host != testHost || len(inv.GPUs) != 2 || inv.GPUs[0].TotalMiB != 24*gpu.GiB {
		t.Errorf("published inventory = %+v (%v), want 2×24 GiB of %s", inv, err, testHost)
	}

	first, err := e.ask("r1", coder)
	if err != nil {
		t.Fatalf("first task: %v", err)
	}
	if first.Model != "coder" || !strings.HasPrefix(first.APIBase, "http://127.0.0.1:") || !strings.HasSuffix(first.APIBase, "/v1") {
		t.Errorf("endpoint = %+v, want the model's name on a loopback /v1 base", first)
	}
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
	if ep, err := e.ask("r2", coder); err != nil || ep != first {
		t.Fatalf("second run: endpoint %+v (%v), want the first run's %+v", ep, err, first)
	}

	// Killed from outside, the server is restarted on the same lease.
	p := launchtest.PIDs(t, dir)
	if len(p) != 1 {
		t.Fatalf("servers started: %v, want one", p)
	}
	if err := syscall.Kill(p[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	launchtest.WaitFor(t, 20*time.Second, "server restarted", func() bool { return len(launchtest.PIDs(t, dir)) == 2 })
	if _, err := e.ask("r1", coder); err != nil {
		t.Fatalf("task after the restart: %v", err)
	}
	if b, ok := allocation(t, e, holder); !ok || b.Revision != a.Revision {
		t.Errorf("lease after the restart = %+v (%v), want the same grant (revision %d)", b, ok, a.Revision)
	}

	// Shutdown stops the server's whole group and gives the GPUs back.
	e.shutdown()
	for _, pid := range launchtest.PIDs(t, dir) {
		if !launchtest.GroupGone(pid) {
			t.Errorf("server process group %d is still there after shutdown", pid)
		}
	}
	if a, ok := allocation(t, e, holder); ok {
		t.Errorf("lease still in the ledger after shutdown: %+v", a)
	}
}

// A lost lease (here removed from the ledger, as another claimer would after its expiry)
// kills the server at once; the model claims GPUs again and goes on serving.
func TestLostLeaseKillsServer(t *testing.T) {
	launchtest.NoLeaks(t)
	dir := t.TempDir()
	launchtest.KillGroups(t, dir)
	server := launchtest.Recorded(dir, "python3 "+launchtest.Standin(t)+" --port {port}")
	ps := launchtest.Profiles(t, launchtest.Profile("standin", server, `
    health_path: /health
    startup_timeout: 60
    variants: [{name: small, need_gib: 8}]
`))
	e := start(t, launch.Config{Replica: "gen-f", LeaseTTL: 3 * time.Second, Profiles: ps}, "2x24GiB")
	coder := model("coder", "standin")
	const holder = "gen-f/coder"
	if _, err := e.ask("r1", coder); err != nil {
		t.Fatalf("first task: %v", err)
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
	first := launchtest.PIDs(t, dir)[0]
	launchtest.WaitFor(t, 10*time.Second, "server killed after its lease was lost", func() bool { return launchtest.GroupGone(first) })
	t.Logf("server killed %s after the lease was removed", time.Since(lostAt).Round(time.Millisecond))

	launchtest.WaitFor(t, 20*time.Second, "server started on a new lease", func() bool { return len(launchtest.PIDs(t, dir)) == 2 })
	if _, err := e.ask("r1", coder); err != nil {
		t.Fatalf("task after the new lease: %v", err)
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
	e.shutdown()
	if _, ok := allocation(t, e, holder); ok {
		t.Error("lease still in the ledger after shutdown")
	}
}

// A server that never answers its health check, and one that exits while starting, reject
// their tasks with the reason; neither leaves a process behind.
func TestStartupFailuresRejectTasks(t *testing.T) {
	launchtest.NoLeaks(t)
	hangs, exits := t.TempDir(), t.TempDir()
	launchtest.KillGroups(t, hangs, exits)
	ps := launchtest.Profiles(t,
		launchtest.Profile("hangs", launchtest.Recorded(hangs, `python3 -c "import time; time.sleep(600)" {port}`), `
    startup_timeout: 2
    variants: [{name: v, need_gib: 10}]
`),
		launchtest.Profile("exits", launchtest.Recorded(exits, `sh -c "echo loading weights; echo 'fatal: no model at /models/x.gguf' >&2; exit 3" {port}`), `
    startup_timeout: 60
    variants: [{name: v, need_gib: 10}]
`))
	e := start(t, launch.Config{Replica: "gen-s", Profiles: ps}, "2x24GiB")
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
			begin := time.Now()
			_, err := e.ask("r1", model(tt.model, tt.model))
			if err == nil {
				t.Fatal("task not rejected")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("rejection %q does not say %q", err, w)
				}
			}
			if d := time.Since(begin); d > tt.limit {
				t.Errorf("rejected after %s, want within %s", d, tt.limit)
			}
		})
	}
	e.shutdown()
	for _, dir := range []string{hangs, exits} {
		p := launchtest.PIDs(t, dir)
		if len(p) == 0 {
			t.Errorf("%s: no server was started", dir)
		}
		for _, pid := range p {
			if !launchtest.GroupGone(pid) {
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
func TestVariantThatNeverFits(t *testing.T) {
	launchtest.NoLeaks(t)
	ps := launchtest.Profiles(t, launchtest.Profile("huge", []string{"./serve", "{port}"}, `
    variants: [{name: fp16, need_gib: 100, group_sizes: [1, 2]}]
`))
	e := start(t, launch.Config{Profiles: ps}, "2x24GiB")
	_, err := e.ask("r1", model("huge", "huge"))
	if err == nil {
		t.Fatal("task not rejected")
	}
	for _, w := range []string{"launch: ", "fp16"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("rejection %q does not say %q", err, w)
		}
	}
}

// A backend without GPUs rejects every task with the reason it was given, and publishes no
// inventory.
func TestWithoutGPUs(t *testing.T) {
	launchtest.NoLeaks(t)
	ps := launchtest.Profiles(t, launchtest.Profile("serve", []string{"./serve", "{port}"}, `
    variants: [{name: v, need_gib: 1}]
`))
	e := start(t, launch.Config{NoGPUs: "this host has no GPUs", Profiles: ps}, "")
	if _, err := e.ask("r1", model("coder", "serve")); err == nil || err.Error() != "launch: this host has no GPUs" {
		t.Errorf("rejection = %v, want %q", err, "launch: this host has no GPUs")
	}
	invKV, err := e.JS.KeyValue(e.ctx, e.Names.GPUInventoryBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := invKV.Get(e.ctx, lease.Key(testHost)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("inventory of a backend without GPUs: Get = %v, want ErrKeyNotFound", err)
	}
}

// A run that names a profile this generator does not declare gets its tasks rejected with
// that reason and the profiles there are; nothing is started.
func TestUnknownProfileRejected(t *testing.T) {
	launchtest.NoLeaks(t)
	ps := launchtest.Profiles(t, launchtest.Profile("llama-cpp", []string{"./serve", "{port}"}, "    variants: [{name: v, need_gib: 1}]\n"))
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
			e := start(t, launch.Config{Profiles: tt.ps}, "2x24GiB")
			if _, err := e.ask("r1", model("coder", "vllm-qwen")); err == nil || err.Error() != tt.want {
				t.Errorf("rejection = %v, want %q", err, tt.want)
			}
		})
	}
}

// A variant without a declared need is sized from its model file; a file that cannot be read
// rejects the model's tasks with the way out.
func TestNeedEstimateFails(t *testing.T) {
	launchtest.NoLeaks(t)
	ps := launchtest.Profiles(t, launchtest.Profile("est", []string{"./serve", "{port}"}, `
    variants: [{name: q4, model_path: /nonexistent/model.gguf}]
`))
	e := start(t, launch.Config{Profiles: ps}, "2x24GiB")
	_, err := e.ask("r1", model("est", "est"))
	if err == nil {
		t.Fatal("task not rejected")
	}
	for _, w := range []string{`launch: variant "q4"`, "/nonexistent/model.gguf", "declare need_gib"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("rejection %q does not say %q", err, w)
		}
	}
}

// A server that no task has used for Idle stops and gives its GPUs back; the next task
// starts it again.
func TestIdleServerStops(t *testing.T) {
	launchtest.NoLeaks(t)
	dir := t.TempDir()
	launchtest.KillGroups(t, dir)
	server := launchtest.Recorded(dir, "python3 "+launchtest.Standin(t)+" --port {port}")
	ps := launchtest.Profiles(t, launchtest.Profile("standin", server, `
    health_path: /health
    variants: [{name: small, need_gib: 8}]
`))
	e := start(t, launch.Config{Replica: "gen-i", Idle: 2 * time.Second, Profiles: ps}, "2x24GiB")
	coder := model("coder", "standin")
	if _, err := e.ask("r1", coder); err != nil {
		t.Fatalf("first task: %v", err)
	}
	first := launchtest.PIDs(t, dir)[0]
	launchtest.WaitFor(t, 15*time.Second, "idle server stopped", func() bool { return launchtest.GroupGone(first) })
	launchtest.WaitFor(t, 5*time.Second, "idle server's lease released", func() bool {
		_, ok := allocation(t, e, "gen-i/coder")
		return !ok
	})
	if _, err := e.ask("r1", coder); err != nil {
		t.Fatalf("task after the idle stop: %v", err)
	}
	if p := launchtest.PIDs(t, dir); len(p) != 2 {
		t.Errorf("servers started: %v, want a second one for the task after the idle stop", p)
	}
}
