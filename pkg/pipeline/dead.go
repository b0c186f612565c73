package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// DeadLetter is a message that no delivery could settle, as it is kept on the DEAD stream:
// the original body and headers plus where it came from and why it died.
type DeadLetter struct {
	// Stream, Subject and Sequence locate the original message; Consumer gave up on it.
	Stream   string
	Subject  string
	Sequence uint64
	Consumer string
	// Deliveries is how often it was delivered.
	Deliveries uint64
	// Reason is the last error a handler returned, or protocol.DeadReasonNoAck.
	Reason string
	// Run is the run the original subject names, "" when none.
	Run string
	// Time is when it was dead-lettered (zero until read back from DEAD).
	Time time.Time
	// Data and Header are the original message's body and headers.
	Data   []byte
	Header nats.Header
}

// deadLetterTimeout bounds dead-lettering one message from a handler (the publish to DEAD and
// the OnDead hook); past it the message is nak'ed and tried again later.
const deadLetterTimeout = 30 * time.Second

// maxReasonBytes bounds the reason header: a panic's stack is kept in the service's log, its
// first lines in the dead letter.
const maxReasonBytes = 2048

// deadLetterer moves exhausted messages of one consumer to DEAD. It is shared by the
// handlers of one Consume and its advisory watcher.
type deadLetterer struct {
	js       jetstream.JetStream
	names    protocol.Names
	stream   string
	consumer string
	onDead   func(context.Context, DeadLetter) error
}

// publish stores d on shoal.dead.<stream> under a Nats-Msg-Id derived from the stream
// sequence, so replicas that see the same exhausted message store it once, then runs the
// OnDead hook. The caller removes the original only after both succeeded.
func (dl *deadLetterer) publish(ctx context.Context, d DeadLetter) error {
	m := nats.NewMsg(dl.names.Dead(d.Stream))
	m.Data = d.Data
	for k, vs := range d.Header {
		// JetStream's own headers (Nats-Msg-Id, Nats-Expected-*) would steer the publish.
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		m.Header[k] = vs
	}
	if id := d.Header.Get(protocol.HeaderMsgID); id != "" {
		m.Header.Set(protocol.HeaderDeadMsgID, id)
	}
	m.Header.Set(protocol.HeaderDeadReason, d.Reason)
	m.Header.Set(protocol.HeaderDeadStream, d.Stream)
	m.Header.Set(protocol.HeaderDeadSubject, d.Subject)
	m.Header.Set(protocol.HeaderDeadSequence, strconv.FormatUint(d.Sequence, 10))
	m.Header.Set(protocol.HeaderDeadConsumer, d.Consumer)
	m.Header.Set(protocol.HeaderDeadDeliveries, strconv.FormatUint(d.Deliveries, 10))
	m.Header.Set(protocol.HeaderDeadRun, d.Run)
	if _, err := dl.js.PublishMsg(ctx, m, jetstream.WithMsgID(protocol.DeadMsgID(d.Stream, d.Sequence))); err != nil {
		return fmt.Errorf("dead-letter %s seq %d: %w", d.Stream, d.Sequence, err)
	}
	if dl.onDead != nil {
		if err := dl.onDead(ctx, d); err != nil {
			return fmt.Errorf("dead-letter hook for %s seq %d: %w", d.Stream, d.Sequence, err)
		}
	}
	return nil
}

// fromMsg describes a delivered message that is to die for reason.
func (dl *deadLetterer) fromMsg(msg jetstream.Msg, reason error) DeadLetter {
	d := DeadLetter{
		Stream:   dl.stream,
		Subject:  msg.Subject(),
		Consumer: dl.consumer,
		Reason:   oneLine(reason.Error()),
		Run:      dl.names.RunFromSubject(msg.Subject()),
		Data:     msg.Data(),
		Header:   msg.Headers(),
	}
	if md, err := msg.Metadata(); err == nil {
		d.Sequence, d.Deliveries = md.Sequence.Stream, md.NumDelivered
	}
	return d
}

// advisory is the part of the server's max-deliveries advisory that names the message.
type advisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// watch dead-letters the messages the server gave up on because no delivery was acked or
// nak'ed (the handler's process crashed or hung each time): JetStream leaves such a message
// in the stream and publishes an advisory. Every replica watches; the first to read the
// message moves it, the others find it gone or publish a duplicate that DEAD drops. It
// returns when ctx ends.
func (dl *deadLetterer) watch(ctx context.Context, cfg Config) error {
	subject := "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + dl.stream + "." + dl.consumer
	advisories := make(chan *nats.Msg, 64)
	sub, err := dl.js.Conn().ChanSubscribe(subject, advisories)
	if err != nil {
		return fmt.Errorf("watch %s: %w", subject, err)
	}
	// Make sure the server knows of the subscription before any advisory can fire. The flush
	// needs a deadline of its own: a service's ctx has none, and nats.go refuses a flush
	// without one ("context requires a deadline"), which left the watch dead in every service.
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = dl.js.Conn().FlushWithContext(fctx)
	cancel()
	if err != nil && ctx.Err() == nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("watch %s: %w", subject, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	stream, err := dl.js.Stream(ctx, dl.stream)
	for err != nil {
		if ctx.Err() != nil {
			return nil
		}
		cfg.Log.Warn("dead-letter watch cannot open its stream; retrying", "stage", cfg.Name, "err", err)
		sleep(ctx, time.Second)
		stream, err = dl.js.Stream(ctx, dl.stream)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-advisories:
			var a advisory
			if err := json.Unmarshal(m.Data, &a); err != nil || a.StreamSeq == 0 {
				cfg.Log.Warn("unreadable max-deliveries advisory", "stage", cfg.Name, "err", err)
				continue
			}
			// A retry covers a server that is briefly away; after that, the message stays in
			// the stream and `shoal dead` cannot show it: say so loudly.
			for attempt := 0; ; attempt++ {
				err := dl.moveExhausted(ctx, stream, a)
				if err == nil || ctx.Err() != nil {
					break
				}
				if attempt == 4 {
					cfg.Log.Error("exhausted message not dead-lettered", "stage", cfg.Name, "stream", a.Stream, "seq", a.StreamSeq, "err", err)
					break
				}
				sleep(ctx, time.Duration(attempt+1)*500*time.Millisecond)
			}
		}
	}
}

// moveExhausted copies sequence a.StreamSeq to DEAD and deletes it from its stream.
func (dl *deadLetterer) moveExhausted(ctx context.Context, stream jetstream.Stream, a advisory) error {
	raw, err := stream.GetMsg(ctx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // another replica moved it already
	}
	if err != nil {
		return fmt.Errorf("read exhausted message %s seq %d: %w", dl.stream, a.StreamSeq, err)
	}
	d := DeadLetter{
		Stream:     dl.stream,
		Subject:    raw.Subject,
		Sequence:   raw.Sequence,
		Consumer:   dl.consumer,
		Deliveries: a.Deliveries,
		Reason:     protocol.DeadReasonNoAck,
		Run:        dl.names.RunFromSubject(raw.Subject),
		Data:       raw.Data,
		Header:     raw.Header,
	}
	if err := dl.publish(ctx, d); err != nil {
		return err
	}
	if err := stream.DeleteMsg(ctx, a.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("delete exhausted message %s seq %d: %w", dl.stream, a.StreamSeq, err)
	}
	return nil
}

// ReadDeadLetter turns a message read from the DEAD stream back into a DeadLetter.
func ReadDeadLetter(header nats.Header, data []byte, at time.Time) DeadLetter {
	seq, _ := strconv.ParseUint(header.Get(protocol.HeaderDeadSequence), 10, 64)
	n, _ := strconv.ParseUint(header.Get(protocol.HeaderDeadDeliveries), 10, 64)
	orig := nats.Header{}
	for k, vs := range header {
		if !strings.HasPrefix(k, "Shoal-Dead-") && !strings.HasPrefix(strings.ToLower(k), "nats-") {
			orig[k] = vs
		}
	}
	if id := header.Get(protocol.HeaderDeadMsgID); id != "" {
		orig.Set(protocol.HeaderMsgID, id)
	}
	return DeadLetter{
		Stream:     header.Get(protocol.HeaderDeadStream),
		Subject:    header.Get(protocol.HeaderDeadSubject),
		Sequence:   seq,
		Consumer:   header.Get(protocol.HeaderDeadConsumer),
		Deliveries: n,
		Reason:     header.Get(protocol.HeaderDeadReason),
		Run:        header.Get(protocol.HeaderDeadRun),
		Time:       at,
		Data:       data,
		Header:     orig,
	}
}

// oneLine makes an error fit a header: NATS headers end at a line break, and a panic's stack
// would make the header huge.
func oneLine(s string) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }), " | ")
	return truncate(s, maxReasonBytes)
}
