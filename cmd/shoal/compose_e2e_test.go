//go:build e2ecompose

package main

import (
	"bytes"
	"context"
	"encoding/json"
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
