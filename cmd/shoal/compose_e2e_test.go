//go:build e2ecompose

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
)

// TestCompose runs the deployment of compose.yaml as the README's "docker compose" section
// shows it, from the images `make images` built: up with two generators, a run seeded from the
// host with `shoal seed`, a program added with a plain NATS publish as the seeder, the run to
// its budget with a better best than its seed, and down with nothing left behind. Each step
// prints its outcome and time. `make e2e-compose` runs it; it is not part of `make test`.
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
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	env := append(os.Environ(),
		"SHOAL_STATE_DIR="+t.TempDir(), // the credentials this deployment gets as secrets
		"SHOAL_NATS_PORT="+strconv.Itoa(port),
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

	compose("up", "-d", "--wait", "--scale", "generator=2")
	ps := compose("ps", "--format", "{{.Service}} {{.Health}}")
	step("docker compose up -d --wait --scale generator=2:\n%s", ps)
	if n := strings.Count(ps, "generator healthy"); n != 2 {
		t.Fatalf("%d healthy generators, want 2", n)
	}

	ex := filepath.Join(root, "examples", "function_minimization")
	const runID, iterations = "compose-e2e", 120
	out := run(shoal, "seed", "--run", runID, "--config", filepath.Join(ex, "config.yaml"),
		"--evaluator", filepath.Join(ex, "evaluator.py"), "--iterations", strconv.Itoa(iterations),
		filepath.Join(ex, "initial_program.py"))
	step("shoal seed: %s", strings.TrimSpace(out))

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
		step("plain NATS publish as seeder to %s: the archive took it (%s)", names.Seed(runID), ev.Message)
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
	var st *protocol.RunState
	var firstResult time.Duration
	seeded := time.Now()
	for {
		ps, err := store.Planner(ctx, runID)
		if err != nil && ctx.Err() != nil {
			t.Fatalf("run %s not done within 15 min: %v", runID, err)
		}
		if s, err := store.State(ctx, runID); err == nil {
			st = s
			if firstResult == 0 && s.Iterations > 0 {
				firstResult = time.Since(seeded)
				step("first generated candidate folded %.1fs after seeding", firstResult.Seconds())
			}
		}
		if ps != nil && (ps.Status == protocol.RunDone || ps.Status == protocol.RunFailed) {
			if ps.Status == protocol.RunFailed {
				t.Fatalf("run failed: %s", ps.StopReason)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("run %s not done within 15 min (state %+v)", runID, st)
		case <-time.After(time.Second):
		}
	}
	elapsed := time.Since(seeded)
	step("run done in %.1fs: %d iterations (%.1f/s), %d seeds, %d failed, best %.4f from seed %.4f",
		elapsed.Seconds(), st.Iterations, float64(st.Iterations)/elapsed.Seconds(), st.Seeds, st.Failed, st.BestScore, st.SeedScore)
	if st.Iterations < iterations {
		t.Errorf("iterations = %d, want ≥ %d", st.Iterations, iterations)
	}
	if st.Seeds < 2 {
		t.Errorf("seeds = %d, want 2 (shoal seed and the plain publish)", st.Seeds)
	}
	if !(st.BestScore > st.SeedScore) {
		t.Errorf("best %.4f did not improve on the seed's %.4f", st.BestScore, st.SeedScore)
	}
	best := filepath.Join(t.TempDir(), "best.py")
	run(shoal, "best", "--run", runID, "-o", best)
	if b, err := os.ReadFile(best); err != nil || len(b) == 0 {
		t.Errorf("shoal best wrote %d bytes: %v", len(b), err)
	}
	step("shoal best -o: the best program written")
	step("shoal status:\n%s", run(shoal, "status"))
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
