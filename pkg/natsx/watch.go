package natsx

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StopWatch stops a KV watch and drains it. nats.go delivers to the Updates channel from the
// subscription's goroutine, which stays blocked on a full channel, even after Stop, until
// someone reads; the channel closes once that goroutine has ended. Every kv.Watch user must
// stop its watch this way or leak that goroutine.
func StopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	limit := time.NewTimer(5 * time.Second)
	defer limit.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-limit.C:
			return
		}
	}
}
