// Package pipelinetest is the conformance suite every pipeline stage passes, run against a
// real JetStream (an embedded nats-server, never a mock): a redelivered input gives one
// output, a poison input goes to DEAD and gives one failed output, and a drain on shutdown
// loses nothing. A service runs it on its stage as the service wires it.
package pipelinetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// Case is a stage under test, wired as its service wires it.
type Case[In, Out any] struct {
	// JS reaches the server the stage publishes to, with shoal's streams provisioned; Names
	// are the stage's.
	JS    jetstream.JetStream
	Names protocol.Names
	// Stage is the stage under test.
	Stage *pipeline.Stage[In, Out]
	// InStream and Consumer are the stream and durable consumer the service reads inputs
	// with; the suite creates the consumer and is its only reader.
	InStream string
	Consumer jetstream.ConsumerConfig
	// Input returns the i-th input (i ≥ 1, each a distinct id) and its subject: one the
	// stage turns into an output.
	Input func(i int) (subject string, in *In)
	// OutStream holds the outputs.
	OutStream string
	// OutID is the id of in's output.
	OutID func(in *In) string
	// Failed reports whether out records its input's failure.
	Failed func(out *Out) bool
}

// Run runs the suite on c. Subtests share the server and the consumer, and run in turn.
func Run[In, Out any, PIn pipeline.Body[In], POut pipeline.Body[Out]](t *testing.T, c Case[In, Out]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cons, err := natsx.EnsureConsumer(ctx, c.JS, c.InStream, c.Consumer)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	s := &suite[In, Out, PIn, POut]{c: c, cons: cons}
	t.Run("redelivered input gives one output", s.redelivered)
	t.Run("poison input goes to DEAD and gives one failed output", s.poison)
	t.Run("unreadable input goes to DEAD and stops nothing", s.unreadable)
	t.Run("drain on shutdown loses nothing", s.drain)
}

type suite[In, Out any, PIn pipeline.Body[In], POut pipeline.Body[Out]] struct {
	c    Case[In, Out]
	cons jetstream.Consumer
	next atomic.Int64
}

// input publishes a new input under its own id and returns it with its subject.
func (s *suite[In, Out, PIn, POut]) input(t *testing.T) (*In, string) {
	t.Helper()
	subject, in := s.c.Input(int(s.next.Add(1)))
	s.publish(t, subject, PIn(in).Envelope().ID, in)
	return in, subject
}

func (s *suite[In, Out, PIn, POut]) publish(t *testing.T, subject, msgID string, in *In) {
	t.Helper()
	if _, err := natsx.Publish(t.Context(), s.c.JS, subject, msgID, PIn(in)); err != nil {
		t.Fatalf("publish input: %v", err)
	}
}

// consume runs the stage until stop, which returns Consume's error.
func (s *suite[In, Out, PIn, POut]) consume(t *testing.T, stage *pipeline.Stage[In, Out]) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- stage.Run(ctx, s.cons, pipeline.Config{Name: "conformance", Concurrency: 4, MaxBackoff: 20 * time.Millisecond, DrainTimeout: 20 * time.Second})
	}()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = fmt.Errorf("the stage did not stop within 30s of shutdown")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// outputs returns the outputs on OutStream by id, with how often each id is stored.
func (s *suite[In, Out, PIn, POut]) outputs(t *testing.T) (map[string]*Out, map[string]int) {
	t.Helper()
	st, err := s.c.JS.Stream(t.Context(), s.c.OutStream)
	if err != nil {
		t.Fatalf("output stream: %v", err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatalf("output stream: %v", err)
	}
	outs, counts := map[string]*Out{}, map[string]int{}
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			continue // deleted
		}
		out := new(Out)
		if err := protocol.Decode(raw.Data, POut(out)); err != nil {
			t.Fatalf("output seq %d: %v", seq, err)
		}
		id := POut(out).Envelope().ID
		outs[id] = out
		counts[id]++
	}
	return outs, counts
}

// waitOutput waits for in's output and checks it is stored once.
func (s *suite[In, Out, PIn, POut]) waitOutput(t *testing.T, in *In) *Out {
	t.Helper()
	id := s.c.OutID(in)
	var out *Out
	eventually(t, 30*time.Second, "no output "+id, func() bool {
		outs, counts := s.outputs(t)
		if counts[id] > 1 {
			t.Fatalf("output %s stored %d times, want once", id, counts[id])
		}
		out = outs[id]
		return out != nil
	})
	return out
}

// settled waits until the consumer holds nothing: every input acked or terminated.
func (s *suite[In, Out, PIn, POut]) settled(t *testing.T) {
	t.Helper()
	eventually(t, 30*time.Second, "inputs still pending", func() bool {
		info, err := s.cons.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	})
}

func (s *suite[In, Out, PIn, POut]) dead(t *testing.T) []pipeline.DeadLetter {
	t.Helper()
	st, err := s.c.JS.Stream(t.Context(), s.c.Names.DeadStream())
	if err != nil {
		t.Fatalf("dead stream: %v", err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatalf("dead stream: %v", err)
	}
	var out []pipeline.DeadLetter
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		raw, err := st.GetMsg(t.Context(), seq)
		if err == nil {
			out = append(out, pipeline.ReadDeadLetter(raw.Header, raw.Data, raw.Time))
		}
	}
	return out
}

// redelivered: the stage publishes an input's output, then its process dies before the ack
// (a nak stands for it here), so the input comes again; a second copy of the input under
// another message id (a planner that restarted, a hand-back) comes too. One output.
func (s *suite[In, Out, PIn, POut]) redelivered(t *testing.T) {
	in, subject := s.input(t)
	batch, err := s.cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("fetch: %v", err)
	}
	var handled int
	for msg := range batch.Messages() {
		handled++
		if err := s.c.Stage.Handle(t.Context(), msg); err != nil {
			t.Fatalf("first delivery: %v", err)
		}
		if err := msg.Nak(); err != nil {
			t.Fatalf("nak: %v", err)
		}
	}
	if handled != 1 {
		t.Fatalf("fetched %d inputs, want 1 (%v)", handled, batch.Error())
	}
	s.publish(t, subject, PIn(in).Envelope().ID+".copy", in)
	stop := s.consume(t, s.c.Stage)
	s.settled(t)
	out := s.waitOutput(t, in)
	if err := stop(); err != nil {
		t.Fatalf("stage: %v", err)
	}
	if s.c.Failed(out) {
		t.Errorf("output %s records a failure, want a plain output", s.c.OutID(in))
	}
}

// poison: an input whose every delivery fails (here a panic in Do) goes to DEAD after the
// consumer's MaxDeliver, and its failed output is stored once; the stage goes on.
func (s *suite[In, Out, PIn, POut]) poison(t *testing.T) {
	in, _ := s.input(t)
	poisonID := PIn(in).Envelope().ID
	var calls atomic.Int64
	stage := s.c.Stage.With(func(next func(context.Context, *In) (*Out, error)) func(context.Context, *In) (*Out, error) {
		return func(ctx context.Context, x *In) (*Out, error) {
			if PIn(x).Envelope().ID == poisonID {
				calls.Add(1)
				panic("poison input")
			}
			return next(ctx, x)
		}
	})
	before := len(s.dead(t))
	stop := s.consume(t, stage)
	out := s.waitOutput(t, in)
	if !s.c.Failed(out) {
		t.Errorf("output %s does not record the failure", s.c.OutID(in))
	}
	after, _ := s.input(t)
	s.waitOutput(t, after)
	s.settled(t)
	if err := stop(); err != nil {
		t.Fatalf("stage: %v", err)
	}
	dead := s.dead(t)[before:]
	if len(dead) != 1 || !strings.Contains(dead[0].Reason, "poison input") {
		t.Fatalf("%d new dead letters (%v), want 1 with the panic", len(dead), dead)
	}
	if n := calls.Load(); s.c.Consumer.MaxDeliver > 0 && n != int64(s.c.Consumer.MaxDeliver) {
		t.Errorf("poison input tried %d times, want the consumer's MaxDeliver %d", n, s.c.Consumer.MaxDeliver)
	}
}

// unreadable: a body that is not an input goes to DEAD at once, with no output.
func (s *suite[In, Out, PIn, POut]) unreadable(t *testing.T) {
	before := len(s.dead(t))
	_, beforeCounts := s.outputs(t)
	stop := s.consume(t, s.c.Stage)
	after, subject := s.input(t)
	if _, err := s.c.JS.Publish(t.Context(), subject, []byte("not a body")); err != nil {
		t.Fatal(err)
	}
	s.waitOutput(t, after)
	s.settled(t)
	if err := stop(); err != nil {
		t.Fatalf("stage: %v", err)
	}
	if dead := s.dead(t)[before:]; len(dead) != 1 || dead[0].Deliveries != 1 {
		t.Errorf("%d new dead letters (%v), want 1 after one delivery", len(dead), dead)
	}
	if _, counts := s.outputs(t); len(counts) != len(beforeCounts)+1 {
		t.Errorf("%d outputs, want %d: only the readable input's", len(counts), len(beforeCounts)+1)
	}
}

// drain: the stage is shut down (SIGTERM cancels its context) while inputs are in hand and
// more wait; it lets the ones in hand finish and holds none, and a new replica finishes the
// rest: every input has its output, once.
func (s *suite[In, Out, PIn, POut]) drain(t *testing.T) {
	const n = 24
	slow := s.c.Stage.With(func(next func(context.Context, *In) (*Out, error)) func(context.Context, *In) (*Out, error) {
		return func(ctx context.Context, x *In) (*Out, error) {
			time.Sleep(100 * time.Millisecond)
			return next(ctx, x)
		}
	})
	ins := make([]*In, n)
	for i := range ins {
		ins[i], _ = s.input(t)
	}
	stop := s.consume(t, slow)
	eventually(t, 30*time.Second, "no output before shutdown", func() bool {
		_, counts := s.outputs(t)
		return counts[s.c.OutID(ins[0])] > 0 || counts[s.c.OutID(ins[1])] > 0
	})
	if err := stop(); err != nil {
		t.Fatalf("stage at shutdown: %v", err)
	}
	info, err := s.cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 {
		t.Errorf("%d inputs still held by the stopped stage, want 0", info.NumAckPending)
	}
	if info.NumPending == 0 {
		t.Errorf("every input was done before shutdown; the drain was not exercised")
	}
	stop = s.consume(t, s.c.Stage)
	s.settled(t)
	if err := stop(); err != nil {
		t.Fatalf("stage: %v", err)
	}
	_, counts := s.outputs(t)
	for _, in := range ins {
		if id := s.c.OutID(in); counts[id] != 1 {
			t.Errorf("output %s stored %d times, want once", id, counts[id])
		}
	}
}

func eventually(t *testing.T, limit time.Duration, msg string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", limit, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
