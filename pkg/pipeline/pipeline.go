// Package pipeline runs a handler over a durable JetStream pull consumer: bounded concurrency
// (never pulls more than it can run), progress heartbeats for long work, ack only after the
// handler succeeded, nak with backoff on error, terminate on permanent errors, panic recovery,
// dead letters (DEAD stream) for what no delivery could settle, and a drain on shutdown.
// Every service's stage is a Stage (stage.go), whose Handle Consume runs. The package knows no
// domain type: a stage's owner says what its messages mean.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// fetchWait is how long one pull waits for messages: the longest a stopping Consume waits for
// its last pull to end.
const fetchWait = time.Second

// Handler processes one message. It must be safe to run twice on the same message: a crash
// between its effect and the ack redelivers the message.
type Handler func(ctx context.Context, msg jetstream.Msg) error

// ErrPermanent marks an error that no redelivery can fix (a malformed body, an unknown run):
// the message is terminated with the reason instead of retried.
var ErrPermanent = errors.New("permanent")

// Permanent wraps err so that Consume terminates the message rather than redelivering it.
func Permanent(err error) error { return fmt.Errorf("%w: %w", ErrPermanent, err) }

// Config tunes Consume.
type Config struct {
	// Name labels log lines ("evaluator", "generator").
	Name string
	// Concurrency is how many messages run at once and the most ever pulled; default 1.
	Concurrency int
	// Heartbeat is how often a running handler's message is marked in progress, which
	// extends its AckWait; default 10s. Keep it well under the consumer's AckWait.
	Heartbeat time.Duration
	// DrainTimeout bounds how long shutdown waits for running handlers before cancelling
	// them; their messages are then nak'ed for redelivery elsewhere. Default 30s.
	DrainTimeout time.Duration
	// MaxBackoff caps the redelivery delay after errors; default 30s.
	MaxBackoff time.Duration
	// Timeout, when set, bounds one handler run: its ctx is cancelled and its heartbeats
	// stop then, so a handler that hangs regardless is redelivered after AckWait like a
	// crashed one, and dead-lettered after MaxDeliver. Zero: no bound (the handler's own
	// timeouts apply).
	Timeout time.Duration
	Log     *slog.Logger

	// JetStream turns on dead letters. A message whose handler returned a Permanent error, or
	// failed on the consumer's last allowed delivery (its MaxDeliver), is copied with that
	// error to shoal.dead.<stream> and then terminated; a message the server gave up on
	// because no delivery was acked or nak'ed (the handler's process crashed or hung) is
	// moved there from its stream with protocol.DeadReasonNoAck. Without it such messages
	// are only logged: terminated, or left in the stream by the server.
	JetStream jetstream.JetStream
	// Names gives the DEAD subject; zero means the default prefix.
	Names protocol.Names
	// OnDead runs once a message is in DEAD and before it leaves its stream, e.g. to record
	// the failure downstream so a run's accounting completes. An error keeps the message for
	// another try. It may run more than once for one message (replicas, retries): make its
	// effect idempotent, e.g. publish under a derived Nats-Msg-Id.
	OnDead func(ctx context.Context, d DeadLetter) error
}

func (c *Config) setDefaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 10 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Names.Prefix == "" {
		c.Names = protocol.NewNames("")
	}
}

// Consume pulls from cons and runs h until ctx ends, then stops pulling, waits up to
// DrainTimeout for running handlers, and returns nil. It returns an error only when the
// consumer itself fails.
func Consume(ctx context.Context, cons jetstream.Consumer, cfg Config, h Handler) error {
	cfg.setDefaults()
	slots := make(chan struct{}, cfg.Concurrency)
	for range cfg.Concurrency {
		slots <- struct{}{}
	}
	// work ends when the drain limit passes after shutdown, cancelling handlers still running.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var wg sync.WaitGroup
	var dl *deadLetterer
	maxDeliver := 0
	if info := cons.CachedInfo(); info != nil {
		maxDeliver = info.Config.MaxDeliver
		if cfg.JetStream != nil {
			dl = &deadLetterer{js: cfg.JetStream, names: cfg.Names, stream: info.Stream, consumer: info.Name, onDead: cfg.OnDead}
		}
	}
	if dl != nil {
		// The watch stops with ctx, or when Consume returns because its consumer failed: after
		// shutdown the replicas still running take over.
		watchCtx, stopWatch := context.WithCancel(ctx)
		watchDone := make(chan struct{})
		go func() {
			defer close(watchDone)
			if err := dl.watch(watchCtx, cfg); err != nil {
				cfg.Log.Error("dead-letter watch failed; exhausted messages stay in the stream", "stage", cfg.Name, "err", err)
			}
		}()
		defer func() { stopWatch(); <-watchDone }()
	}
	defer func() {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(cfg.DrainTimeout):
			cfg.Log.Warn("drain limit reached; cancelling running handlers", "stage", cfg.Name)
			cancelWork()
			<-done
		}
	}()

	for {
		// Take one free slot before pulling, so that no message waits in this process
		// while it cannot run: another replica may take it instead.
		select {
		case <-ctx.Done():
			return nil
		case <-slots:
		}
		free := 1
	more:
		for free < cfg.Concurrency {
			select {
			case <-slots:
				free++
			default:
				break more
			}
		}
		// The pull waits at most fetchWait and is never abandoned: a pull request cancelled on
		// the client stays on the server until it expires, and a message delivered to it in
		// that window reaches nobody and waits out the consumer's AckWait before another
		// delivery (30 s for the generator's tasks). So shutdown lets the pull end on its
		// own (at most fetchWait) and hands back at once what it brings.
		batch, err := cons.Fetch(free, jetstream.FetchMaxWait(fetchWait))
		if err != nil {
			for range free {
				slots <- struct{}{}
			}
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				return fmt.Errorf("%s: %w", cfg.Name, err)
			}
			cfg.Log.Warn("fetch failed", "stage", cfg.Name, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		got := 0
		for msg := range batch.Messages() {
			if ctx.Err() != nil {
				// Shutting down: another replica takes it now, not after AckWait.
				_ = msg.Nak()
				continue
			}
			got++
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { slots <- struct{}{} }()
				handle(work, msg, cfg, dl, maxDeliver, h)
			}()
		}
		for range free - got {
			slots <- struct{}{}
		}
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			// A pull pending when the consumer is deleted ends with ErrConsumerDeleted; later
			// pulls find no responder at all.
			if errors.Is(err, nats.ErrNoResponders) {
				if _, ierr := cons.Info(ctx); errors.Is(ierr, jetstream.ErrConsumerNotFound) {
					err = ierr
				}
			}
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				return fmt.Errorf("%s: %w", cfg.Name, err)
			}
			cfg.Log.Warn("fetch batch ended with error", "stage", cfg.Name, "err", err)
			sleep(ctx, time.Second)
		}
	}
}

// handle runs h for one message with heartbeats and settles the message once. work is
// cancelled only after the drain limit. dl is nil when dead letters are off; maxDeliver is
// the consumer's (0 or -1: unlimited).
func handle(work context.Context, msg jetstream.Msg, cfg Config, dl *deadLetterer, maxDeliver int, h Handler) {
	runCtx := work
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(work, cfg.Timeout)
		defer cancel()
	}
	runCtx = context.WithValue(runCtx, deliveryKey{}, lastDelivery(msg, maxDeliver))
	hbCtx, stopHB := context.WithCancel(runCtx)
	defer stopHB()
	go func() {
		t := time.NewTicker(cfg.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	err := run(runCtx, msg, h)
	stopHB()
	log := cfg.Log.With("stage", cfg.Name, "subject", msg.Subject())
	switch {
	case err == nil:
		if aerr := msg.DoubleAck(context.WithoutCancel(work)); aerr != nil {
			log.Warn("ack failed; the message will be redelivered", "err", aerr)
		}
	case errors.Is(err, ErrPermanent) && dl == nil:
		log.Error("message rejected", "err", err)
		_ = msg.TermWithReason(truncate(err.Error(), 200))
	case work.Err() != nil:
		// Cancelled at shutdown: hand the message back at once for another replica.
		_ = msg.Nak()
	case dl != nil && (errors.Is(err, ErrPermanent) || lastDelivery(msg, maxDeliver)):
		dctx, cancel := context.WithTimeout(context.WithoutCancel(work), deadLetterTimeout)
		derr := dl.publish(dctx, dl.fromMsg(msg, err))
		cancel()
		if derr != nil {
			// Keep the message: a later delivery, or the server's advisory after the last
			// one, tries again.
			log.Error("dead-letter failed; the message stays queued", "err", err, "dead_err", derr)
			_ = msg.NakWithDelay(backoff(msg, cfg.MaxBackoff))
			return
		}
		log.Error("message dead-lettered", "err", err)
		_ = msg.TermWithReason(truncate(err.Error(), 200))
	default:
		delay := backoff(msg, cfg.MaxBackoff)
		log.Warn("handler failed; will retry", "err", err, "retry_in", delay)
		_ = msg.NakWithDelay(delay)
	}
}

func run(ctx context.Context, msg jetstream.Msg, h Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v\n%s", r, debug.Stack())
		}
	}()
	return h(ctx, msg)
}

type deliveryKey struct{}

// LastDelivery reports, inside a handler that Consume runs, whether this delivery of its
// message is the consumer's last (MaxDeliver): a handler may then record a failure itself
// rather than return an error that sends the message to DEAD.
func LastDelivery(ctx context.Context) bool {
	last, _ := ctx.Value(deliveryKey{}).(bool)
	return last
}

func lastDelivery(msg jetstream.Msg, maxDeliver int) bool {
	if maxDeliver <= 0 {
		return false
	}
	md, err := msg.Metadata()
	return err == nil && md.NumDelivered >= uint64(maxDeliver)
}

func backoff(msg jetstream.Msg, limit time.Duration) time.Duration {
	n := uint64(1)
	if md, err := msg.Metadata(); err == nil {
		n = md.NumDelivered
	}
	d := 500 * time.Millisecond
	for i := uint64(1); i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
