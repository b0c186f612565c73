package natsx

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/telemetry"
)

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id: a publish retried within it
// is stored once.
const DuplicateWindow = 10 * time.Minute

// Streams returns the stream configurations of the wire contract.
func Streams(n protocol.Names) []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{Name: n.SeedsStream(), Subjects: []string{n.AllSeeds()}, Retention: jetstream.LimitsPolicy, Duplicates: DuplicateWindow, Storage: jetstream.FileStorage},
		{Name: n.TasksStream(), Subjects: []string{n.AllTasks()}, Retention: jetstream.WorkQueuePolicy, Duplicates: DuplicateWindow, Storage: jetstream.FileStorage},
		{Name: n.CandidatesStream(), Subjects: []string{n.AllCandidates()}, Retention: jetstream.WorkQueuePolicy, Duplicates: DuplicateWindow, Storage: jetstream.FileStorage},
		{Name: n.ResultsStream(), Subjects: []string{n.AllResults()}, Retention: jetstream.LimitsPolicy, Duplicates: DuplicateWindow, Storage: jetstream.FileStorage},
		{Name: n.EventsStream(), Subjects: []string{n.AllEvents()}, Retention: jetstream.LimitsPolicy, MaxAge: 24 * time.Hour, Duplicates: time.Minute, Storage: jetstream.FileStorage},
		{Name: n.DeadStream(), Subjects: []string{n.AllDead()}, Retention: jetstream.LimitsPolicy, Duplicates: DuplicateWindow, Storage: jetstream.FileStorage},
	}
}

// Buckets returns the KV bucket configurations of the wire contract.
func Buckets(n protocol.Names) []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{
		{Bucket: n.RunsBucket(), History: 5, Storage: jetstream.FileStorage},
		{Bucket: n.GeneratorsBucket(), History: 1, TTL: time.Minute, Storage: jetstream.FileStorage},
		{Bucket: n.GPUInventoryBucket(), History: 1, Storage: jetstream.FileStorage},
		{Bucket: n.GPULeasesBucket(), History: 1, LimitMarkerTTL: time.Minute, Storage: jetstream.FileStorage},
		{Bucket: n.OwnersBucket(), History: 1, Storage: jetstream.FileStorage},
	}
}

// Provision creates every stream, bucket and object store shoal uses that does not exist yet,
// and leaves those that do as they are. Every service calls it at start, whichever comes up
// first, so services may start in any order on a fresh server. It needs only the create
// request that every service role may make: a stream that exists with another config (an
// older version's) keeps it until an admin runs Reconcile.
func Provision(ctx context.Context, js jetstream.JetStream, n protocol.Names) error {
	// Each is created as Reconcile would create it on one server (one replica, stamped), so
	// that a create of one that exists is the same config and the server takes it as a no-op.
	for _, cfg := range Streams(n) {
		cfg.Replicas = 1
		cfg.Metadata = stamp(cfg)
		if _, err := js.CreateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("provision stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range Buckets(n) {
		cfg.Replicas = 1
		cfg.Metadata = stamp(cfg)
		if _, err := js.CreateKeyValue(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("provision bucket %s: %w", cfg.Bucket, err)
		}
	}
	for _, cfg := range objectStores(n) {
		cfg.Replicas = 1
		cfg.Metadata = stamp(cfg)
		if _, err := js.CreateObjectStore(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("provision object store %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}

// Reconcile creates or updates every stream, bucket and object store shoal uses, so that each
// has this version's config. It is idempotent. Updating a stream needs the admin role: `shoal
// up` and the CLI's admin commands run it. Each keeps the replicas it has (see ReconcileReplicas).
func Reconcile(ctx context.Context, js jetstream.JetStream, n protocol.Names) error {
	return ReconcileReplicas(ctx, js, n, 0)
}

// ReconcileReplicas is Reconcile with every stream, bucket and object store kept on replicas
// servers of a cluster (`shoal provision --replicas 3`). With replicas 0 each keeps the
// replicas it has, and one created is on one server, so that an admin command run without the
// setting never scales a clustered deployment down.
func ReconcileReplicas(ctx context.Context, js jetstream.JetStream, n protocol.Names, replicas int) error {
	// current is the config of an existing stream (a bucket's and an object store's too),
	// or nil when there is none.
	current := func(stream string) *jetstream.StreamConfig {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return nil
		}
		return &s.CachedInfo().Config
	}
	keep := func(cur *jetstream.StreamConfig) int {
		switch {
		case replicas > 0:
			return replicas
		case cur != nil && cur.Replicas > 0:
			return cur.Replicas
		}
		return 1 // what the server makes of 0, so that the stamp of a new one matches
	}
	for _, cfg := range Streams(n) {
		cur := current(cfg.Name)
		cfg.Replicas = keep(cur)
		if cfg.Metadata = stamp(cfg); cur != nil && stamped(cur.Metadata, cfg.Metadata) {
			continue
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("provision stream %s: %w", cfg.Name, err)
		}
	}
	for _, cfg := range Buckets(n) {
		cur := current("KV_" + cfg.Bucket)
		cfg.Replicas = keep(cur)
		if cfg.Metadata = stamp(cfg); cur != nil && stamped(cur.Metadata, cfg.Metadata) {
			continue
		}
		if _, err := js.CreateOrUpdateKeyValue(ctx, cfg); err != nil {
			return fmt.Errorf("provision bucket %s: %w", cfg.Bucket, err)
		}
	}
	for _, cfg := range objectStores(n) {
		cur := current("OBJ_" + cfg.Bucket)
		cfg.Replicas = keep(cur)
		if cfg.Metadata = stamp(cfg); cur != nil && stamped(cur.Metadata, cfg.Metadata) {
			continue
		}
		if _, err := js.CreateOrUpdateObjectStore(ctx, cfg); err != nil {
			return fmt.Errorf("provision object store %s: %w", cfg.Bucket, err)
		}
	}
	return nil
}

// configStamp is the metadata key under which Reconcile records a digest of the config it
// gave a stream, a bucket or an object store. A later Reconcile that would give the same
// config leaves it alone: an update of an unchanged stream still makes nats-server rewrite it,
// which races consumers being created at the same time (a data race inside nats-server's file
// store), and every admin command reconciles while the services run. A config changed by other
// hands without the stamp is brought back on the next Reconcile.
const configStamp = "shoal.config"

// stamp is the metadata that records cfg (a stream, bucket or object store config without
// metadata of its own).
func stamp(cfg any) map[string]string {
	b, err := json.Marshal(cfg)
	if err != nil {
		panic(err) // configs are plain structs
	}
	sum := sha256.Sum256(b)
	return map[string]string{configStamp: hex.EncodeToString(sum[:12])}
}

// stamped reports whether have (an existing stream's metadata) records the config that want
// (stamp's) does.
func stamped(have, want map[string]string) bool {
	return have[configStamp] != "" && have[configStamp] == want[configStamp]
}

func objectStores(n protocol.Names) []jetstream.ObjectStoreConfig {
	var out []jetstream.ObjectStoreConfig
	for _, name := range []string{n.BundlesStore(), n.SnapshotsStore()} {
		out = append(out, jetstream.ObjectStoreConfig{Bucket: name, Compression: true, Storage: jetstream.FileStorage})
	}
	return out
}

// EnsureConsumer creates or updates a durable consumer on stream; replicas of a service call
// it with the same config and share the consumer.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	return c, nil
}

// Publish encodes m and publishes it to subject with its id as Nats-Msg-Id, so that a retry
// within DuplicateWindow is stored once. It retries briefly while the server is unavailable.
// When ctx carries a span (tracing is on), the publish is a producer span of its own, and
// its W3C trace context rides in the message's headers, so the consumer's span continues the
// trace.
func Publish(ctx context.Context, js jetstream.JetStream, subject, id string, m protocol.Message) (_ *jetstream.PubAck, err error) {
	data, err := protocol.Encode(m)
	if err != nil {
		return nil, err
	}
	ctx, span := telemetry.Start(ctx, "send", trace.WithSpanKind(trace.SpanKindProducer))
	defer span.End()
	if span.IsRecording() {
		span.SetName("send " + subjectKind(subject))
		span.SetAttributes(telemetry.MessagingSystem.String(telemetry.MessagingSystemNATS),
			telemetry.MessagingOperationType.String(telemetry.MessagingOpSend),
			telemetry.MessagingDestinationName.String(subject), telemetry.MessagingMessageID.String(id))
		defer func() {
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, "publish failed")
			}
		}()
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: telemetry.Inject(ctx, nil)}
	var lastErr error
	wait := 50 * time.Millisecond
	for attempt := 0; attempt < 8; attempt++ {
		ack, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
		if err == nil {
			return ack, nil
		}
		lastErr = err
		if ctx.Err() != nil || !retryable(err) {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait *= 2
	}
	return nil, fmt.Errorf("publish %s id %s: %w", subject, id, lastErr)
}

// Outgoing is one message of PublishAll: its subject, its id (Nats-Msg-Id), its body, and
// headers of its own, such as the trace context of the span it continues (telemetry.Inject).
type Outgoing struct {
	Subject, ID string
	Body        protocol.Message
	Header      nats.Header
}

// AckWait is how long PublishAll waits for JetStream's acks of its publishes before it
// publishes the ones still unacknowledged again.
const AckWait = 5 * time.Second

// PublishAll publishes msgs at once, each with its id as Nats-Msg-Id, and returns when
// JetStream has acknowledged every one: the publishes share one round trip instead of
// taking one each, and none is left unacknowledged. A publish refused or not acknowledged
// within AckWait is made again with Publish, which retries while the server is unavailable;
// the id makes the copy of one that got through a no-op.
func PublishAll(ctx context.Context, js jetstream.JetStream, msgs []Outgoing) error {
	if len(msgs) == 1 {
		_, err := Publish(telemetry.Extract(ctx, msgs[0].Header), js, msgs[0].Subject, msgs[0].ID, msgs[0].Body)
		return err
	}
	data := make([][]byte, len(msgs))
	for i, m := range msgs {
		var err error
		if data[i], err = protocol.Encode(m.Body); err != nil {
			return err
		}
	}
	futures := make([]jetstream.PubAckFuture, len(msgs))
	for i, m := range msgs {
		msg := &nats.Msg{Subject: m.Subject, Data: data[i], Header: m.Header}
		if f, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(m.ID)); err == nil {
			futures[i] = f
		}
	}
	late := time.NewTimer(AckWait)
	defer late.Stop()
	timedOut := false
	for i, f := range futures {
		acked := false
		if f != nil {
			if !timedOut {
				select {
				case <-f.Ok():
					acked = true
				case <-f.Err():
				case <-late.C:
					timedOut = true
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			if timedOut {
				select {
				case <-f.Ok():
					acked = true
				default:
				}
			}
		}
		if !acked {
			if _, err := Publish(telemetry.Extract(ctx, msgs[i].Header), js, msgs[i].Subject, msgs[i].ID, msgs[i].Body); err != nil {
				return err
			}
		}
	}
	return nil
}

// subjectKind is a subject's prefix and kind ("shoal.task"): a span name of few values, where
// the whole subject (run and model in it) is an attribute.
func subjectKind(subject string) string {
	i := strings.IndexByte(subject, '.')
	if i < 0 {
		return subject
	}
	if j := strings.IndexByte(subject[i+1:], '.'); j >= 0 {
		return subject[:i+1+j]
	}
	return subject
}

func retryable(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, jetstream.ErrNoHeartbeat) || isTimeout(err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// PutJSON encodes m and writes it to key in kv, returning the new revision.
func PutJSON(ctx context.Context, kv jetstream.KeyValue, key string, m protocol.Message) (uint64, error) {
	data, err := protocol.Encode(m)
	if err != nil {
		return 0, err
	}
	rev, err := kv.Put(ctx, key, data)
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", key, err)
	}
	return rev, nil
}

// GetJSON reads key from kv into m. A missing key returns an error wrapping
// jetstream.ErrKeyNotFound.
func GetJSON(ctx context.Context, kv jetstream.KeyValue, key string, m protocol.Message) (uint64, error) {
	e, err := kv.Get(ctx, key)
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", key, err)
	}
	if err := protocol.Decode(e.Value(), m); err != nil {
		return 0, fmt.Errorf("get %s: %w", key, err)
	}
	return e.Revision(), nil
}

// PublishEvent publishes a run event on shoal.event.<run>.<kind>, stamping its time and an id
// when they are unset. Events are for watchers: callers log a failure and go on.
func PublishEvent(ctx context.Context, js jetstream.JetStream, n protocol.Names, ev *protocol.Event) error {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if ev.ID == "" {
		ev.ID = fmt.Sprintf("ev.%s.%s.%s.%d", ev.Run, ev.Kind, ev.CandidateID, ev.Time.UnixNano())
	}
	_, err := Publish(ctx, js, n.Event(ev.Run, ev.Kind), ev.ID, ev)
	return err
}
