//go:build e2ecompose

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
)

// TestCompose runs the deployment of compose.yaml as the README's "docker compose" section
// shows it, from the images `make images` built, and prints each step's outcome and time:
// up with one generator; a run seeded from the host with `shoal seed` and a program added with
// a plain NATS publish as the seeder; the run to its budget with a better best than its seed,
// and the compose ui service showing it to the seeder's credentials (and refusing a request
// without them);
// then up with 4 generators, the same run shape again (results/s with 1 and 4 generators), and
// a run whose model the generators launch (deploy/compose/launch.yaml, the `standin` profile
// of deploy/compose/profiles.yaml: a 12.5 GiB Q8 variant on 2 cards or a Q4 one on 1, on the
// declared 4×11 GiB inventory), where all 4 replicas must hold Q4 on one card each, as
// `shoal leases` shows; and down with nothing left behind. `make e2e-compose` runs it; it is
// not part of `make test`.
func TestCompose(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	shoal := filepath.Join(root, "bin", "shoal")
	if _, err := os.Stat(shoal); err != nil {
		t.Fatalf("%v: run make build", err)
	}
	for _, img := range []string{"nats", "planner", "generator", "evaluator", "archive", "shoal"} {
		if out, err := exec.Command("docker", "image", "inspect", "shoal/"+img+":latest").CombinedOutput(); err != nil {
			t.Fatalf("image shoal/%s:latest: %v\n%s(run make images)", img, err, out)
		}
	}
	project := "shoal-e2e"
	port, uiPort := freePort(t), freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	stateDir := t.TempDir() // the credentials this deployment gets as secrets
	env := append(os.Environ(),
		"SHOAL_STATE_DIR="+stateDir,
		"SHOAL_NATS_PORT="+strconv.Itoa(port),
		"SHOAL_UI_PORT="+strconv.Itoa(uiPort),
		"SHOAL_NATS_URL="+url,
		"COMPOSE_PROJECT_NAME="+project,
	)
	start := time.Now()
	step := func(format string, args ...any) {
		t.Logf("[%6.1fs] %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = root, env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	compose := func(args ...string) string { return run("docker", append([]string{"compose"}, args...)...) }

	run(shoal, "credentials")
	step("credentials made")
	t.Cleanup(func() {
		if t.Failed() {
			cmd := exec.Command("docker", "compose", "logs", "--no-color", "--tail", "40")
			cmd.Dir, cmd.Env = root, env
			out, _ := cmd.CombinedOutput()
			t.Logf("logs:\n%s", out)
		}
		cmd := exec.Command("docker", "compose", "down", "-v", "--remove-orphans", "--timeout", "30")
		cmd.Dir, cmd.Env = root, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docker compose down: %v\n%s", err, out)
		}
		for _, kind := range []string{"container", "network", "volume"} {
			args := []string{kind, "ls", "-q", "--filter", "label=com.docker.compose.project=" + project}
			if kind == "container" {
				args = []string{"ps", "-aq", "--filter", "label=com.docker.compose.project=" + project}
			}
			out, err := exec.Command("docker", args...).Output()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("after down, %ss of %s are left: %q %v", kind, project, out, err)
			}
		}
		step("docker compose down -v: no container, network or volume left")
	})

	upAt := time.Now()
	compose("up", "-d", "--wait")
	ps := compose("ps", "--format", "{{.Service}} {{.Health}}")
	step("step 1: docker compose up -d --wait (images from make images) in %.1fs:\n%s", time.Since(upAt).Seconds(), ps)
	if n := strings.Count(ps, "generator healthy"); n != 1 {
		t.Fatalf("%d healthy generators, want 1", n)
	}

	ex := filepath.Join(root, "examples", "function_minimization")
	const runID, iterations = "demo", 120
	seed := func(run, config string, extra ...string) {
		t.Helper()
		args := append([]string{"seed", "--run", run, "--config", config}, extra...)
		args = append(args, "--evaluator", filepath.Join(ex, "evaluator.py"), "--iterations", strconv.Itoa(iterations),
			filepath.Join(ex, "initial_program.py"))
		step("shoal seed --run %s: %s", run, strings.TrimSpace(run1(t, root, env, shoal, args...)))
	}
	seed(runID, filepath.Join(ex, "config.yaml"))

	// A plain NATS publish, as `nats --user seeder pub shoal.seed.RUN < program.py` does.
	pw, err := natsauth.ReadPassword(filepath.Join(envValue(env, "SHOAL_STATE_DIR"), "credentials"), natsauth.Seeder)
	if err != nil {
		t.Fatal(err)
	}
	seeder, err := nats.Connect(url, nats.UserInfo("seeder", pw), nats.CustomInboxPrefix(natsauth.Seeder.InboxPrefix()))
	if err != nil {
		t.Fatalf("connect as seeder: %v", err)
	}
	defer seeder.Close()
	names := protocol.NewNames("")
	events, err := seeder.SubscribeSync(names.Event(runID, protocol.EventSeed))
	if err != nil {
		t.Fatal(err)
	}
	program, err := os.ReadFile(filepath.Join(ex, "initial_program.py"))
	if err != nil {
		t.Fatal(err)
	}
	if err := seeder.Publish(names.Seed(runID), program); err != nil {
		t.Fatal(err)
	}
	if msg, err := events.NextMsg(30 * time.Second); err != nil {
		t.Fatalf("no seed event after the plain publish: %v", err)
	} else {
		var ev protocol.Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			t.Fatal(err)
		}
		step("step 2: plain NATS publish as seeder to %s: the archive took it (%s)", names.Seed(runID), ev.Message)
	}

	apw, err := natsauth.ReadPassword(filepath.Join(envValue(env, "SHOAL_STATE_DIR"), "credentials"), natsauth.Admin)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := nats.Connect(url, nats.UserInfo("admin", apw))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	store, err := runs.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	// wait polls run until it is done, and returns its state, the time from seeded to its
	// first folded result, and results/s from seeded to done.
	wait := func(run string, seeded time.Time, firstResult func(time.Duration)) (*protocol.RunState, float64) {
		t.Helper()
		var st *protocol.RunState
		first := false
		for {
			ps, err := store.Planner(ctx, run)
			if err != nil && ctx.Err() != nil {
				t.Fatalf("run %s not done within 15 min: %v", run, err)
			}
			if s, err := store.State(ctx, run); err == nil {
				st = s
				if !first && s.Iterations > 0 {
					first = true
					if firstResult != nil {
						firstResult(time.Since(seeded))
					}
				}
			}
			if ps != nil && (ps.Status == protocol.RunDone || ps.Status == protocol.RunFailed) {
				if ps.Status == protocol.RunFailed {
					t.Fatalf("run %s failed: %s", run, ps.StopReason)
				}
				return st, float64(st.Iterations) / time.Since(seeded).Seconds()
			}
			select {
			case <-ctx.Done():
				t.Fatalf("run %s not done within 15 min (state %+v)", run, st)
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	seeded := time.Now()
	st, rate1 := wait(runID, seeded, func(d time.Duration) {
		step("first result folded %.1fs after seeding, %.1fs after docker compose up began", d.Seconds(), time.Since(upAt).Seconds())
	})
	step("step 3: run %s done with 1 generator in %.1fs: %d iterations (%.1f results/s), %d seeds, %d failed, best %.4f from seed %.4f",
		runID, time.Since(seeded).Seconds(), st.Iterations, rate1, st.Seeds, st.Failed, st.BestScore, st.SeedScore)
	if st.Iterations < iterations {
		t.Errorf("iterations = %d, want ≥ %d", st.Iterations, iterations)
	}
	if st.Seeds < 2 {
		t.Errorf("seeds = %d, want 2 (shoal seed and the plain publish)", st.Seeds)
	}
	if !(st.BestScore > st.SeedScore) {
		t.Errorf("best %.4f did not improve on the seed's %.4f", st.BestScore, st.SeedScore)
	} else {
		step("step 3: the best score improved: %.4f -> %.4f", st.SeedScore, st.BestScore)
	}
	step("shoal status:\n%s", run(shoal, "status"))
	checkComposeUI(t, uiPort, stateDir, runID, st)
	step("step 3: the web UI (compose's ui service, logged in as the seeder) shows run %s with its best %.4f", runID, st.BestScore)

	// Step 4: scale to 4 generators. The same run shape again, then a run that launches a
	// 12.5 GiB model (Q8 on 2 cards, or Q4 on one) on the declared 4×11 GiB inventory.
	upAt4 := time.Now()
	compose("up", "-d", "--wait", "--scale", "generator=4")
	ps = compose("ps", "--format", "{{.Service}} {{.Health}}")
	step("step 4: docker compose up -d --wait --scale generator=4 in %.1fs:\n%s", time.Since(upAt4).Seconds(), ps)
	if n := strings.Count(ps, "generator healthy"); n != 4 {
		t.Fatalf("%d healthy generators, want 4", n)
	}
	const runID4 = "demo-4"
	seed(runID4, filepath.Join(ex, "config.yaml"))
	seeded = time.Now()
	st4, rate4 := wait(runID4, seeded, nil)
	step("step 4: run %s done with 4 generators in %.1fs: %d iterations (%.1f results/s; 1 generator: %.1f), best %.4f from seed %.4f",
		runID4, time.Since(seeded).Seconds(), st4.Iterations, rate4, rate1, st4.BestScore, st4.SeedScore)

	const launchID = "launch"
	seed(launchID, filepath.Join(root, "deploy", "compose", "launch.yaml"),
		"--profiles", filepath.Join(root, "deploy", "compose", "profiles.yaml"))
	seeded = time.Now()
	leases, err := js.KeyValue(ctx, names.GPULeasesBucket())
	if err != nil {
		t.Fatal(err)
	}
	var live []gpu.Allocation
	for deadline := time.Now().Add(3 * time.Minute); ; {
		if led, err := lease.Read(ctx, leases, "compose"); err == nil {
			live = live[:0]
			for _, a := range led.Live(time.Now()) {
				if a.State == gpu.LeaseReady {
					live = append(live, a)
				}
			}
			if len(live) == 4 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 3 min, %d ready leases on host compose, want 4: %+v\n%s", len(live), live, run(shoal, "leases"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	step("step 4: 4 model servers ready %.1fs after seeding; shoal leases:\n%s", time.Since(seeded).Seconds(), run(shoal, "leases"))
	cards := map[string]string{}
	for _, a := range live {
		if a.Model != "coder-12b" || a.Variant != "q4" || len(a.Shares) != 1 {
			t.Errorf("lease of %s: %s/%s on %d cards; want coder-12b/q4 on one card (Q8 fits only 2 of 4 replicas)",
				a.Holder, a.Model, a.Variant, len(a.Shares))
		}
		for _, s := range a.Shares {
			if h, dup := cards[s.UUID]; dup {
				t.Errorf("card %s leased to %s and %s", s.UUID, h, a.Holder)
			}
			cards[s.UUID] = a.Holder
		}
	}
	if !t.Failed() {
		step("step 4: placement follows the config: Q8 (2 cards each) fits 2 of 4 replicas, so all 4 hold Q4 on one card each")
	}
	stl, ratel := wait(launchID, seeded, nil)
	step("step 4: run %s (stand-in model servers on 4 generators) done in %.1fs: %d iterations (%.1f results/s), best %.4f from seed %.4f",
		launchID, time.Since(seeded).Seconds(), stl.Iterations, ratel, stl.BestScore, stl.SeedScore)

	best := filepath.Join(t.TempDir(), "best.py")
	run(shoal, "best", "--run", runID, "-o", best)
	if b, err := os.ReadFile(best); err != nil || len(b) == 0 {
		t.Errorf("shoal best wrote %d bytes: %v", len(b), err)
	}
	step("shoal best --run %s -o: the best program written", runID)
}

// run1 runs name with args in dir under env and returns its output; it fails t on an error.
func run1(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func envValue(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// TestComposeClusterFailover runs compose.yaml with compose.cluster.yaml, three NATS servers
// with every stream and bucket on all three, and stops the server leading RESULTS while a run
// is under way: results must keep flowing under a new leader, the run must finish on two
// servers, and RESULTS must hold exactly one result for every task the planner issued (none
// lost, none counted twice), as chaos/ audits it. `make e2e-compose` runs it after TestCompose.
func TestComposeClusterFailover(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	shoal := filepath.Join(root, "bin", "shoal")
	if _, err := os.Stat(shoal); err != nil {
		t.Fatalf("%v: run make build", err)
	}
	project := "shoal-e2e-cluster"
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var urls []string
	for _, p := range ports {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	url := strings.Join(urls, ",")
	state := t.TempDir()
	env := append(os.Environ(),
		"SHOAL_STATE_DIR="+state,
		"SHOAL_NATS_PORT="+strconv.Itoa(ports[0]),
		"SHOAL_NATS_PORT_2="+strconv.Itoa(ports[1]),
		"SHOAL_NATS_PORT_3="+strconv.Itoa(ports[2]),
		"SHOAL_NATS_URL="+url,
		"COMPOSE_PROJECT_NAME="+project,
		"COMPOSE_FILE=compose.yaml:compose.cluster.yaml",
	)
	start := time.Now()
	step := func(format string, args ...any) {
		t.Logf("[%6.1fs] %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir, cmd.Env = root, env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	compose := func(args ...string) string { return run("docker", append([]string{"compose"}, args...)...) }

	run(shoal, "credentials")
	t.Cleanup(func() {
		if t.Failed() {
			cmd := exec.Command("docker", "compose", "logs", "--no-color", "--tail", "40")
			cmd.Dir, cmd.Env = root, env
			out, _ := cmd.CombinedOutput()
			t.Logf("logs:\n%s", out)
		}
		cmd := exec.Command("docker", "compose", "down", "-v", "--remove-orphans", "--timeout", "30")
		cmd.Dir, cmd.Env = root, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docker compose down: %v\n%s", err, out)
		}
		for _, args := range [][]string{
			{"ps", "-aq"}, {"network", "ls", "-q"}, {"volume", "ls", "-q"},
		} {
			out, err := exec.Command("docker", append(args, "--filter", "label=com.docker.compose.project="+project)...).Output()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("after down, docker %s finds %q (%v)", strings.Join(args, " "), out, err)
			}
		}
		step("docker compose down -v: no container, network or volume left")
	})

	compose("up", "-d", "--wait", "--scale", "generator=2")
	step("docker compose -f compose.yaml -f compose.cluster.yaml up -d --wait --scale generator=2:\n%s",
		compose("ps", "--format", "{{.Service}} {{.Health}}"))

	apw, err := natsauth.ReadPassword(filepath.Join(state, "credentials"), natsauth.Admin)
	if err != nil {
		t.Fatal(err)
	}
	// The admin rides out the server's loss like the services: every URL, reconnecting for good.
	admin, err := nats.Connect(url, nats.UserInfo("admin", apw), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	names := protocol.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	for _, s := range []string{names.TasksStream(), names.CandidatesStream(), names.ResultsStream()} {
		info, err := js.Stream(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if r := info.CachedInfo().Config.Replicas; r != 3 {
			t.Fatalf("stream %s has %d replicas, want 3 (shoal provision --replicas 3)", s, r)
		}
	}
	step("TASKS, CANDIDATES and RESULTS on 3 replicas")

	ex := filepath.Join(root, "examples", "function_minimization")
	const runID, iterations = "cluster-e2e", 200
	run(shoal, "seed", "--run", runID, "--config", filepath.Join(ex, "config.yaml"),
		"--evaluator", filepath.Join(ex, "evaluator.py"), "--iterations", strconv.Itoa(iterations),
		filepath.Join(ex, "initial_program.py"))
	store, err := runs.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	// iterationsAt polls until the run has folded at least n results (or is done).
	iterationsAt := func(n int64) (*protocol.RunState, *protocol.PlannerState) {
		t.Helper()
		for {
			st, _ := store.State(ctx, runID)
			ps, _ := store.Planner(ctx, runID)
			if ps != nil && ps.Status == protocol.RunFailed {
				t.Fatalf("run failed: %s", ps.StopReason)
			}
			if st != nil && (st.Iterations >= n || (ps != nil && ps.Status == protocol.RunDone)) {
				return st, ps
			}
			select {
			case <-ctx.Done():
				t.Fatalf("run %s: %d results not folded within 15 min (state %+v)", runID, n, st)
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	st, _ := iterationsAt(40)
	before := st.Iterations
	// Stop the server that leads RESULTS, so that the stream must elect another leader while
	// evaluators publish to it.
	info, err := js.Stream(ctx, names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	leader := info.CachedInfo().Cluster.Leader
	service := map[string]string{"nats-1": "nats", "nats-2": "nats-2", "nats-3": "nats-3"}[leader]
	if service == "" {
		t.Fatalf("RESULTS is led by %q, not one of the compose servers", leader)
	}
	compose("stop", "--timeout", "0", service)
	stopped := time.Now()
	step("%s (%s, the leader of RESULTS) stopped with no grace period at %d results", service, leader, before)

	st, _ = iterationsAt(before + 40)
	step("results keep flowing: %d more folded within %.1fs of the stop", st.Iterations-before, time.Since(stopped).Seconds())
	if info, err := js.Stream(ctx, names.ResultsStream()); err != nil {
		t.Fatal(err)
	} else if l := info.CachedInfo().Cluster.Leader; l == leader || l == "" {
		t.Errorf("RESULTS leader after the stop: %q, want another server", l)
	} else {
		step("RESULTS now led by %s", l)
	}

	var ps *protocol.PlannerState
	for {
		st, ps = iterationsAt(iterations)
		if ps != nil && ps.Status == protocol.RunDone {
			break
		}
		time.Sleep(time.Second)
	}
	step("run done on two servers: %d iterations, best %.4f from seed %.4f", st.Iterations, st.BestScore, st.SeedScore)

	results, err := clusterResults(ctx, js, names, runID)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	tasks := map[int64]bool{}
	var duplicates, stray int
	for _, r := range results {
		if seen[r.ID]++; seen[r.ID] > 1 {
			duplicates++
			continue
		}
		if r.Candidate.IsSeed() {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimPrefix(r.Candidate.TaskID, runID+".t"), 10, 64)
		if err != nil || n < 1 || n > ps.Issued {
			stray++
			continue
		}
		tasks[n] = true
	}
	var lost []int64
	for n := int64(1); n <= ps.Issued; n++ {
		if !tasks[n] {
			lost = append(lost, n)
		}
	}
	step("RESULTS audit: %d messages, %d distinct, %d tasks issued, lost %d, duplicates %d, stray %d",
		len(results), len(seen), ps.Issued, len(lost), duplicates, stray)
	if len(lost) > 0 || duplicates > 0 || stray > 0 {
		t.Errorf("after the failover: lost tasks %v, %d duplicates, %d stray results; want none", lost, duplicates, stray)
	}
	if st.Iterations != int64(len(tasks)) {
		t.Errorf("the archive counted %d iterations, RESULTS holds %d tasks' results", st.Iterations, len(tasks))
	}
}

// clusterResults reads every result of run from RESULTS.
func clusterResults(ctx context.Context, js jetstream.JetStream, names protocol.Names, run string) ([]protocol.Result, error) {
	cons, err := js.OrderedConsumer(ctx, names.ResultsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{names.Result(run)}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		return nil, err
	}
	var out []protocol.Result
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			return nil, err
		}
		n, pending := 0, uint64(0)
		for msg := range batch.Messages() {
			n++
			var r protocol.Result
			if err := protocol.Decode(msg.Data(), &r); err != nil {
				return nil, fmt.Errorf("undecodable result: %w", err)
			}
			out = append(out, r)
			if md, err := msg.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, err
		}
		if n == 0 || pending == 0 {
			return out, nil
		}
	}
}

// checkComposeUI asks the compose deployment's web UI for its runs with the seeder's
// credentials, as a browser would, until it shows run with st's evaluations and best score
// (the UI folds RESULTS on its own, so it may be a moment behind the archive); a request
// without them must be refused.
func checkComposeUI(t *testing.T, port int, stateDir, run string, st *protocol.RunState) {
	t.Helper()
	password, err := os.ReadFile(filepath.Join(stateDir, "credentials", "seeder.password"))
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/api/runs", port)
	get := func(auth bool) (*http.Response, error) {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		if auth {
			req.SetBasicAuth("seeder", strings.TrimSpace(string(password)))
		}
		return http.DefaultClient.Do(req)
	}
	type summary struct {
		Run         string  `json:"run"`
		Evaluations int64   `json:"evaluations"`
		Best        float64 `json:"best"`
	}
	var last string
	deadline := time.Now().Add(2 * time.Minute)
	for ; time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		resp, err := get(true)
		if err != nil {
			last = err.Error()
			continue
		}
		var runs []summary
		err = json.NewDecoder(resp.Body).Decode(&runs)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			last = fmt.Sprintf("%s: %v", resp.Status, err)
			continue
		}
		last = fmt.Sprintf("%+v", runs)
		for _, r := range runs {
			if r.Run == run && r.Best == st.BestScore {
				resp, err := get(false)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("the UI without credentials answered %s; want 401", resp.Status)
				}
				return
			}
		}
	}
	t.Fatalf("the compose UI never showed run %s with best %.4f; last answer: %s", run, st.BestScore, last)
}
