package daemon

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
)

type fakeService struct {
	nc  *nats.Conn
	err error
}

func (f *fakeService) Run(context.Context) error { return f.err }

// command is a service with one flag of its own, --workers; built records what was built.
func command(built **fakeService, workers *int, runErr error) Command {
	return Command{Name: "fake", Role: natsauth.Planner, Version: "test", Flags: func(fs *flag.FlagSet) Build {
		fs.IntVar(workers, "workers", 1, "workers (env SHOAL_WORKERS)")
		return func(o Options, nc *nats.Conn, log *slog.Logger) (Service, error) {
			*built = &fakeService{nc: nc, err: runErr}
			return *built, nil
		}
	}}
}

func env(vars map[string]string) func(string) string { return func(k string) string { return vars[k] } }

// TestOptionsFromFlagsAndEnvironment: every flag, the service's own and the common ones,
// defaults to its SHOAL_* variable, and the command line wins.
func TestOptionsFromFlagsAndEnvironment(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		vars        map[string]string
		wantURL     string
		wantPrefix  string
		wantWorkers int
		wantUser    string
	}{
		{"defaults", nil, nil, "nats://127.0.0.1:4222", "shoal", 1, "planner"},
		{"environment", nil, map[string]string{"SHOAL_NATS_URL": "nats://bus:4222", "SHOAL_PREFIX": "x", "SHOAL_WORKERS": "4"}, "nats://bus:4222", "x", 4, "planner"},
		{"flags win", []string{"--nats-url", "nats://flag:4222", "--workers", "8", "--user", "admin"},
			map[string]string{"SHOAL_NATS_URL": "nats://bus:4222", "SHOAL_WORKERS": "4"}, "nats://flag:4222", "shoal", 8, "admin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var built *fakeService
			var workers int
			t.Setenv("SHOAL_NATS_USER", "")
			t.Setenv("NATS_USER", "")
			o, _, err := parse(command(&built, &workers, nil), flag.NewFlagSet("fake", flag.ContinueOnError), tt.args, env(tt.vars))
			if err != nil {
				t.Fatal(err)
			}
			if o.NATSURL != tt.wantURL || o.Names.Prefix != tt.wantPrefix || workers != tt.wantWorkers || o.Auth.User != tt.wantUser {
				t.Errorf("url %q prefix %q workers %d user %q, want %q %q %d %q", o.NATSURL, o.Names.Prefix, workers, o.Auth.User, tt.wantURL, tt.wantPrefix, tt.wantWorkers, tt.wantUser)
			}
			if o.Auth.InboxPrefix != natsauth.Planner.InboxPrefix() {
				t.Errorf("inbox prefix %q, want the role's", o.Auth.InboxPrefix)
			}
		})
	}
}

// TestExitCodes: bad options are 2 and say which variable or flag; a service that fails is 1;
// one that stops cleanly is 0, and its connection is drained and closed either way.
func TestExitCodes(t *testing.T) {
	e := natstest.StartTestEnv(t)
	tests := []struct {
		name     string
		args     []string
		vars     map[string]string
		runErr   error
		want     int
		wantSays string
	}{
		{"bad environment", nil, map[string]string{"SHOAL_WORKERS": "many"}, nil, 2, "SHOAL_WORKERS"},
		{"bad flag", []string{"--nope"}, nil, nil, 2, "nope"},
		{"stray argument", []string{"extra"}, nil, nil, 2, "unexpected arguments"},
		{"service fails", []string{"--nats-url", e.Server.URL()}, nil, errors.New("seeds consumer deleted"), 1, "seeds consumer deleted"},
		{"clean stop", []string{"--nats-url", e.Server.URL()}, nil, nil, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var built *fakeService
			var workers int
			var out bytes.Buffer
			if got := run(command(&built, &workers, tt.runErr), tt.args, &out, env(tt.vars)); got != tt.want {
				t.Errorf("exit %d, want %d; output %s", got, tt.want, out.String())
			}
			if !strings.Contains(out.String(), tt.wantSays) {
				t.Errorf("output %q does not mention %q", out.String(), tt.wantSays)
			}
			if built != nil && !built.nc.IsClosed() {
				t.Error("the service's connection is still open after it stopped")
			}
		})
	}
}
