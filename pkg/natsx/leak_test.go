package natsx_test

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx/natstest"
)

// TestObjectPutsLeaveNoGoroutine: each object-store Put makes a JetStream context of its own
// for its chunks and cleans it up on return. nats.go v1.55.0 read the context's status channel
// in a goroutine after that cleanup could have cleared it, and the goroutine then waited on a
// nil channel for ever: CI's leak check caught one after bench/search's runs. Puts from many
// goroutines at once make the race likely; none of those goroutines may outlive the Puts.
func TestObjectPutsLeaveNoGoroutine(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx := testContext(t)
	obs, err := env.JS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "leak-check"})
	if err != nil {
		t.Fatalf("object store: %v", err)
	}
	const workers, puts = 8, 50
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range puts {
				if _, err := obs.PutBytes(ctx, fmt.Sprintf("o-%d-%d", w, i), []byte("program")); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	// A goroutine that saw its channel cleared never ends; one still starting ends at once.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := countGoroutines("resetPendingAcksOnReconnect")
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of %d object puts still wait for a status that cannot come", n, workers*puts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func countGoroutines(fn string) int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}
