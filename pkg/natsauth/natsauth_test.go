package natsauth_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
)

func TestMain(m *testing.M) { natstest.Main(m) }

var update = flag.Bool("update", false, "rewrite deploy/nats/nats-server.conf")

const deployConfig = "../../deploy/nats/nats-server.conf"

// TestAnonymousAndWrongPasswordsAreRefused: nobody reaches the bus without a role's password.
func TestAnonymousAndWrongPasswordsAreRefused(t *testing.T) {
	env := natstest.StartTestEnv(t, natstest.WithRoles())
	for _, tc := range []struct {
		name string
		opts []nats.Option
	}{
		{"anonymous", nil},
		{"wrong password", []nats.Option{nats.UserInfo("planner", "guess")}},
		{"another role's password", []nats.Option{nats.UserInfo("admin", env.Passwords[natsauth.Seeder])}},
		{"unknown user", []nats.Option{nats.UserInfo("root", env.Passwords[natsauth.Admin])}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(env.Server.URL(), append(tc.opts, nats.NoReconnect())...)
			if err == nil {
				nc.Close()
				t.Fatal("connected; want an authorization violation")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("got %v, want %v", err, nats.ErrAuthorization)
			}
		})
	}
}

// forbidden lists, per role, what its service never does and so may not: a publish and a
// subscription outside its subjects.
var forbidden = map[natsauth.Role]struct{ pub, sub string }{
	natsauth.Planner:   {pub: "shoal.seed.r", sub: "shoal.candidate.r"},
	natsauth.Generator: {pub: "shoal.seed.r", sub: "shoal.result.r"},
	natsauth.Evaluator: {pub: "shoal.task.r.m", sub: "shoal.seed.r"},
	natsauth.Archive:   {pub: "shoal.task.r.m", sub: "_INBOX.planner.x"},
	natsauth.Seeder:    {pub: "shoal.result.r", sub: "shoal.task.>"},
}

// allowed is a publish each role's service makes, which JetStream must store.
var allowed = map[natsauth.Role]string{
	natsauth.Planner:   "shoal.task.r.m",
	natsauth.Generator: "shoal.candidate.r",
	natsauth.Evaluator: "shoal.result.r",
	natsauth.Archive:   "shoal.event.r.best",
	natsauth.Seeder:    "shoal.seed.r",
}

// TestRolesAreRefusedWhatTheirServicesNeverDo checks, for every role but the admin, that a
// forbidden publish, a forbidden subscription, deleting or purging a stream, and deleting a
// KV bucket or the object store each fail with a permission error and change nothing, on the
// embedded server and on a nats-server started from deploy/nats/nats-server.conf.
func TestRolesAreRefusedWhatTheirServicesNeverDo(t *testing.T) {
	for _, srv := range []string{"embedded", "config file"} {
		t.Run(srv, func(t *testing.T) {
			var env *testServer
			if srv == "embedded" {
				e := natstest.StartTestEnv(t, natstest.WithRoles())
				env = &testServer{url: e.Server.URL(), passwords: e.Passwords, admin: e.JS}
			} else {
				env = startFromConfigFile(t)
			}
			n := protocol.NewNames("")
			for role, f := range forbidden {
				t.Run(string(role), func(t *testing.T) {
					c := env.dial(t, role)
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					defer cancel()

					if _, err := c.js.Publish(ctx, allowed[role], []byte("{}")); err != nil {
						t.Errorf("publish to %s: %v; the service needs it", allowed[role], err)
					}
					c.refused(t, "Publish to \""+f.pub+"\"", func(context.Context) error {
						return c.nc.Publish(f.pub, []byte("x"))
					})
					c.refused(t, "Subscription to \""+f.sub+"\"", func(context.Context) error {
						_, err := c.nc.SubscribeSync(f.sub)
						return err
					})
					c.refused(t, "$JS.API.STREAM.DELETE."+n.ResultsStream(), func(ctx context.Context) error {
						return c.js.DeleteStream(ctx, n.ResultsStream())
					})
					for _, s := range []string{n.TasksStream(), n.ResultsStream(), "KV_" + n.RunsBucket()} {
						c.refused(t, "$JS.API.STREAM.PURGE."+s, func(ctx context.Context) error {
							_, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE."+s, []byte("{}"))
							return err
						})
					}
					for _, bucket := range []string{n.RunsBucket(), n.GPULeasesBucket()} {
						c.refused(t, "$JS.API.STREAM.DELETE.KV_"+bucket, func(ctx context.Context) error {
							return c.js.DeleteKeyValue(ctx, bucket)
						})
					}
					c.refused(t, "$JS.API.STREAM.DELETE.OBJ_"+n.BundlesStore(), func(ctx context.Context) error {
						return c.js.DeleteObjectStore(ctx, n.BundlesStore())
					})
					c.refused(t, "$JS.API.STREAM.UPDATE."+n.ResultsStream(), func(ctx context.Context) error {
						_, err := c.js.UpdateStream(ctx, jetstream.StreamConfig{Name: n.ResultsStream(), Subjects: []string{n.AllResults()}, MaxMsgs: 1})
						return err
					})
				})
			}
			// Nothing was lost: every stream and bucket is still there, for the admin to see.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, s := range []string{n.ResultsStream(), n.TasksStream(), "KV_" + n.RunsBucket(), "KV_" + n.GPULeasesBucket(), "OBJ_" + n.BundlesStore()} {
				if _, err := env.admin.Stream(ctx, s); err != nil {
					t.Errorf("stream %s after the attempts: %v", s, err)
				}
			}
			// And the admin may delete what no service may.
			if err := env.admin.DeleteStream(ctx, n.ResultsStream()); err != nil {
				t.Errorf("admin deletes %s: %v", n.ResultsStream(), err)
			}
		})
	}
}

// TestDeployConfigIsCurrent: deploy/nats/nats-server.conf is ServerConfig for the default
// prefix (go test ./natsauth -run DeployConfig -update rewrites it).
func TestDeployConfigIsCurrent(t *testing.T) {
	want := natsauth.ServerConfig(protocol.NewNames(""))
	if *update {
		if err := os.WriteFile(deployConfig, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(deployConfig)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s is out of date: run `cd pkg && go test ./natsauth -run DeployConfig -update`", deployConfig)
	}
}

// TestConfigFileHasTheSameUsers: nats-server reads the config file into exactly the users
// and permissions that the embedded server gets, and refuses to start without a password.
func TestConfigFileHasTheSameUsers(t *testing.T) {
	pw := setPasswordEnv(t)
	opts, err := server.ProcessConfigFile(deployConfig)
	if err != nil {
		t.Fatal(err)
	}
	want := natsauth.Users(protocol.NewNames(""), pw)
	if len(opts.Users) != len(want) {
		t.Fatalf("got %d users, want %d", len(opts.Users), len(want))
	}
	for i, u := range opts.Users {
		if u.Username != want[i].Username || u.Password != want[i].Password {
			t.Errorf("user %d: got %s, want %s with its password", i, u.Username, want[i].Username)
		}
		if !reflect.DeepEqual(u.Permissions, want[i].Permissions) {
			t.Errorf("%s: permissions differ:\n got %+v\nwant %+v", u.Username, u.Permissions, want[i].Permissions)
		}
	}

	t.Setenv(natsauth.PasswordEnv(natsauth.Evaluator), "")
	os.Unsetenv(natsauth.PasswordEnv(natsauth.Evaluator))
	if _, err := server.ProcessConfigFile(deployConfig); err == nil || !strings.Contains(err.Error(), natsauth.PasswordEnv(natsauth.Evaluator)) {
		t.Errorf("without %s: got %v, want an error naming it", natsauth.PasswordEnv(natsauth.Evaluator), err)
	}
}

// TestCredentialsPersistPrivately: `shoal up` makes one password per role, readable by its
// user only, and finds the same ones when it starts again.
func TestCredentialsPersistPrivately(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "credentials")
	first, err := natsauth.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range natsauth.Roles() {
		pw := first[r]
		if len(pw) < 32 || seen[pw] {
			t.Errorf("%s: password %q is short or shared", r, pw)
		}
		seen[pw] = true
		st, err := os.Stat(natsauth.PasswordFile(dir, r))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %o, want 600", r, st.Mode().Perm())
		}
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %o, want 700", st.Mode().Perm())
	}
	if err := os.Chmod(natsauth.PasswordFile(dir, natsauth.Admin), 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := natsauth.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, again) {
		t.Errorf("passwords changed across restarts")
	}
	if st, _ := os.Stat(natsauth.PasswordFile(dir, natsauth.Admin)); st.Mode().Perm() != 0o600 {
		t.Errorf("a file readable by others was left so: mode %o", st.Mode().Perm())
	}
}

// testServer is a server with shoal's users, however it was started.
type testServer struct {
	url       string
	passwords map[natsauth.Role]string
	admin     jetstream.JetStream
}

// conn is a role's connection with the permission errors the server sent it.
type conn struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	errs chan error
}

func (s *testServer) dial(t *testing.T, role natsauth.Role) *conn {
	t.Helper()
	c := &conn{errs: make(chan error, 64)}
	a := natsx.Auth{User: string(role), Password: s.passwords[role], InboxPrefix: role.InboxPrefix()}
	opts, err := a.Options()
	if err != nil {
		t.Fatal(err)
	}
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case c.errs <- err:
		default:
		}
	}))
	if c.nc, err = nats.Connect(s.url, opts...); err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(c.nc.Close)
	if c.js, err = jetstream.New(c.nc); err != nil {
		t.Fatal(err)
	}
	return c
}

// refused runs op and wants the server to refuse it with a permission error naming want. A
// refused request gets no reply, so op is cancelled once the refusal arrives.
func (c *conn) refused(t *testing.T, want string, op func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- op(ctx) }()
	deadline := time.After(time.Minute)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), want) {
				cancel()
				<-done
				return
			}
		case <-deadline:
			cancel()
			t.Errorf("%s: not refused (the call returned %v)", want, <-done)
			return
		}
	}
}

// setPasswordEnv sets each role's password variable for the config file.
func setPasswordEnv(t *testing.T) map[natsauth.Role]string {
	pw := map[natsauth.Role]string{}
	for _, r := range natsauth.Roles() {
		pw[r] = "pw-" + string(r) + "-" + strings.Repeat("x", 8)
		t.Setenv(natsauth.PasswordEnv(r), pw[r])
	}
	return pw
}

// startFromConfigFile starts a server as nats-server would from deploy/nats/nats-server.conf
// (on a free port, storage in a temp dir), and provisions it as the admin.
func startFromConfigFile(t *testing.T) *testServer {
	t.Helper()
	pw := setPasswordEnv(t)
	opts, err := server.ProcessConfigFile(deployConfig)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.StoreDir, opts.NoSigs, opts.NoLog = "127.0.0.1", server.RANDOM_PORT, t.TempDir(), true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo("admin", pw[natsauth.Admin]))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := natsx.Reconcile(ctx, js, protocol.NewNames("")); err != nil {
		t.Fatal(err)
	}
	return &testServer{url: srv.ClientURL(), passwords: pw, admin: js}
}

// TestGeneratorRoleHoldsGPULeases: the lease path, which the end-to-end tests do not reach
// without GPUs, works as the generator role: claim, mark ready, renew, release.
func TestGeneratorRoleHoldsGPULeases(t *testing.T) {
	env := natstest.StartTestEnv(t, natstest.WithRoles())
	nc := env.ConnectAs(t, natsauth.Generator)
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kv, err := js.KeyValue(ctx, env.Names.GPULeasesBucket())
	if err != nil {
		t.Fatal(err)
	}
	inv, err := gpu.ParseDeclared("h", "2x24GiB")
	if err != nil {
		t.Fatal(err)
	}
	c, err := lease.New(kv, lease.Config{Host: "h", Holder: "g-1", Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l, err := c.Claim(ctx, inv, []gpu.Variant{{Name: "q4", NeedMiB: 20 * 1024}})
	if err != nil {
		t.Fatalf("claim as the generator: %v", err)
	}
	for _, step := range []struct {
		name string
		do   func(context.Context) error
	}{{"ready", l.Ready}, {"renew", l.Renew}, {"release", l.Release}} {
		if err := step.do(ctx); err != nil {
			t.Fatalf("%s as the generator: %v", step.name, err)
		}
	}
}

// TestEveryMadePasswordWorksInTheConfigFile: nats-server reads a variable's value in its config
// as config, so a password that starts with a digit was read as a number and the server
// refused to start (about one `shoal up` credentials directory in six).
func TestEveryMadePasswordWorksInTheConfigFile(t *testing.T) {
	for i := range 40 {
		pw, err := natsauth.LoadOrCreate(filepath.Join(t.TempDir(), fmt.Sprintf("credentials-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range natsauth.Roles() {
			t.Setenv(natsauth.PasswordEnv(r), pw[r])
		}
		opts, err := server.ProcessConfigFile(deployConfig)
		if err != nil {
			t.Fatalf("passwords %v: %v", pw, err)
		}
		for _, u := range opts.Users {
			if want := pw[natsauth.Role(u.Username)]; u.Password != want {
				t.Fatalf("%s: the server read password %q, want %q", u.Username, u.Password, want)
			}
		}
	}
}
