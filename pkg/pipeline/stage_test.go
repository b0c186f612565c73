package pipeline_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/pipeline/pipelinetest"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// question and answer stand for a stage's input and output: the pipeline knows no more of a
// body than its envelope.
type question struct {
	protocol.Meta
	Text string `json:"text"`
}

type answer struct {
	protocol.Meta
	Text   string `json:"text"`
	Failed string `json:"failed,omitempty"`
}

func answerID(q *question) string { return "a." + q.ID }

// echoStage reads questions from CANDIDATES and answers them on RESULTS. Its Failed hook
// answers with the failure, except for the run "ghost", whose dead inputs have no output.
func echoStage(env *natstest.TestEnv, do func(context.Context, *question) (*answer, error)) *pipeline.Stage[question, answer] {
	if do == nil {
		do = func(_ context.Context, q *question) (*answer, error) {
			return &answer{Meta: protocol.Meta{ID: answerID(q), Run: q.Run}, Text: strings.ToUpper(q.Text)}, nil
		}
	}
	return pipeline.NewStage(pipeline.StageConfig[question, answer]{
		Names:     env.Names,
		JetStream: env.JS,
		Subject:   env.Names.Result,
		Do:        do,
		Failed: func(_ context.Context, q *question, reason string) (*answer, error) {
			if q.Run == "ghost" {
				return nil, nil
			}
			return &answer{Meta: protocol.Meta{ID: answerID(q), Run: q.Run}, Failed: reason}, nil
		},
		Shrink: func(a *answer) bool {
			if a.Text == "" {
				return false
			}
			a.Text = ""
			return true
		},
	})
}

func TestStageConformance(t *testing.T) {
	env := natstest.StartTestEnv(t)
	pipelinetest.Run(t, pipelinetest.Case[question, answer]{
		JS: env.JS, Names: env.Names,
		Stage:    echoStage(env, nil),
		InStream: env.Names.CandidatesStream(),
		Consumer: jetstream.ConsumerConfig{
			Durable: "echo", FilterSubject: env.Names.AllCandidates(), AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: 30 * time.Second, MaxDeliver: 3,
		},
		Input: func(i int) (string, *question) {
			q := &question{Meta: protocol.Meta{ID: "q" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), Run: "r1"}, Text: "hello"}
			return env.Names.Candidate("r1"), q
		},
		OutStream: env.Names.ResultsStream(),
		OutID:     answerID,
		Failed:    func(a *answer) bool { return a.Failed != "" },
	})
}

// TestStageDeadInputs: a dead input gets the failed output its stage's hook makes, once
// however often the hook runs; one the hook leaves alone (a run nobody accounts for) and one
// that does not read as an input get none.
func TestStageDeadInputs(t *testing.T) {
	env := natstest.StartTestEnv(t)
	stage := echoStage(env, nil)
	ctx := t.Context()
	body := func() []byte {
		data, err := protocol.Encode(&question{Meta: protocol.Meta{ID: "q1"}, Text: "hi"})
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	for range 2 { // another replica, a retry
		if err := stage.OnDead(ctx, pipeline.DeadLetter{Subject: env.Names.Candidate("r3"), Reason: "out of disk", Data: body()}); err != nil {
			t.Fatalf("OnDead: %v", err)
		}
	}
	for _, d := range []pipeline.DeadLetter{
		{Subject: env.Names.Candidate("ghost"), Reason: "x", Data: body()},
		{Subject: env.Names.Candidate("r3"), Reason: "x", Data: []byte("not json")},
		{Subject: env.Names.Candidate("Bad Run"), Reason: "x", Data: body()},
	} {
		if err := stage.OnDead(ctx, d); err != nil {
			t.Errorf("OnDead(%s) = %v, want nil: nothing to fail", d.Subject, err)
		}
	}
	s, err := env.JS.Stream(ctx, env.Names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("RESULTS holds %d messages, want 1", info.State.Msgs)
	}
	raw, err := s.GetLastMsgForSubject(ctx, env.Names.Result("r3"))
	if err != nil {
		t.Fatal(err)
	}
	var a answer
	if err := protocol.Decode(raw.Data, &a); err != nil {
		t.Fatal(err)
	}
	if want := pipeline.DeadReasonPrefix + "out of disk"; a.ID != "a.q1" || a.Run != "r3" || a.Failed != want {
		t.Errorf("output %q run %q failed %q, want a.q1 r3 %q", a.ID, a.Run, a.Failed, want)
	}
}

// TestStageShrinksLargeOutputs: an output over the body limit is shrunk by its stage's hook
// until it fits; one that cannot be is a permanent error, not a retry.
func TestStageShrinksLargeOutputs(t *testing.T) {
	env := natstest.StartTestEnv(t)
	big := strings.Repeat("x", protocol.MaxBodyBytes)
	stage := echoStage(env, func(_ context.Context, q *question) (*answer, error) {
		a := &answer{Meta: protocol.Meta{ID: answerID(q), Run: q.Run}, Text: big}
		if q.Text == "too big" {
			a.Failed = big
		}
		return a, nil
	})
	cons, err := env.JS.CreateOrUpdateConsumer(t.Context(), env.Names.CandidatesStream(), jetstream.ConsumerConfig{
		Durable: "echo", FilterSubject: env.Names.AllCandidates(), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{"fits once shrunk", "too big"} {
		data, err := protocol.Encode(&question{Meta: protocol.Meta{ID: strings.ReplaceAll(text, " ", "-"), Run: "r1"}, Text: text})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.JS.Publish(t.Context(), env.Names.Candidate("r1"), data); err != nil {
			t.Fatal(err)
		}
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	for msg := range batch.Messages() {
		errs = append(errs, stage.Handle(t.Context(), msg))
	}
	if len(errs) != 2 || errs[0] != nil || !errors.Is(errs[1], pipeline.ErrPermanent) || !errors.Is(errs[1], protocol.ErrTooLarge) {
		t.Errorf("Handle = %v, want nil then a permanent too-large error", errs)
	}
}

// TestLastDelivery: a handler learns when it holds its message's last delivery.
func TestLastDelivery(t *testing.T) {
	env := natstest.StartTestEnv(t)
	cons, err := env.JS.CreateOrUpdateConsumer(t.Context(), env.Names.CandidatesStream(), jetstream.ConsumerConfig{
		Durable: "last", FilterSubject: env.Names.AllCandidates(), AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.JS.Publish(t.Context(), env.Names.Candidate("r1"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	seen := make(chan bool, 2)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- pipeline.Consume(ctx, cons, pipeline.Config{MaxBackoff: 10 * time.Millisecond}, func(ctx context.Context, _ jetstream.Msg) error {
			seen <- pipeline.LastDelivery(ctx)
			return errors.New("again")
		})
	}()
	first, second := <-seen, <-seen
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if first || !second {
		t.Errorf("LastDelivery = %v then %v, want false then true", first, second)
	}
}
