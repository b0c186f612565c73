package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// TestUIStaysSmallAtTenThousandResults publishes 10,000 results of one run to RESULTS (as
// the evaluator would: programs that differ in their numbers and length, scores that drift
// up, one in ten failed), starts the UI afterwards so that it replays them all, and checks
// that what it sends stays small: the whole run's page is a bounded summary, not the
// programs, and after one more result the event stream sends a delta, not the page again.
// It logs the figures docs/ui.md quotes.
func TestUIStaysSmallAtTenThousandResults(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 10,000 results")
	}
	env := natstest.StartTestEnv(t, natstest.WithRoles())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const run, total = "big", 10_000
	cfgText := "max_iterations: 20000\ndatabase:\n  num_islands: 4\n  population_size: 1000\n"
	cfg, _, err := runconfig.Parse([]byte(cfgText))
	if err != nil {
		t.Fatal(err)
	}
	rs := &protocol.RunSpec{Meta: protocol.Meta{ID: run, Run: run}, Config: cfgText, ProgramName: "p.py", CreatedAt: time.Now()}
	data, err := protocol.Encode(rs)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := env.JS.KeyValue(ctx, env.Names.RunsBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, protocol.RunConfigKey(run), data); err != nil {
		t.Fatal(err)
	}

	evaluator := env.ConnectAs(t, natsauth.Evaluator)
	js, err := jetstream.New(evaluator)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	result := func(n int) *protocol.Result {
		var b strings.Builder
		b.WriteString("# EVOLVE-BLOCK-START\ndef f(x):\n")
		for i := range 3 + n%17 {
			fmt.Fprintf(&b, "    x = x * %.4f + %d\n", rng.Float64(), i)
		}
		b.WriteString("    return x\n# EVOLVE-BLOCK-END\n")
		task := protocol.TaskID(run, int64(n))
		r := &protocol.Result{
			Meta: protocol.Meta{ID: protocol.ResultID(protocol.CandidateID(task)), Run: run},
			Candidate: protocol.Candidate{
				Meta: protocol.Meta{ID: protocol.CandidateID(task), Run: run}, TaskID: task, Iteration: int64(n),
				Island: (n - 1) % cfg.Database.NumIslands, Model: []string{"small", "large"}[n%2], Generator: fmt.Sprintf("generator-%d", n%3),
				Language: "python", Code: b.String(), Generation: 1 + n/100, GenerateMS: 40, CreatedAt: time.Now(),
			},
			Status: protocol.StatusOK, Score: float64(n)/total + rng.Float64()*0.1, EvalMS: 20, CreatedAt: time.Now(),
		}
		if n > 1 {
			r.Candidate.ParentID = protocol.CandidateID(protocol.TaskID(run, int64(1+rng.IntN(n-1))))
		}
		if n%10 == 0 {
			r.Status, r.Score, r.Reason = protocol.StatusFailed, 0, fmt.Sprintf("ValueError: bad value %d\ntraceback…", n%7)
		}
		return r
	}
	publish := func(from, to int) {
		for n := from; n <= to; n++ {
			r := result(n)
			if _, err := natsx.Publish(ctx, js, env.Names.Result(run), r.ID, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	start := time.Now()
	publish(1, total)
	t.Logf("published %d results in %s", total, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	c := startUI(t, env)
	var d uiRun
	eventually(t, 3*time.Minute, func() string {
		d = uiRun{}
		c.get(t, "api/runs/"+run, &d)
		if d.Evaluations != total {
			return fmt.Sprintf("UI folded %d of %d results", d.Evaluations, total)
		}
		return ""
	})
	t.Logf("folded %d results in %s (UI start, replay, aggregation)", total, time.Since(start).Round(time.Millisecond))

	req, _ := http.NewRequest(http.MethodGet, c.url+"api/runs/"+run, nil)
	req.SetBasicAuth(c.user, c.password)
	start = time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	full, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("full: GET api/runs/%s is %d bytes, served in %s", run, len(full), time.Since(start).Round(time.Microsecond))
	if len(full) > 256<<10 {
		t.Errorf("the run's page is %d bytes for %d results; want a bounded summary (< 256 KiB)", len(full), total)
	}

	events := c.subscribe(ctx, t, "?run="+run)
	first := nextRunEvent(t, events)
	publish(total+1, total+1)
	var delta sseEvent
	for {
		delta = nextRunEvent(t, events)
		var dd uiRun
		if err := json.Unmarshal(delta.data, &dd); err != nil {
			t.Fatal(err)
		}
		if dd.Evaluations == total+1 {
			break
		}
	}
	t.Logf("delta: the first run event is %d bytes, the one after one more result %d bytes", len(first.data), len(delta.data))
	if len(delta.data) >= len(first.data) {
		t.Errorf("after one result the stream sent %d bytes, as much as the whole run (%d)", len(delta.data), len(first.data))
	}
}

func nextRunEvent(t *testing.T, events <-chan sseEvent) sseEvent {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event stream ended")
			}
			if ev.name == "run" {
				return ev
			}
		case <-timeout:
			t.Fatal("no run event within a minute")
		}
	}
}
