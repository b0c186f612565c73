// Package natstest starts a provisioned embedded JetStream server for integration tests.
package natstest

import (
	"context"
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
