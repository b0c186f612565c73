package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// deadFixture is a provisioned server with one durable consumer that gives up after
// maxDeliver deliveries, as the services' consumers do.
type deadFixture struct {
	env  *natstest.TestEnv
	cons jetstream.Consumer
	ctx  context.Context
	// stream is the work stream the consumer reads.
	stream string
}

func newDeadFixture(t *testing.T, stream, durable, filter string, ackWait time.Duration, maxDeliver int) *deadFixture {
	t.Helper()
	env := natstest.StartTestEnv(t)
	// No deadline, as in a service: the advisory watch once failed on every service's
	// context ("context requires a deadline") while passing here with a timeout context.
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	cons, err := env.JS.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
	})
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	return &deadFixture{env: env, cons: cons, ctx: ctx, stream: stream}
}

// consume runs Consume with dead letters on, on its own connection as a replica would, until
// the test ends; stop stops it early.
func (f *deadFixture) consume(t *testing.T, cfg pipeline.Config, h pipeline.Handler) (stop func()) {
	t.Helper()
	nc, err := f.env.Server.Connect("replica")
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	cons, err := js.Consumer(f.ctx, f.stream, f.cons.CachedInfo().Name)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	cfg.JetStream, cfg.Names = js, f.env.Names
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- pipeline.Consume(ctx, cons, cfg, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Consume = %v, want nil", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Consume did not return within 15s of cancel")
			}
			nc.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

func (f *deadFixture) publish(t *testing.T, subject, id string, body []byte, hdr nats.Header) {
	t.Helper()
	m := &nats.Msg{Subject: subject, Data: body, Header: hdr}
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	if _, err := f.env.JS.PublishMsg(f.ctx, m, jetstream.WithMsgID(id)); err != nil {
		t.Fatalf("publish %s: %v", id, err)
	}
}

// dead reads every message on the DEAD stream.
func (f *deadFixture) dead(t *testing.T) []pipeline.DeadLetter {
	t.Helper()
	s, err := f.env.JS.Stream(f.ctx, f.env.Names.DeadStream())
	if err != nil {
		t.Fatalf("dead stream: %v", err)
	}
	info, err := s.Info(f.ctx)
	if err != nil {
		t.Fatalf("dead stream info: %v", err)
	}
	var out []pipeline.DeadLetter
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(f.ctx, seq)
		if err != nil {
			t.Fatalf("dead seq %d: %v", seq, err)
		}
		if got, want := raw.Header.Get(protocol.HeaderMsgID), protocol.DeadMsgID(raw.Header.Get(protocol.HeaderDeadStream), mustSeq(raw.Header)); got != want {
			t.Errorf("dead letter's Nats-Msg-Id = %q, want %q", got, want)
		}
		out = append(out, pipeline.ReadDeadLetter(raw.Header, raw.Data, raw.Time))
	}
	return out
}

func mustSeq(h nats.Header) uint64 {
	var n uint64
	_, _ = fmt.Sscan(h.Get(protocol.HeaderDeadSequence), &n)
	return n
}

func (f *deadFixture) workMsgs(t *testing.T) uint64 {
	t.Helper()
	s, err := f.env.JS.Stream(f.ctx, f.stream)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := s.Info(f.ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

// hooks records every OnDead call.
type hooks struct {
	mu   sync.Mutex
	seen []pipeline.DeadLetter
}

func (h *hooks) onDead(_ context.Context, d pipeline.DeadLetter) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, d)
	return nil
}

func (h *hooks) get() []pipeline.DeadLetter {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]pipeline.DeadLetter(nil), h.seen...)
}

// decodeTask is a generator-like handler: bodies that are not tasks are permanent failures,
// a task whose id ends in "fail" fails every time, the rest succeed.
func decodeTask(handled *sync.Map) pipeline.Handler {
	return func(_ context.Context, msg jetstream.Msg) error {
		var task protocol.Task
		if err := protocol.Decode(msg.Data(), &task); err != nil {
			return pipeline.Permanent(fmt.Errorf("task on %s: %w", msg.Subject(), err))
		}
		if strings.HasSuffix(task.ID, "fail") {
			return errors.New("model server answered 503")
		}
		handled.Store(task.ID, true)
		return nil
	}
}

func taskBody(t *testing.T, run, id string) []byte {
	t.Helper()
	data, err := protocol.Encode(&protocol.Task{Meta: protocol.Meta{ID: id, Run: run}, Model: model, Iteration: 7, Island: 1,
		Parent: protocol.Program{ID: "p1", Generation: 2}})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestDeadLetterReasons: a message that no delivery can settle ends on DEAD with the reason
// it died, its original body and headers, and leaves the work stream; the consumer goes on
// with the next message.
func TestDeadLetterReasons(t *testing.T) {
	const maxDeliver = 3
	tests := []struct {
		name           string
		body           func(t *testing.T) []byte
		wantReason     string // a part of the reason header
		wantDeliveries uint64
	}{
		{"last delivery fails", func(t *testing.T) []byte { return taskBody(t, "r1", "r1.t1.fail") }, "model server answered 503", maxDeliver},
		{"garbage body", func(*testing.T) []byte { return []byte("\x00\xffnot json{") }, protocol.ErrMalformed.Error(), 1},
		{"unknown version", func(*testing.T) []byte { return []byte(`{"v":99,"id":"x"}`) }, protocol.ErrUnknownVersion.Error(), 1},
		{"oversize body", func(*testing.T) []byte {
			return []byte(`{"v":1,"id":"` + strings.Repeat("a", protocol.MaxBodyBytes) + `"}`)
		}, protocol.ErrTooLarge.Error(), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newDeadFixture(t, protocol.NewNames("").TasksStream(), "generator-m", protocol.NewNames("").TasksForModel(model), 30*time.Second, maxDeliver)
			var hk hooks
			var handled sync.Map
			f.consume(t, pipeline.Config{Name: "test", MaxBackoff: 20 * time.Millisecond, OnDead: hk.onDead}, decodeTask(&handled))

			body := tt.body(t)
			subject := f.env.Names.Task("r1", model)
			f.publish(t, subject, "bad", body, nats.Header{"Traceparent": []string{"00-abc-def-01"}})
			var dead []pipeline.DeadLetter
			eventually(t, 10*time.Second, "no dead letter", func() bool { dead = f.dead(t); return len(dead) > 0 })
			if len(dead) != 1 {
				t.Fatalf("%d dead letters, want 1", len(dead))
			}
			d := dead[0]
			if !strings.Contains(d.Reason, tt.wantReason) {
				t.Errorf("reason %q, want it to contain %q", d.Reason, tt.wantReason)
			}
			if d.Deliveries != tt.wantDeliveries {
				t.Errorf("deliveries %d, want %d", d.Deliveries, tt.wantDeliveries)
			}
			if d.Stream != f.stream || d.Subject != subject || d.Consumer != "generator-m" || d.Run != "r1" || d.Sequence == 0 {
				t.Errorf("dead letter from stream %q subject %q consumer %q run %q seq %d, want %q %q %q %q and a sequence",
					d.Stream, d.Subject, d.Consumer, d.Run, d.Sequence, f.stream, subject, "generator-m", "r1")
			}
			if string(d.Data) != string(body) {
				t.Errorf("dead letter body differs from the original (%d vs %d bytes)", len(d.Data), len(body))
			}
			if got := d.Header.Get("Traceparent"); got != "00-abc-def-01" {
				t.Errorf("original header Traceparent = %q, want it kept", got)
			}
			if got := d.Header.Get(protocol.HeaderMsgID); got != "bad" {
				t.Errorf("original Nats-Msg-Id = %q, want %q", got, "bad")
			}
			eventually(t, 5*time.Second, "the dead message is still in the work stream", func() bool { return f.workMsgs(t) == 0 })
			if got := hk.get(); len(got) != 1 || got[0].Reason != d.Reason {
				t.Errorf("OnDead saw %d calls (%+v), want one with reason %q", len(got), got, d.Reason)
			}

			// The consumer goes on.
			f.publish(t, subject, "good", taskBody(t, "r1", "r1.t2"), nil)
			eventually(t, 5*time.Second, "a later task was not handled", func() bool { _, ok := handled.Load("r1.t2"); return ok })
		})
	}
}

// TestDeadLetterNoAck: a message whose handler hangs (or whose process dies) on every
// delivery is moved to DEAD after the server gives up on it, once, however many replicas
// see the server's advisory.
func TestDeadLetterNoAck(t *testing.T) {
	names := protocol.NewNames("")
	f := newDeadFixture(t, names.CandidatesStream(), names.EvaluatorConsumer(), names.AllCandidates(), 300*time.Millisecond, 2)
	var hk hooks
	hang := func(ctx context.Context, _ jetstream.Msg) error { <-ctx.Done(); return ctx.Err() }
	// No heartbeats within the test: the hung handler looks like a dead process.
	cfg := pipeline.Config{Name: "test", Concurrency: 2, Heartbeat: time.Hour, DrainTimeout: 50 * time.Millisecond, OnDead: hk.onDead}
	f.consume(t, cfg, hang)
	f.consume(t, cfg, hang)

	subject := f.env.Names.Candidate("r2")
	f.publish(t, subject, "c.r2.t1", []byte(`{"v":1,"id":"c.r2.t1","run":"r2"}`), nil)
	var dead []pipeline.DeadLetter
	eventually(t, 10*time.Second, "no dead letter", func() bool { dead = f.dead(t); return len(dead) > 0 })
	eventually(t, 5*time.Second, "the exhausted message is still in the work stream", func() bool { return f.workMsgs(t) == 0 })
	time.Sleep(300 * time.Millisecond) // the other replica's copy, if any, would have landed
	if dead = f.dead(t); len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1 however many replicas saw the advisory", len(dead))
	}
	d := dead[0]
	if d.Reason != protocol.DeadReasonNoAck || d.Deliveries != 2 || d.Subject != subject || d.Run != "r2" {
		t.Errorf("dead letter reason %q deliveries %d subject %q run %q, want %q 2 %q r2", d.Reason, d.Deliveries, d.Subject, d.Run, protocol.DeadReasonNoAck, subject)
	}
	if len(hk.get()) == 0 {
		t.Error("OnDead was not called")
	}
}

// TestTimeoutEndsHeartbeats: a handler that hangs however it is cancelled stops being
// heartbeated after Timeout, so the server redelivers its message and, after MaxDeliver,
// it is dead-lettered instead of being held forever.
func TestTimeoutEndsHeartbeats(t *testing.T) {
	names := protocol.NewNames("")
	f := newDeadFixture(t, names.CandidatesStream(), names.EvaluatorConsumer(), names.AllCandidates(), 300*time.Millisecond, 2)
	stuck := make(chan struct{})
	// Two deliveries hang; a third slot keeps pulling, and the server notices the exhausted
	// message only when it next has a pull to deliver to.
	f.consume(t, pipeline.Config{Name: "test", Concurrency: 3, Heartbeat: 50 * time.Millisecond, Timeout: 100 * time.Millisecond},
		func(context.Context, jetstream.Msg) error { <-stuck; return nil })
	t.Cleanup(func() { close(stuck) }) // runs before the consumer's stop: let the hung handlers end

	f.publish(t, f.env.Names.Candidate("r4"), "c.r4.t1", []byte(`{"v":1,"id":"c.r4.t1","run":"r4"}`), nil)
	var dead []pipeline.DeadLetter
	eventually(t, 10*time.Second, "the hung message was not dead-lettered", func() bool { dead = f.dead(t); return len(dead) > 0 })
	if d := dead[0]; d.Reason != protocol.DeadReasonNoAck || d.Deliveries != 2 {
		t.Errorf("dead letter reason %q after %d deliveries, want %q after 2", d.Reason, d.Deliveries, protocol.DeadReasonNoAck)
	}
}
