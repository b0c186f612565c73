package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// shoalErr runs the CLI against the stack's server as the admin and returns what it printed
// and its error.
func (s *stack) shoalErr(args ...string) (string, error) {
	s.t.Helper()
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetArgs(append([]string{"--nats-url", s.env.Server.URL(),
		"--user", "admin", "--password-file", natsauth.PasswordFile(s.env.CredentialsDir, natsauth.Admin)}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

// TestCommandsOnUnknownAndFinishedRuns: a typo'd run is reported as a run that does not
// exist, with the runs there are, never as a run without a program yet; pause and resume
// refuse a finished run with its status, and nothing steers a failed one.
func TestCommandsOnUnknownAndFinishedRuns(t *testing.T) {
	s := startStack(t)
	s.seed("fin", exampleDir(t), fmt.Sprintf(mutateConfig, 4))
	s.waitDone("fin", 2*time.Minute)
	s.seed("broken", brokenProblem(t, brokenEvaluators[1].evaluator), fmt.Sprintf(mutateConfig, 4))
	s.waitFor("broken", "failed", time.Minute, func(pst *protocol.PlannerState, _ *protocol.RunState) bool {
		return pst.Status == protocol.RunFailed
	})

	tests := []struct {
		args    []string
		wantErr error
		want    string // in the error
	}{
		{[]string{"best", "--run", "nosuch"}, errNoSuchRun, "no such run: nosuch (runs: broken, fin)"},
		{[]string{"run", "pause", "nosuch"}, errNoSuchRun, "no such run: nosuch (runs: broken, fin)"},
		{[]string{"run", "pause", "fin"}, errRunFinished, "run fin is done (max_iterations (4) reached)"},
		{[]string{"run", "resume", "fin"}, errRunFinished, "run fin is done"},
		{[]string{"run", "pause", "broken"}, errRunFinished, "run broken failed (the seed failed to evaluate"},
		{[]string{"run", "extend", "broken", "--iterations", "5"}, errRunFinished, "run broken failed"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := s.shoalErr(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("shoal %s = %v, want an error saying %q\n%s", strings.Join(tt.args, " "), err, tt.want, out)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v is not %v", err, tt.wantErr)
			}
			if strings.Contains(out, "paused") || strings.Contains(out, "resumed") {
				t.Errorf("shoal %s reported a change:\n%s", strings.Join(tt.args, " "), out)
			}
		})
	}
	if ctl, err := s.client.runs.Control(context.Background(), "fin"); err != nil || ctl.Paused {
		t.Errorf("the finished run's control = %+v, %v; want not paused", ctl, err)
	}
	// Extending a run that stopped at its budget is still what extend is for.
	if out := s.shoal("run", "extend", "fin", "--iterations", "2"); !strings.Contains(out, "budget: 6 iterations") {
		t.Errorf("extend of a done run printed %q", out)
	}
	s.waitDone("fin", time.Minute)

	// shoal watch with no run: of several active runs (paused ones count), the latest started.
	for _, run := range []string{"act-a", "act-b"} {
		s.seed(run, exampleDir(t), fmt.Sprintf(mutateConfig, 1000))
		s.shoal("run", "pause", run)
	}
	run, why, err := s.client.activeRun(context.Background())
	if err != nil || run != "act-b" || why != "the latest started of 2 active runs (also act-a)" {
		t.Errorf("activeRun = %q, %q, %v; want act-b, the latest started of 2", run, why, err)
	}
}

// TestWatchFollowsARunToItsEnd: `shoal watch` with no run picks the only active one and says
// so, prints plain lines into a pipe (no carriage returns), shows a pause, and ends with the
// run: 0 when it is done, the reason when it failed.
func TestWatchFollowsARunToItsEnd(t *testing.T) {
	s := startStack(t)
	s.seed("w1", exampleDir(t), fmt.Sprintf(mutateConfig, 40))
	s.shoal("run", "pause", "w1") // held until the watch has seen it, so the test sees a live run

	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		cmd := rootCmd()
		cmd.SetArgs([]string{"--nats-url", s.env.Server.URL(), "--user", "admin",
			"--password-file", natsauth.PasswordFile(s.env.CredentialsDir, natsauth.Admin), "watch", "--every", "100ms"})
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		done <- cmd.ExecuteContext(context.Background())
	}()
	waitOutput(t, &out, "paused", time.Minute)
	s.shoal("run", "resume", "w1")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shoal watch = %v, want nil for a run that is done\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("shoal watch did not end with the run:\n%s", out.String())
	}
	got := out.String()
	t.Logf("shoal watch printed:\n%s", got)
	for _, want := range []string{
		"watching run w1, the only active run\n",
		" · paused · best ",
		"run w1 done (max_iterations (40) reached): 40 iterations, ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("shoal watch did not print %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^w1: [0-9]+/40 evaluations \([0-9]+%\) · `).MatchString(got) {
		t.Errorf("shoal watch printed no count against the budget")
	}
	if strings.Contains(got, "\r") {
		t.Errorf("shoal watch redrew a bar into a pipe")
	}
	var lines int
	for _, l := range strings.Split(got, "\n") {
		if strings.HasPrefix(l, "w1: ") && strings.Contains(l, " failed") && strings.Contains(l, "/s · ") {
			lines++
		}
	}
	if lines < 2 {
		t.Errorf("shoal watch printed %d progress lines with rate, best and failures; want ≥ 2", lines)
	}

	s.seed("wb", brokenProblem(t, brokenEvaluators[1].evaluator), fmt.Sprintf(mutateConfig, 10))
	out2, err := s.shoalErr("watch", "wb")
	if !errors.Is(err, errRunFailed) || !strings.Contains(err.Error(), "no_such_module_anywhere") {
		t.Errorf("shoal watch on a failing run = %v, want the run failed with its reason\n%s", err, out2)
	}
	if out2, err := s.shoalErr("watch"); err == nil || !strings.Contains(err.Error(), "no run is active (w1 done, wb failed)") {
		t.Errorf("shoal watch with every run ended = %v, want a refusal naming the runs\n%s", err, out2)
	}
	if out2, err := s.shoalErr("watch", "nosuch"); !errors.Is(err, errNoSuchRun) {
		t.Errorf("shoal watch nosuch = %v, want %v\n%s", err, errNoSuchRun, out2)
	}
}

// waitOutput waits until out holds want.
func waitOutput(t *testing.T, out *syncBuffer, want string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q after %s in:\n%s", want, limit, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startUpRun runs `shoal up` on dir in the background with state and args, and returns its
// output and a function that interrupts it (as Ctrl-C does) and returns its error.
func startUpRun(t *testing.T, dir, state string, args ...string) (*syncBuffer, func() error) {
	t.Helper()
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := rootCmd()
	cmd.SetArgs(append([]string{"up", dir, "--listen", "127.0.0.1:0", "--state-dir", state, "--gpus", "none"}, args...))
	cmd.SetOut(out)
	cmd.SetErr(out)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(2 * time.Minute):
				err = fmt.Errorf("shoal up did not stop within 2 minutes of an interrupt")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return out, stop
}

// upURL is the NATS URL `shoal up` says it serves on.
func upURL(t *testing.T, out *syncBuffer) string {
	t.Helper()
	waitOutput(t, out, "; logs in ", time.Minute)
	_, rest, _ := strings.Cut(out.String(), " up on ")
	url, _, _ := strings.Cut(rest, ";")
	return url
}

// TestUpStaysAfterTheRunWithStay: with --stay, up keeps serving once the budget is spent, so
// other terminals still reach the run, until it is interrupted; then it exits 0.
func TestUpStaysAfterTheRunWithStay(t *testing.T) {
	state := t.TempDir()
	out, stop := startUpRun(t, exampleDir(t), state, "--backend", "mutate", "--iterations", "5", "--run", "stay", "--stay")
	url := upURL(t, out)
	waitOutput(t, out, "run stay done (max_iterations (5) reached)", 2*time.Minute)
	waitOutput(t, out, "run stay ended; still serving on "+url, time.Minute)
	time.Sleep(time.Second) // up would have exited by now without --stay
	status, err := runShoal("status", "--nats-url", url, "--state-dir", state)
	if err != nil || !strings.Contains(status, "done") || !strings.Contains(status, "5/5") {
		t.Errorf("shoal status after the run = %v, want the done run\n%s", err, status)
	}
	if best, err := runShoal("best", "--nats-url", url, "--state-dir", state); err != nil || !strings.Contains(best, "def search") {
		t.Errorf("shoal best after the run = %v\n%s", err, best)
	}
	if err := stop(); err != nil {
		t.Errorf("shoal up --stay interrupted = %v, want nil\n%s", err, out.String())
	}
}

// TestUpReportsTheFirstErrorAlone: what stops up is what the user reads, once, and nothing
// that only followed from it (services cancelled, connections closed) is reported.
func TestUpReportsTheFirstErrorAlone(t *testing.T) {
	tests := []struct {
		name   string
		config string // config.yaml of the problem; "" keeps the example's
		args   []string
		env    string // SHOAL_PYTHON
		want   string // the error
	}{
		{"a bad --gpus", "", []string{"--gpus", "bogus"}, "", `invalid generator config: --gpus: declared gpus "bogus"`},
		{"a service that cannot start", "", nil, "/nonexistent/python3", `evaluator: python interpreter "/nonexistent/python3" does not run`},
		{"a bad config", "max_iterations: 5\ndatabase:\n  exploration_ratio: 1.5\n", nil, "", "config: database.exploration_ratio: 1.5 is outside [0, 1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("SHOAL_PYTHON", tt.env)
			}
			dir := exampleDir(t)
			if tt.config != "" {
				if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(tt.config), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			out, err := shoalUp(t, dir, append([]string{"--backend", "mutate", "--iterations", "1000"}, tt.args...)...)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Count(err.Error(), tt.want) != 1 {
				t.Fatalf("shoal up = %v, want the error %q once\n%s", err, tt.want, out)
			}
			for _, bad := range []string{"ERROR", "context canceled", "connection closed", "service stopped"} {
				if strings.Contains(out, bad) || strings.Contains(err.Error(), bad) {
					t.Errorf("up printed %q besides its error:\n%s\nerror: %v", bad, out, err)
				}
			}
		})
	}
}

// TestUpWarnsOfAConfigTypoOnce: a typo'd key is a warning up prints once, not once from the
// CLI and again from the archive's log.
func TestUpWarnsOfAConfigTypoOnce(t *testing.T) {
	dir := exampleDir(t)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("max_iterations: 3\nmax_iteratons: 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := shoalUp(t, dir, "--backend", "mutate")
	if err != nil {
		t.Fatalf("shoal up: %v\n%s", err, out)
	}
	if n := strings.Count(out, "max_iteratons"); n != 1 {
		t.Errorf("up warned of the typo %d times, want once:\n%s", n, out)
	}
	if !strings.Contains(out, "warning: config: max_iteratons: unknown key, ignored (did you mean max_iterations?)") {
		t.Errorf("up did not warn of the typo:\n%s", out)
	}
}
