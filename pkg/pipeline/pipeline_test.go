package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/protocol"
)

func TestMain(m *testing.M) { natstest.Main(m) }

const model = "m"

// fixture is a provisioned server with a durable generator consumer on the TASKS work queue.
type fixture struct {
	env  *natstest.TestEnv
	cons jetstream.Consumer
	ctx  context.Context
}

func newFixture(t *testing.T, ackWait time.Duration) *fixture {
	t.Helper()
	env := natstest.StartTestEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	cons, err := env.JS.CreateOrUpdateConsumer(ctx, env.Names.TasksStream(), jetstream.ConsumerConfig{
		Durable:       env.Names.GeneratorConsumer(model),
		FilterSubject: env.Names.TasksForModel(model),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
	})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	return &fixture{env: env, cons: cons, ctx: ctx}
}

func (f *fixture) publish(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		id := protocol.TaskID("r1", int64(i))
		if _, err := f.env.JS.Publish(f.ctx, f.env.Names.Task("r1", model), []byte(id), jetstream.WithMsgID(id)); err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
	}
}

// consume runs pipeline.Consume until the returned stop is called (or the test ends) and
// returns Consume's error from stop.
func (f *fixture) consume(t *testing.T, cfg pipeline.Config, h pipeline.Handler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- pipeline.Consume(ctx, f.cons, cfg, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				err = errors.New("Consume did not return within 15s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func (f *fixture) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	info, err := f.cons.Info(f.ctx)
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	return info
}

func (f *fixture) streamMsgs(t *testing.T) uint64 {
	t.Helper()
	s, err := f.env.JS.Stream(f.ctx, f.env.Names.TasksStream())
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(f.ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

// eventually polls cond every 20ms until it holds or limit passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deliveries records the NumDelivered of each call of a handler.
type deliveries struct {
	mu   sync.Mutex
	seen []uint64
}

func (d *deliveries) add(msg jetstream.Msg) uint64 {
	md, err := msg.Metadata()
	n := uint64(0)
	if err == nil {
		n = md.NumDelivered
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen = append(d.seen, n)
	return n
}

func (d *deliveries) get() []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]uint64(nil), d.seen...)
}

// TestOutcomes: what the handler returns decides whether its message is acked, redelivered
// or dropped, and a failing handler never stops Consume.
func TestOutcomes(t *testing.T) {
	tests := []struct {
		name  string
		first func() error // the handler on the first delivery; later deliveries succeed
		want  []uint64     // NumDelivered of every call
	}{
		{"nil acks", func() error { return nil }, []uint64{1}},
		{"error redelivers", func() error { return errors.New("model server busy") }, []uint64{1, 2}},
		{"permanent terminates", func() error { return pipeline.Permanent(errors.New("unknown run")) }, []uint64{1}},
		{"panic redelivers", func() error { panic("nil map") }, []uint64{1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 30*time.Second)
			var d deliveries
			stop := f.consume(t, pipeline.Config{Name: "test"}, func(_ context.Context, msg jetstream.Msg) error {
				if d.add(msg) == 1 {
					return tt.first()
				}
				return nil
			})
			f.publish(t, 1)

			eventually(t, 5*time.Second, fmt.Sprintf("handler saw deliveries %v, want %v", d.get(), tt.want), func() bool {
				return len(d.get()) >= len(tt.want)
			})
			eventually(t, 5*time.Second, "message still pending", func() bool {
				info := f.consumerInfo(t)
				return info.NumAckPending == 0 && info.NumPending == 0
			})
			// Twice the first retry delay: any redelivery would have come by now.
			time.Sleep(time.Second)
			if got := d.get(); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("handler saw deliveries %v, want %v", got, tt.want)
			}
			if got := f.streamMsgs(t); got != 0 {
				t.Errorf("work queue holds %d messages, want 0", got)
			}

			// Consume goes on after a failure: a second message is handled too.
			before := len(d.get())
			f.publish(t, 2) // ids r1.t0 (a duplicate, dropped) and r1.t1
			eventually(t, 5*time.Second, "a later message was not handled", func() bool { return len(d.get()) > before })
			if err := stop(); err != nil {
				t.Errorf("Consume = %v, want nil", err)
			}
		})
	}
}

// TestConcurrencyBound: Consume never runs more handlers than Concurrency and never holds
// more unacked messages, so queued work stays available to other replicas.
func TestConcurrencyBound(t *testing.T) {
	const concurrency, total = 2, 10
	f := newFixture(t, 30*time.Second)
	f.publish(t, total)

	var running, maxRunning, handled atomic.Int64
	stop := f.consume(t, pipeline.Config{Name: "test", Concurrency: concurrency}, func(ctx context.Context, msg jetstream.Msg) error {
		n := running.Add(1)
		defer running.Add(-1)
		for m := maxRunning.Load(); n > m && !maxRunning.CompareAndSwap(m, n); m = maxRunning.Load() {
		}
		time.Sleep(250 * time.Millisecond)
		handled.Add(1)
		return nil
	})

	var maxAckPending int
	for handled.Load() < total {
		info := f.consumerInfo(t)
		maxAckPending = max(maxAckPending, info.NumAckPending)
		if info.NumAckPending > concurrency {
			t.Errorf("consumer has %d messages outstanding, want at most %d", info.NumAckPending, concurrency)
		}
		select {
		case <-f.ctx.Done():
			t.Fatalf("handled %d of %d messages before the test's deadline", handled.Load(), total)
		case <-time.After(25 * time.Millisecond):
		}
	}
	if err := stop(); err != nil {
		t.Errorf("Consume = %v, want nil", err)
	}
	if got := maxRunning.Load(); got != concurrency {
		t.Errorf("at most %d handlers ran at once, want exactly %d", got, concurrency)
	}
	if maxAckPending > concurrency || maxAckPending == 0 {
		t.Errorf("at most %d messages were outstanding, want 1..%d", maxAckPending, concurrency)
	}
	if got := f.streamMsgs(t); got != 0 {
		t.Errorf("work queue holds %d messages after all were handled, want 0", got)
	}
}

// TestHeartbeat: a handler that runs longer than the consumer's AckWait keeps its message
// while Consume marks it in progress, and loses it to a redelivery without heartbeats.
func TestHeartbeat(t *testing.T) {
	tests := []struct {
		name      string
		heartbeat time.Duration
		want      []uint64
	}{
		{"heartbeat under AckWait", 200 * time.Millisecond, []uint64{1}},
		{"heartbeat over AckWait", 10 * time.Second, []uint64{1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, time.Second)
			var d deliveries
			var finished atomic.Bool
			// Concurrency 2 leaves a slot free to take a redelivery while the first call runs.
			stop := f.consume(t, pipeline.Config{Name: "test", Concurrency: 2, Heartbeat: tt.heartbeat}, func(ctx context.Context, msg jetstream.Msg) error {
				if d.add(msg) == 1 {
					time.Sleep(2500 * time.Millisecond)
					finished.Store(true)
				}
				return nil
			})
			f.publish(t, 1)
			eventually(t, 10*time.Second, "the slow handler did not finish", finished.Load)
			eventually(t, 5*time.Second, "message still pending", func() bool { return f.consumerInfo(t).NumAckPending == 0 })
			if err := stop(); err != nil {
				t.Errorf("Consume = %v, want nil", err)
			}
			if got := d.get(); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("handler saw deliveries %v, want %v", got, tt.want)
			}
			if got := f.streamMsgs(t); got != 0 {
				t.Errorf("work queue holds %d messages, want 0", got)
			}
		})
	}
}

// TestDrain: on shutdown Consume lets a running handler finish within DrainTimeout; past it,
// the handler is cancelled and its message goes back for another consumer.
func TestDrain(t *testing.T) {
	tests := []struct {
		name          string
		drain         time.Duration
		work          time.Duration
		wantCancelled bool
	}{
		{"handler finishes within the drain limit", 10 * time.Second, 500 * time.Millisecond, false},
		{"handler cancelled at the drain limit", 100 * time.Millisecond, 10 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 30*time.Second)
			started := make(chan struct{})
			var handlerErr atomic.Value // error the handler returned
			stop := f.consume(t, pipeline.Config{Name: "test", DrainTimeout: tt.drain}, func(ctx context.Context, msg jetstream.Msg) error {
				close(started)
				var err error
				select {
				case <-ctx.Done():
					err = ctx.Err()
				case <-time.After(tt.work):
				}
				handlerErr.Store(fmt.Sprint(err))
				return err
			})
			f.publish(t, 1)
			select {
			case <-started:
			case <-time.After(5 * time.Second):
				t.Fatal("handler never started")
			}

			start := time.Now()
			if err := stop(); err != nil {
				t.Fatalf("Consume = %v, want nil", err)
			}
			took := time.Since(start)
			got, ok := handlerErr.Load().(string)
			if !ok {
				t.Fatal("Consume returned while its handler was still running")
			}
			if cancelled := got != "<nil>"; cancelled != tt.wantCancelled {
				t.Errorf("handler returned %s, want cancelled=%v", got, tt.wantCancelled)
			}
			if !tt.wantCancelled {
				if took < tt.work/2 {
					t.Errorf("Consume returned %v after cancel, want it to wait for the handler (%v)", took, tt.work)
				}
				if n := f.streamMsgs(t); n != 0 {
					t.Errorf("work queue holds %d messages after a drained handler succeeded, want 0", n)
				}
				return
			}
			if took > 5*time.Second {
				t.Errorf("Consume took %v to return with a %v drain limit", took, tt.drain)
			}
			// The message goes back at once: a new consumer gets it long before AckWait (30s).
			var d deliveries
			stop2 := f.consume(t, pipeline.Config{Name: "test"}, func(_ context.Context, msg jetstream.Msg) error {
				d.add(msg)
				return nil
			})
			eventually(t, 5*time.Second, "the cancelled message was not redelivered", func() bool { return len(d.get()) > 0 })
			if err := stop2(); err != nil {
				t.Errorf("second Consume = %v, want nil", err)
			}
			if got := d.get(); fmt.Sprint(got) != "[2]" {
				t.Errorf("new Consume saw deliveries %v, want [2]", got)
			}
		})
	}
}

// TestConsumerDeleted: Consume returns an error when its consumer goes away, whether a pull
// was waiting at the time or every slot was busy, rather than spinning on a consumer that
// no longer exists.
func TestConsumerDeleted(t *testing.T) {
	tests := []struct {
		name string
		busy bool // every slot is running a handler when the consumer is deleted
		dead bool // dead letters on: the advisory watch must stop with Consume too
	}{
		{"while pulling", false, false},
		{"while handling", true, false},
		{"with dead letters on", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 30*time.Second)
			started, deleted := make(chan struct{}), make(chan struct{})
			done := make(chan error, 1)
			cfg := pipeline.Config{Name: "test"}
			if tt.dead {
				cfg.JetStream, cfg.Names = f.env.JS, f.env.Names
			}
			go func() {
				done <- pipeline.Consume(f.ctx, f.cons, cfg, func(context.Context, jetstream.Msg) error {
					close(started)
					<-deleted
					return nil
				})
			}()
			if tt.busy {
				f.publish(t, 1)
				<-started
			} else {
				time.Sleep(200 * time.Millisecond) // let Consume start a pull
			}
			err := f.env.JS.DeleteConsumer(f.ctx, f.env.Names.TasksStream(), f.env.Names.GeneratorConsumer(model))
			close(deleted)
			if err != nil {
				t.Fatalf("delete consumer: %v", err)
			}
			select {
			case err := <-done:
				if !errors.Is(err, jetstream.ErrConsumerDeleted) && !errors.Is(err, jetstream.ErrConsumerNotFound) {
					t.Errorf("Consume = %v, want an error wrapping ErrConsumerDeleted or ErrConsumerNotFound", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Consume still running 5s after its consumer was deleted")
			}
		})
	}
}

// TestStopLeavesNoPullBehind: a message published just after a Consume stopped is delivered
// to the next Consume at its first delivery, not lost into a pull request the stopped one
// left on the server, where it would wait out the consumer's AckWait (2 minutes here) before
// anyone saw it. Each round stops a Consume whose pull is waiting, publishes at once, and
// starts the next.
func TestStopLeavesNoPullBehind(t *testing.T) {
	f := newFixture(t, 2*time.Minute)
	var d deliveries
	h := func(_ context.Context, msg jetstream.Msg) error { d.add(msg); return nil }
	for round := range 3 {
		stop := f.consume(t, pipeline.Config{Name: "first", Concurrency: 4}, h)
		eventually(t, 10*time.Second, "the consumer's pull is not waiting", func() bool { return f.consumerInfo(t).NumWaiting > 0 })
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		id := protocol.TaskID("r1", int64(round))
		if _, err := f.env.JS.Publish(f.ctx, f.env.Names.Task("r1", model), []byte(id), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
		stop = f.consume(t, pipeline.Config{Name: "next", Concurrency: 4}, h)
		eventually(t, 20*time.Second, fmt.Sprintf("round %d: the message published after a stop never reached the next Consume", round),
			func() bool { return len(d.get()) == round+1 })
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if got := d.get()[round]; got != 1 {
			t.Fatalf("round %d: handled at delivery %d, want its first", round, got)
		}
	}
}
