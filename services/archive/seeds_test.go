package archive_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// events collects the run's events from now on.
func events(t *testing.T, nc *nats.Conn, names protocol.Names) <-chan protocol.Event {
	t.Helper()
	out := make(chan protocol.Event, 64)
	sub, err := nc.Subscribe(names.RunEvents(run), func(m *nats.Msg) {
		var ev protocol.Event
		if protocol.Decode(m.Data, &ev) == nil {
			out <- ev
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return out
}

// answer waits for the archive's event about the seed's candidate.
func answer(t *testing.T, evs <-chan protocol.Event, candidate string) protocol.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-evs:
			if ev.CandidateID == candidate {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event about %s within 10s", candidate)
		}
	}
}

// TestRawSeedsAnswered: what `nats pub shoal.seed.<run> < program.py` sends is answered at
// once, and a program the run cannot use (empty, not UTF-8, for a run that does not exist)
// becomes no candidate: it is an error event naming the seed, with the reason.
func TestRawSeedsAnswered(t *testing.T) {
	e, _, _ := env(t)
	start(t, e)
	ctx := context.Background()
	tests := []struct {
		name      string
		run       string
		body      []byte
		kind      string
		want      string
		candidate bool
	}{
		{"program", run, []byte("def f(x):\n    return x\n"), protocol.EventSeed, "seed accepted", true},
		{"empty", run, nil, protocol.EventError, "seed rejected: seed for run r1 has an empty program", false},
		{"blank", run, []byte(" \n\t\n"), protocol.EventError, "seed rejected: seed for run r1 has an empty program", false},
		{"latin-1", run, []byte("# caf\xe9\nx = 1\n"), protocol.EventError, "seed rejected: seed for run r1: the program is not valid UTF-8: byte 0xe9 at line 1, column 6; save it as UTF-8", false},
		{"unknown run", "ghost", []byte("x = 1\n"), protocol.EventError, "seed rejected: run ghost does not exist: start it with `shoal seed --run ghost --config config.yaml --evaluator evaluator.py --program initial_program.py`, then add programs", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			names := e.Names
			evs := make(chan protocol.Event, 16)
			sub, err := e.Conn.Subscribe(names.RunEvents(tt.run), func(m *nats.Msg) {
				var ev protocol.Event
				if protocol.Decode(m.Data, &ev) == nil {
					evs <- ev
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			if err := e.Conn.Flush(); err != nil {
				t.Fatal(err)
			}
			id := "raw-" + strings.ReplaceAll(tt.name, " ", "-")
			if _, err := e.JS.Publish(ctx, names.Seed(tt.run), tt.body, jetstream.WithMsgID(id)); err != nil {
				t.Fatal(err)
			}
			ev := answer(t, evs, protocol.SeedCandidateID(tt.run, id))
			if ev.Kind != tt.kind || ev.Message != tt.want {
				t.Errorf("event %s %q, want %s %q", ev.Kind, ev.Message, tt.kind, tt.want)
			}
			if got := candidateExists(t, e.JS, names, protocol.SeedCandidateID(tt.run, id)); got != tt.candidate {
				t.Errorf("candidate published = %v, want %v", got, tt.candidate)
			}
		})
	}
}

// candidateExists reports whether CANDIDATES holds the candidate.
func candidateExists(t *testing.T, js jetstream.JetStream, names protocol.Names, id string) bool {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, names.CandidatesStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		if m.Header.Get(protocol.HeaderMsgID) == id {
			return true
		}
	}
	return false
}

// TestFailedSeed: a seed that fails to evaluate is kept in the run's state with its reason
// (for the planner, which ends the run with it) and announced as no new best program; a
// seed that passes later clears it.
func TestFailedSeed(t *testing.T) {
	e, store, _ := env(t)
	start(t, e)
	evs := events(t, e.Conn, e.Names)
	bad := mk("c.r1.seed.bad", "", 0, protocol.StatusFailed, 0)
	bad.Reason = "evaluator.py: SyntaxError: invalid syntax (line 3)"
	bad.Artifacts = map[string]string{"traceback": "  File \"evaluator.py\", line 3\n    def evaluate(path)\n                     ^\nSyntaxError: expected ':'"}
	publish(t, e, []*protocol.Result{bad})
	st := waitSeeds(t, store, 1)
	want := bad.Reason + "\n" + bad.Artifacts["traceback"]
	if st.SeedsOK != 0 || st.SeedError != want || st.Failed != 1 {
		t.Errorf("state seeds %d ok %d failed %d error %q; want 1, 0, 1, %q", st.Seeds, st.SeedsOK, st.Failed, st.SeedError, want)
	}
	// The archive announces a new best as it folds, before it writes the state seen above.
	quiet := time.After(200 * time.Millisecond)
	for done := false; !done; {
		select {
		case ev := <-evs:
			if ev.Kind == protocol.EventNewBest {
				t.Errorf("new best program event for the failed seed: %+v", ev)
			}
		case <-quiet:
			done = true
		}
	}
	good := mk("c.r1.seed.good", "", 0, protocol.StatusOK, 0.4)
	publish(t, e, []*protocol.Result{good})
	if ev := answer(t, evs, good.Candidate.ID); ev.Kind != protocol.EventNewBest {
		t.Errorf("event about the passing seed: %s %q, want %s", ev.Kind, ev.Message, protocol.EventNewBest)
	}
	st = waitSeeds(t, store, 2)
	if st.SeedsOK != 1 || st.SeedError != "" {
		t.Errorf("after a passing seed: ok %d error %q; want 1 and none", st.SeedsOK, st.SeedError)
	}
}

func waitSeeds(t *testing.T, store interface {
	State(context.Context, string) (*protocol.RunState, error)
}, seeds int64) *protocol.RunState {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := store.State(context.Background(), run)
		if err == nil && st.Seeds == seeds {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("run state %+v (err %v); want %d seeds", st, err, seeds)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
