// Package natstest starts a provisioned embedded JetStream server for integration tests.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// TestEnv is a provisioned embedded JetStream server for integration tests.
type TestEnv struct {
	Server *natsx.Embedded
	// Conn is a connection that may do everything (the admin's, when the server has roles).
	Conn  *nats.Conn
	JS    jetstream.JetStream
	Names protocol.Names
	// Passwords of the roles, when the server was started WithRoles, and the directory
	// holding them (natsauth.PasswordFile).
	Passwords      map[natsauth.Role]string
	CredentialsDir string

	mu         sync.Mutex
	violations []string
}

// Option changes how StartTestEnv starts the server.
type Option func(*envOptions)

type envOptions struct{ roles bool }

// WithRoles starts the server with shoal's users and permissions (natsauth): anonymous clients
// are refused and each role gets only what its service needs. Conn is then the admin's;
// ConnectAs connects as a role.
func WithRoles() Option { return func(o *envOptions) { o.roles = true } }

// StartTestEnv starts an embedded server with storage in t.TempDir(), connects, provisions
// shoal's streams and buckets, and stops everything when the test ends. Without options the
// server has no users, for tests that are not about who may do what.
func StartTestEnv(t testing.TB, opts ...Option) *TestEnv {
	t.Helper()
	var o envOptions
	for _, opt := range opts {
		opt(&o)
	}
	names := protocol.NewNames("")
	env := &TestEnv{Names: names}
	cfg := natsx.EmbeddedConfig{StoreDir: t.TempDir(), MaxPayload: 8 << 20}
	var adminOpts []nats.Option
	if o.roles {
		env.CredentialsDir = t.TempDir()
		pw, err := natsauth.LoadOrCreate(env.CredentialsDir)
		if err != nil {
			t.Fatal(err)
		}
		env.Passwords = pw
		cfg.Users = natsauth.Users(names, pw)
		adminOpts = append(adminOpts, nats.UserInfo(string(natsauth.Admin), pw[natsauth.Admin]))
	}
	srv, err := natsx.StartEmbedded(cfg)
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	env.Server = srv
	t.Cleanup(srv.Shutdown)
	// Runs after every later cleanup: whatever a role was refused while the test ran is a
	// permission its service lacks.
	t.Cleanup(func() {
		env.mu.Lock()
		defer env.mu.Unlock()
		for _, v := range env.violations {
			t.Errorf("nats refused a service: %s", v)
		}
	})
	nc, err := srv.Connect("test", adminOpts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := natsx.Reconcile(ctx, js, names); err != nil {
		t.Fatalf("provision: %v", err)
	}
	env.Conn, env.JS = nc, js
	return env
}

// Auth returns the credentials of role on a server started WithRoles, with the role's inbox.
func (e *TestEnv) Auth(role natsauth.Role) natsx.Auth {
	return natsx.Auth{User: string(role), Password: e.Passwords[role], InboxPrefix: role.InboxPrefix()}
}

// Dial connects in-process as role, with extra options after the role's own.
func (e *TestEnv) Dial(role natsauth.Role, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := e.Auth(role).Options()
	if err != nil {
		return nil, err
	}
	return e.Server.Connect("test-"+string(role), append(opts, extra...)...)
}

// ConnectAs connects in-process as role, for a service under test. Every request or
// subscription the server refuses it is a test failure, reported when the test ends: the
// role lacks a permission its service needs. The caller closes the connection.
func (e *TestEnv) ConnectAs(t testing.TB, role natsauth.Role) *nats.Conn {
	t.Helper()
	nc, err := e.Dial(role, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			e.mu.Lock()
			e.violations = append(e.violations, fmt.Sprintf("%s: %v", role, err))
			e.mu.Unlock()
		}
	}))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	return nc
}

// Main runs a package's tests and fails them if any goroutine running NATS or shoal code is
// still alive 5 s after the last test: a server, connection or consumer a test forgot to stop.
// Use it as `func TestMain(m *testing.M) { natstest.Main(m) }`.
func Main(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left running after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to limit for every goroutine running NATS or shoal code to end and
// returns the stacks of those that did not.
func leakedGoroutines(limit time.Duration) string {
	deadline := time.Now().Add(limit)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			if strings.Contains(g, "leakedGoroutines") {
				continue
			}
			if strings.Contains(g, "github.com/nats-io/") || strings.Contains(g, "github.com/shoal-run/") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return strings.Join(leaked, "\n\n")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
