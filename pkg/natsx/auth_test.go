package natsx_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-run/shoal/pkg/natsx"
)

// TestAuthFlagsFallBackOnTheEnvironment: a service started with only SHOAL_NATS_PASSWORD logs
// in as its role; natscli's variables work too; flags win over both.
func TestAuthFlagsFallBackOnTheEnvironment(t *testing.T) {
	t.Setenv("SHOAL_NATS_PASSWORD", "s3cret")
	t.Setenv("NATS_CA", "/etc/ca.pem")
	var a natsx.Auth
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	a.AddFlags(fs, "planner")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if a.User != "planner" || a.Password != "s3cret" || a.TLSCA != "/etc/ca.pem" {
		t.Errorf("from the environment: got %+v", a)
	}

	t.Setenv("SHOAL_NATS_USER", "admin")
	var b natsx.Auth
	fs = flag.NewFlagSet("test", flag.ContinueOnError)
	b.AddFlags(fs, "planner")
	if err := fs.Parse([]string{"--password-file", "/run/secrets/pw"}); err != nil {
		t.Fatal(err)
	}
	if b.User != "admin" || b.PasswordFile != "/run/secrets/pw" {
		t.Errorf("SHOAL_NATS_USER and a flag: got %+v", b)
	}
}

func TestAuthOptionsRefuseWhatCannotWork(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		auth natsx.Auth
		want string // "" for no error
	}{
		{"nothing: anonymous", natsx.Auth{}, ""},
		{"user and password", natsx.Auth{User: "planner", Password: "x"}, ""},
		{"password file", natsx.Auth{User: "planner", PasswordFile: pwFile}, ""},
		{"missing password file", natsx.Auth{User: "planner", PasswordFile: pwFile + ".gone"}, "no such file"},
		{"password without user", natsx.Auth{Password: "x"}, "needs a user"},
		{"password and password file", natsx.Auth{User: "u", Password: "x", PasswordFile: pwFile}, "not both"},
		{"creds and password", natsx.Auth{Creds: pwFile, User: "u", Password: "x"}, "not both"},
		{"missing creds file", natsx.Auth{Creds: pwFile + ".gone"}, "no such file"},
		{"certificate without key", natsx.Auth{TLSCert: "c.pem"}, "together"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.auth.Options()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestEmbeddedServerBeyondLoopbackNeedsUsers: a server anyone on the network could use is
// refused; on loopback, tests may still run one without users.
func TestEmbeddedServerBeyondLoopbackNeedsUsers(t *testing.T) {
	_, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: t.TempDir(), Host: "0.0.0.0"})
	if err == nil || !strings.Contains(err.Error(), "without users") {
		t.Fatalf("got %v, want a refusal to listen on 0.0.0.0 without users", err)
	}
	for _, host := range []string{"127.0.0.1", "localhost", "::1", "[::1]"} {
		if !natsx.IsLoopback(host) {
			t.Errorf("IsLoopback(%q) = false", host)
		}
	}
	for _, host := range []string{"0.0.0.0", "::", "10.0.0.1", "example.com", ""} {
		if natsx.IsLoopback(host) {
			t.Errorf("IsLoopback(%q) = true", host)
		}
	}
}
