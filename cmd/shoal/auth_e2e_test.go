package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-run/shoal/pkg/natsauth"
)

// TestUpMakesCredentialsAndTheCLIFindsThem runs `shoal up` as a user would and checks the
// whole credentials story: up makes one password per role, private to its user; anonymous
// clients are refused; the CLI finds the admin's and the seeder's passwords in the state dir
// (`shoal seed` starts a run as the seeder); elsewhere it is refused with a hint; and a
// restarted up keeps the same passwords.
func TestUpMakesCredentialsAndTheCLIFindsThem(t *testing.T) {
	state := t.TempDir()
	url, stop := startUp(t, state)
	creds := credentialsDir(state)
	for _, r := range natsauth.Roles() {
		st, err := os.Stat(natsauth.PasswordFile(creds, r))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s password file: mode %o, want 600", r, st.Mode().Perm())
		}
	}
	if st, err := os.Stat(creds); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("credentials dir: %v, want mode 700", st.Mode().Perm())
	}

	if nc, err := nats.Connect(url, nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("anonymous connect: got %v, want %v", err, nats.ErrAuthorization)
	}

	example := exampleDir(t)
	config := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, mutateConfig, 3), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runShoal("seed", "--nats-url", url, "--state-dir", state, "--run", "auth", "--config", config,
		"--evaluator", filepath.Join(example, "evaluator.py"), "--program", filepath.Join(example, "initial_program.py"))
	if err != nil {
		t.Fatalf("shoal seed as the seeder: %v\n%s", err, out)
	}
	if out, err := runShoal("status", "--nats-url", url, "--state-dir", state, "--run", "auth"); err != nil || !strings.Contains(out, "auth") {
		t.Fatalf("shoal status as the admin: %v\n%s", err, out)
	}
	out, err = runShoal("status", "--nats-url", url, "--state-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "Authorization Violation") || !strings.Contains(err.Error(), "--state-dir") {
		t.Fatalf("status without credentials: got %v, want an authorization violation with a hint\n%s", err, out)
	}

	before, err := natsauth.LoadOrCreate(creds)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	url, _ = startUp(t, state)
	after, err := natsauth.LoadOrCreate(creds)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Error("a restarted up made new passwords")
	}
	if out, err := runShoal("status", "--nats-url", url, "--state-dir", state, "--run", "auth"); err != nil || !strings.Contains(out, "auth") {
		t.Fatalf("shoal status after a restart: %v\n%s", err, out)
	}
}

// TestUpListensBeyondLoopbackOnlyWithTLS: --listen 0.0.0.0 without a certificate is refused
// with a reason; with one, clients need the CA to connect and then work as before.
func TestUpListensBeyondLoopbackOnlyWithTLS(t *testing.T) {
	out, err := runShoal("up", "--no-seed", "--listen", "0.0.0.0:0", "--state-dir", t.TempDir(), "--gpus", "none")
	if err == nil || !strings.Contains(err.Error(), "without TLS") {
		t.Fatalf("up on 0.0.0.0 without TLS: got %v, want a refusal naming TLS\n%s", err, out)
	}

	ca, cert, key := selfSignedCert(t)
	state := t.TempDir()
	port := freePort(t)
	url, _ := startUpWith(t, state, fmt.Sprintf("0.0.0.0:%d", port), []string{"--tls-ca", ca}, "--tls-cert", cert, "--tls-key", key)
	if out, err := runShoal("status", "--nats-url", url, "--state-dir", state); err == nil {
		t.Fatalf("status without the CA connected to a TLS server:\n%s", out)
	}
	if out, err := runShoal("status", "--nats-url", url, "--state-dir", state, "--tls-ca", ca); err != nil {
		t.Fatalf("status over TLS: %v\n%s", err, out)
	}
}

func startUp(t *testing.T, state string) (string, func()) {
	return startUpWith(t, state, fmt.Sprintf("127.0.0.1:%d", freePort(t)), nil)
}

// startUpWith runs `shoal up --no-seed` on listen and returns its URL once the CLI gets an
// answer (with clientArgs), and a function that stops it (called at the test's end too).
func startUpWith(t *testing.T, state, listen string, clientArgs []string, extra ...string) (string, func()) {
	t.Helper()
	_, port, _ := net.SplitHostPort(listen)
	url := "nats://127.0.0.1:" + port
	ctx, cancel := context.WithCancel(context.Background())
	// up writes from its services' goroutines too: a file takes concurrent writes.
	out, err := os.Create(filepath.Join(t.TempDir(), "up.out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	printed := func() string { data, _ := os.ReadFile(out.Name()); return string(data) }
	cmd := rootCmd()
	cmd.SetArgs(append([]string{"up", "--no-seed", "--listen", listen, "--state-dir", state, "--gpus", "none"}, extra...))
	cmd.SetOut(out)
	cmd.SetErr(out)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("shoal up: %v\n%s", err, printed())
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(time.Minute)
	for {
		// Ready once the admin gets an answer: the streams and buckets exist then.
		if _, err := runShoal(append([]string{"status", "--nats-url", url, "--state-dir", state}, clientArgs...)...); err == nil {
			return url, stop
		}
		select {
		case err := <-done:
			done <- err // for stop
			t.Fatalf("shoal up ended: %v\n%s", err, printed())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("shoal up not answering on %s after a minute:\n%s", listen, printed())
		}
	}
}

// runShoal runs the CLI in-process and returns what it printed.
func runShoal(args ...string) (string, error) {
	var out syncBuffer
	cmd := rootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	return out.String(), err
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// selfSignedCert writes a CA and a server certificate for 127.0.0.1 signed by it, and returns
// the paths of the CA, the certificate and its key.
func selfSignedCert(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, kind string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shoal test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}
