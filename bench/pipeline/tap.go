package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// tap watches a run from outside, as any client of the bus can: it sees every task,
// candidate and result as it is published, and every write of the run's state, each stamped
// with this process's clock. Together with the times the messages carry (the model call,
// the evaluation), that gives each candidate's latency budget hop by hop without touching
// the services.
type tap struct {
	mu      sync.Mutex
	tasks   map[string]time.Time // task id → published
	cands   map[string]seen[protocol.Candidate]
	results []seen[protocol.Result]
	states  []seen[protocol.RunState]
	taskAt  []time.Time // every task publish, in order
	// bytes sums the bodies seen of tasks, candidates and results.
	bytes [3]int
	// msgs counts every message on the bus while the run lasts, by kind (see msgKind): what
	// a candidate costs in round trips, service by service.
	msgs      map[string]int
	msgsBytes map[string]int

	subs  []*nats.Subscription
	watch jetstream.KeyWatcher
}

type seen[T any] struct {
	at  time.Time
	msg T
}

// A light tap (full false) only notes when each result was published, so that measuring
// costs the machine next to nothing: no decoding, no budget.
func startTap(ctx context.Context, nc *nats.Conn, names protocol.Names, run string, full bool) (*tap, error) {
	t := &tap{tasks: map[string]time.Time{}, cands: map[string]seen[protocol.Candidate]{}, msgs: map[string]int{}, msgsBytes: map[string]int{}}
	sub := func(subject string, f func(time.Time, []byte)) error {
		s, err := nc.Subscribe(subject, func(m *nats.Msg) { f(time.Now(), m.Data) })
		if err == nil {
			t.subs = append(t.subs, s)
		}
		return err
	}
	if !full {
		err := sub(names.Result(run), func(at time.Time, data []byte) {
			t.mu.Lock()
			defer t.mu.Unlock()
			t.bytes[2] += len(data)
			t.results = append(t.results, seen[protocol.Result]{at: at})
		})
		return t, err
	}
	// Every message of the account, requests, replies, acks and deliveries included (the
	// admin may subscribe to ">"), counted by kind. Only the full tap counts: it costs the
	// server a copy of every message.
	all, err := nc.Subscribe(">", func(m *nats.Msg) {
		k := msgKind(names, m.Subject, m.Reply)
		t.mu.Lock()
		t.msgs[k]++
		t.msgsBytes[k] += len(m.Data)
		t.mu.Unlock()
	})
	if err == nil {
		t.subs = append(t.subs, all)
		err = sub(names.Prefix+".task."+run+".>", func(at time.Time, data []byte) {
			var task protocol.Task
			if protocol.Decode(data, &task) != nil {
				return
			}
			t.mu.Lock()
			defer t.mu.Unlock()
			t.bytes[0] += len(data)
			if _, dup := t.tasks[task.ID]; !dup {
				t.tasks[task.ID] = at
				t.taskAt = append(t.taskAt, at)
			}
		})
	}
	if err == nil {
		err = sub(names.Candidate(run), func(at time.Time, data []byte) {
			var c protocol.Candidate
			if protocol.Decode(data, &c) != nil {
				return
			}
			t.mu.Lock()
			defer t.mu.Unlock()
			t.bytes[1] += len(data)
			if _, dup := t.cands[c.ID]; !dup {
				t.cands[c.ID] = seen[protocol.Candidate]{at, c}
			}
		})
	}
	if err == nil {
		err = sub(names.Result(run), func(at time.Time, data []byte) {
			var r protocol.Result
			if protocol.Decode(data, &r) != nil {
				return
			}
			t.mu.Lock()
			defer t.mu.Unlock()
			t.bytes[2] += len(data)
			t.results = append(t.results, seen[protocol.Result]{at, r})
		})
	}
	if err != nil {
		t.stop()
		return nil, fmt.Errorf("tap: %w", err)
	}
	js, err := jetstream.New(nc)
	if err == nil {
		var kv jetstream.KeyValue
		if kv, err = js.KeyValue(ctx, names.RunsBucket()); err == nil {
			t.watch, err = kv.Watch(ctx, protocol.RunStateKey(run), jetstream.UpdatesOnly())
		}
	}
	if err != nil {
		t.stop()
		return nil, fmt.Errorf("tap: watch run state: %w", err)
	}
	go func() {
		for e := range t.watch.Updates() {
			if e == nil {
				continue
			}
			at := time.Now()
			var st protocol.RunState
			if protocol.Decode(e.Value(), &st) != nil {
				continue
			}
			t.mu.Lock()
			t.states = append(t.states, seen[protocol.RunState]{at, st})
			t.mu.Unlock()
		}
	}()
	return t, nil
}

func (t *tap) stop() {
	for _, s := range t.subs {
		_ = s.Unsubscribe()
	}
	if t.watch != nil {
		_ = t.watch.Stop()
	}
}

// resultCount is how many results the tap has seen.
func (t *tap) resultCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.results)
}

// rate is the evaluations per second between the first skip results and the last one: the
// steady state, without the seed and the start-up.
func (t *tap) rate(skip int) float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.results) < skip+2 {
		return 0
	}
	first, last := t.results[skip].at, t.results[len(t.results)-1].at
	return float64(len(t.results)-1-skip) / last.Sub(first).Seconds()
}

// sizes is the mean body of a task, a candidate and a result.
func (t *tap) sizes() [3]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := max(len(t.results), 1)
	return [3]int{t.bytes[0] / n, t.bytes[1] / n, t.bytes[2] / n}
}

// hops is one candidate's latency budget, in milliseconds.
type hops struct {
	generator float64 // task published → candidate published, less the model call
	model     float64 // the model call (the candidate's generate_ms)
	evaluator float64 // candidate published → result published, less the sandboxed run
	sandbox   float64 // the sandboxed run (eval_ms), less evaluate() itself
	evaluate  float64 // evaluate(), measured outside shoal
	archive   float64 // result published → run state written with it
	planner   float64 // run state written → the next task published
	// pipeline is everything that is neither the model nor evaluate().
	pipeline float64
}

// budget works out each generated candidate's hops. evaluate is the problem's evaluate()
// time, measured apart. A candidate counts when every hop of it was seen.
func (t *tap) budget(evaluate time.Duration) []hops {
	t.mu.Lock()
	defer t.mu.Unlock()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	var out []hops
	folded := int64(0)
	for _, r := range t.results {
		c := r.msg.Candidate
		if c.TaskID == "" {
			continue // the seed
		}
		folded++
		taskAt, ok := t.tasks[c.TaskID]
		cand, ok2 := t.cands[c.ID]
		if !ok || !ok2 {
			continue
		}
		i := slices.IndexFunc(t.states, func(s seen[protocol.RunState]) bool {
			return !s.at.Before(r.at) && s.msg.Iterations >= folded
		})
		if i < 0 {
			continue
		}
		stateAt := t.states[i].at
		j := slices.IndexFunc(t.taskAt, func(at time.Time) bool { return !at.Before(stateAt) })
		if j < 0 {
			continue // the budget was spent: no task followed
		}
		h := hops{
			model:    float64(c.GenerateMS),
			evaluate: ms(evaluate),
			archive:  ms(stateAt.Sub(r.at)),
			planner:  ms(t.taskAt[j].Sub(stateAt)),
		}
		h.generator = ms(cand.at.Sub(taskAt)) - h.model
		h.evaluator = ms(r.at.Sub(cand.at)) - float64(r.msg.EvalMS)
		h.sandbox = float64(r.msg.EvalMS) - h.evaluate
		h.pipeline = h.generator + h.evaluator + h.sandbox + h.archive + h.planner
		out = append(out, h)
	}
	return out
}

// describe is a one-line summary of the budget for logs.
func describe(hs []hops) string {
	var b strings.Builder
	for _, f := range hopFields {
		fmt.Fprintf(&b, "%s p50 %.1f ms  ", f.name, quantile(column(hs, f.get), 0.5))
	}
	return b.String()
}

var hopFields = []struct {
	name string
	get  func(hops) float64
}{
	{"planner (state → next task)", func(h hops) float64 { return h.planner }},
	{"generator (less the model)", func(h hops) float64 { return h.generator }},
	{"model call", func(h hops) float64 { return h.model }},
	{"evaluator queue, fetch, publish", func(h hops) float64 { return h.evaluator }},
	{"sandbox (less evaluate())", func(h hops) float64 { return h.sandbox }},
	{"evaluate()", func(h hops) float64 { return h.evaluate }},
	{"archive (result → state)", func(h hops) float64 { return h.archive }},
	{"pipeline, all but model and evaluate()", func(h hops) float64 { return h.pipeline }},
}

func column(hs []hops, get func(hops) float64) []float64 {
	out := make([]float64, len(hs))
	for i, h := range hs {
		out[i] = get(h)
	}
	return out
}

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

// msgKind names what a message on the bus is from its subject and reply subject: a message
// JetStream delivers to a consumer (its reply is the ack subject; by stream and consumer,
// "watch" for a key-value watch or an ordered consumer), a publish to a stream, a key-value
// write (by key, the run left out), a pull request or an ack (by consumer), a sample request,
// or a reply (pub acks, sample replies, acks of acks) by the role whose inbox gets it.
func msgKind(names protocol.Names, subject, reply string) string {
	tok := strings.Split(subject, ".")
	if rt := strings.Split(reply, "."); strings.HasPrefix(reply, "$JS.ACK.") && len(rt) >= 4 {
		consumer := rt[3]
		if !slices.Contains([]string{"generator", "evaluator", "archive-seeds"}, consumer) {
			consumer = "watch"
		}
		what := "message"
		if strings.HasPrefix(subject, "$KV.") && len(tok) >= 4 {
			what = "<run>." + strings.Join(tok[3:], ".")
		}
		return fmt.Sprintf("delivered: %s %s to %s", rt[2], what, consumer)
	}
	switch {
	case strings.HasPrefix(subject, "$JS.EVENT."):
		return "JetStream advisory"
	case strings.HasPrefix(subject, "$JS.API.CONSUMER.MSG.NEXT.") && len(tok) >= 7:
		return "pull request, consumer " + tok[6]
	case strings.HasPrefix(subject, "$JS.API."):
		return "JetStream API " + strings.Join(tok[2:min(len(tok), 4)], ".")
	case strings.HasPrefix(subject, "$JS.ACK.") && len(tok) >= 4:
		return "ack, consumer " + tok[3]
	case strings.HasPrefix(subject, "$KV.") && len(tok) >= 3:
		return "KV write " + tok[1] + " <run>." + strings.Join(tok[3:], ".")
	case strings.HasPrefix(subject, "$O."):
		return "object store " + tok[1]
	case strings.HasPrefix(subject, "_INBOX.") && len(tok) >= 3 && slices.Contains([]string{"planner", "generator", "evaluator", "archive", "seeder"}, tok[1]):
		return "reply to " + tok[1]
	case strings.HasPrefix(subject, "_INBOX."):
		return "reply to another inbox"
	case strings.HasPrefix(subject, names.Prefix+".") && len(tok) >= 2:
		if strings.HasSuffix(subject, ".sample") {
			return "sample request"
		}
		return "publish " + tok[strings.Count(names.Prefix, ".")+1]
	}
	return subject
}

// tapWatch is the kind of the tap's own deliveries of the run state, which perCandidate
// leaves out.
const tapWatch = "delivered: KV_shoal-runs <run>.state to watch"

// perCandidate is the message counts of the run divided by its results, most first.
func (t *tap) perCandidate() []kindCount {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := float64(max(len(t.results), 1))
	var out []kindCount
	for k, c := range t.msgs {
		if k == tapWatch {
			c -= len(t.states) // the tap's own watch
		}
		out = append(out, kindCount{k, float64(c) / n, float64(t.msgsBytes[k]) / float64(max(t.msgs[k], 1))})
	}
	slices.SortFunc(out, func(a, b kindCount) int {
		if a.per != b.per {
			if a.per > b.per {
				return -1
			}
			return 1
		}
		return strings.Compare(a.kind, b.kind)
	})
	return out
}

type kindCount struct {
	kind string
	per  float64 // messages per candidate
	size float64 // mean body, bytes
}
