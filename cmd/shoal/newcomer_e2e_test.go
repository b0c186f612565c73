package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
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
}
