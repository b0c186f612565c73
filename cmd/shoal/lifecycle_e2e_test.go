package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// TestUpStopsWhenAServiceDies: `shoal up` runs its services as one group. When one dies (here
// the archive, whose seeds consumer is deleted under it) up stops the others and fails with
// that service's error, rather than going on without it.
func TestUpStopsWhenAServiceDies(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	state := t.TempDir()
	t.Setenv("TMPDIR", t.TempDir()) // the evaluator's cache
	cmd := rootCmd()
	cmd.SetArgs([]string{"up", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--state-dir", state, "--gpus", "none", "--no-seed"})
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&syncWriter{w: &out})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()

	names := protocol.NewNames("")
	var js jetstream.JetStream
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the archive's seeds consumer never appeared")
		}
		pw, err := os.ReadFile(natsauth.PasswordFile(credentialsDir(state), natsauth.Admin))
		if err != nil {
			continue
		}
		if js == nil {
			nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port), nats.UserInfo(string(natsauth.Admin), strings.TrimSpace(string(pw))))
			if err != nil {
				continue
			}
			defer nc.Close()
			if js, err = jetstream.New(nc); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := js.Consumer(ctx, names.SeedsStream(), names.ArchiveSeedsConsumer()); err == nil {
			break
		}
	}
	time.Sleep(200 * time.Millisecond) // the consumer is pulling
	if err := js.DeleteConsumer(ctx, names.SeedsStream(), names.ArchiveSeedsConsumer()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "archive") {
			t.Errorf("shoal up = %v, want the archive's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("shoal up went on after the archive died:\n%s", out.String())
	}
}
