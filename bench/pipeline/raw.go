package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
)

// rawPipeline is the yardstick for shoal's pipeline: JetStream alone, in the same shape and
// on the same kind of server (embedded, file storage). Three streams (tasks and candidates
// are work queues, results keep everything), a stage that turns each task into a candidate
// and one that turns each candidate into a result, both doing nothing else, and a driver
// that keeps inflight tasks in flight by publishing a new task for each result. Bodies
// have the sizes of shoal's, and each part has a connection of its own as shoal's services
// do: the driver and the first stage in-process, like the planner, archive and generator of
// `shoal up`, the second over loopback TCP, like noopEvaluator. It returns evaluations per
// second after the first tenth.
// It also returns the CPU milliseconds this process spent per evaluation (server, stages
// and driver) over the same results.
func rawPipeline(ctx context.Context, n, inflight int, sizes [3]int) (rate, cpuPerEval float64, err error) {
	return rawRun(ctx, n, inflight, sizes)
}

// processCPU is the CPU time (user + system) of this process so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rawRun(ctx context.Context, n, inflight int, sizes [3]int) (float64, float64, error) {
	dir, err := os.MkdirTemp("", "shoal-bench-raw-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: filepath.Join(dir, "jetstream"), MaxPayload: 8 << 20})
	if err != nil {
		return 0, 0, err
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("raw")
	if err != nil {
		return 0, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, 0, err
	}
	for _, sc := range []jetstream.StreamConfig{
		{Name: "RAW_TASKS", Subjects: []string{"raw.task.>"}, Retention: jetstream.WorkQueuePolicy, Duplicates: 2 * time.Minute},
		{Name: "RAW_CANDIDATES", Subjects: []string{"raw.candidate.>"}, Retention: jetstream.WorkQueuePolicy, Duplicates: 2 * time.Minute},
		{Name: "RAW_RESULTS", Subjects: []string{"raw.result.>"}, Duplicates: 2 * time.Minute},
	} {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			return 0, 0, err
		}
	}
	body := func(size int) []byte { return []byte(strings.Repeat("x", max(size, 1))) }
	task, cand, result := body(sizes[0]), body(sizes[1]), body(sizes[2])
	var conns []*nats.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	stage := func(stream, out string, payload []byte, tcp bool) (jetstream.ConsumeContext, error) {
		snc, err := srv.Connect("raw-" + stream)
		if tcp {
			snc, err = nats.Connect(srv.URL(), nats.Name("raw-"+stream))
		}
		if err != nil {
			return nil, err
		}
		conns = append(conns, snc)
		js, err := jetstream.New(snc)
		if err != nil {
			return nil, err
		}
		c, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: strings.ToLower(stream), AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			return nil, err
		}
		return c.Consume(func(m jetstream.Msg) {
			id := m.Headers().Get("Nats-Msg-Id")
			if _, err := js.Publish(ctx, out+id, payload, jetstream.WithMsgID(out+id)); err != nil {
				_ = m.Nak()
				return
			}
			_ = m.DoubleAck(ctx)
		}, jetstream.PullMaxMessages(inflight))
	}
	gen, err := stage("RAW_TASKS", "raw.candidate.", cand, false)
	if err != nil {
		return 0, 0, err
	}
	defer gen.Stop()
	eval, err := stage("RAW_CANDIDATES", "raw.result.", result, true)
	if err != nil {
		return 0, 0, err
	}
	defer eval.Stop()

	var issued atomic.Int64
	publishTask := func() error {
		i := issued.Add(1)
		if int(i) > n {
			return nil
		}
		id := fmt.Sprintf("t%d", i)
		_, err := js.Publish(ctx, "raw.task."+id, task, jetstream.WithMsgID(id))
		return err
	}
	results, err := js.OrderedConsumer(ctx, "RAW_RESULTS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, 0, err
	}
	it, err := results.Messages()
	if err != nil {
		return 0, 0, err
	}
	defer it.Stop()
	for range inflight {
		if err := publishTask(); err != nil {
			return 0, 0, err
		}
	}
	skip := n / 10
	var first time.Time
	var cpu0 time.Duration
	for got := 1; got <= n; got++ {
		if _, err := it.Next(); err != nil {
			return 0, 0, err
		}
		if got == skip+1 {
			first, cpu0 = time.Now(), processCPU()
		}
		if err := publishTask(); err != nil {
			return 0, 0, err
		}
	}
	cpu := float64((processCPU() - cpu0).Microseconds()) / 1000 / float64(n-skip-1)
	return float64(n-skip-1) / time.Since(first).Seconds(), cpu, nil
}
