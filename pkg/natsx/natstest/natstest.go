// Package natstest starts a provisioned embedded JetStream server for integration tests.
package natstest

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// TestEnv is a provisioned embedded JetStream server for integration tests.
type TestEnv struct {
	Server *natsx.Embedded
	Conn   *nats.Conn
	JS     jetstream.JetStream
	Names  protocol.Names
}

// StartTestEnv starts an embedded server with storage in t.TempDir(), connects, provisions
// shoal's streams and buckets, and stops everything when the test ends.
func StartTestEnv(t testing.TB) *TestEnv {
	t.Helper()
	srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: t.TempDir(), MaxPayload: 8 << 20})
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := srv.Connect("test")
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	names := protocol.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := natsx.Provision(ctx, js, names); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return &TestEnv{Server: srv, Conn: nc, JS: js, Names: names}
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
