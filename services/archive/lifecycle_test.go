package archive_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/services/archive"
)

// TestDeadSeedsConsumerStopsTheArchive: when the archive's seeds consumer dies (here it is
// deleted under it), the whole replica stops with the error, so that it is restarted, rather
// than folding results on while it silently takes no more seeds.
func TestDeadSeedsConsumerStopsTheArchive(t *testing.T) {
	e := natstest.StartTestEnv(t)
	svc, err := archive.New(archive.Config{Names: e.Names, ID: "archive-test"}, e.Conn, slog.New(slog.NewTextHandler(logOut(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var cons jetstream.Consumer
	for cons == nil {
		cons, _ = e.JS.Consumer(ctx, e.Names.SeedsStream(), e.Names.ArchiveSeedsConsumer())
		select {
		case err := <-done:
			t.Fatalf("archive stopped before its seeds consumer existed: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	time.Sleep(200 * time.Millisecond) // the consumer is pulling
	if err := e.JS.DeleteConsumer(ctx, e.Names.SeedsStream(), e.Names.ArchiveSeedsConsumer()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, jetstream.ErrConsumerDeleted) && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Errorf("Run = %v, want the seeds consumer's death", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the archive kept running after its seeds consumer died")
	}
}
