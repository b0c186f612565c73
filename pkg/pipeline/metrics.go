package pipeline

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/shoal-run/shoal/pkg/telemetry"
)

// stageMetrics is a stage's processing time (messaging.process.duration); on is false for a
// no-op meter, which spares Handle reading the message's metadata.
type stageMetrics struct {
	on       bool
	duration metric.Float64Histogram
}

func newStageMetrics(m metric.Meter) *stageMetrics {
	_, noopMeter := m.(noop.Meter)
	h, err := m.Float64Histogram(telemetry.MetricProcessDuration, metric.WithUnit("s"),
		metric.WithDescription("time a stage took over one message: decode, work, publish of its output"))
	if err != nil {
		h, noopMeter = noop.Float64Histogram{}, true
	}
	return &stageMetrics{on: !noopMeter, duration: h}
}

func (m *stageMetrics) processed(ctx context.Context, stream string, start time.Time, err error) {
	if !m.on {
		return
	}
	attrs := []attribute.KeyValue{telemetry.MessagingSystem.String(telemetry.MessagingSystemNATS), telemetry.MessagingDestinationName.String(stream)}
	switch {
	case err == nil:
	case errors.Is(err, ErrPermanent):
		attrs = append(attrs, telemetry.ErrorType.String("permanent"))
	default:
		attrs = append(attrs, telemetry.ErrorType.String("retry"))
	}
	m.duration.Record(context.WithoutCancel(ctx), time.Since(start).Seconds(), metric.WithAttributes(attrs...))
}

// ConsumerSampleInterval is how often ObserveConsumer asks the server for a consumer's state
// at most, however often it is scraped: one $JS.API.CONSUMER.INFO request, which every role
// may make for the consumers it reads.
const ConsumerSampleInterval = 5 * time.Second

// ObserveConsumer reports cons's queue depth (shoal.queue.depth: messages not yet delivered
// plus those delivered and not yet acked) and lag (shoal.consumer.lag: messages not yet
// delivered) as gauges by stream and consumer, sampled when the meter is read and at most
// every interval (0: ConsumerSampleInterval). name labels the consumer; empty: its own name
// (an ordered consumer's changes with each reset: name it). stop unregisters them. With a
// no-op meter it costs nothing.
func ObserveConsumer(m metric.Meter, cons jetstream.Consumer, name string, interval time.Duration) (stop func(), err error) {
	if _, ok := m.(noop.Meter); ok {
		return func() {}, nil
	}
	if interval <= 0 {
		interval = ConsumerSampleInterval
	}
	depth, err := m.Int64ObservableGauge(telemetry.MetricQueueDepth, metric.WithUnit("{message}"),
		metric.WithDescription("messages a consumer has still to finish: not yet delivered, or delivered and not yet acked"))
	if err != nil {
		return nil, err
	}
	lag, err := m.Int64ObservableGauge(telemetry.MetricConsumerLag, metric.WithUnit("{message}"),
		metric.WithDescription("messages of the stream a consumer has not yet been delivered"))
	if err != nil {
		return nil, err
	}
	s := &consumerSample{cons: cons, interval: interval}
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		info := s.get(ctx)
		if info == nil {
			return nil
		}
		consumer := name
		if consumer == "" {
			consumer = info.Name
		}
		attrs := metric.WithAttributes(telemetry.MessagingSystem.String(telemetry.MessagingSystemNATS),
			telemetry.MessagingDestinationName.String(info.Stream), telemetry.MessagingConsumerGroup.String(consumer))
		o.ObserveInt64(depth, int64(info.NumPending)+int64(info.NumAckPending), attrs)
		o.ObserveInt64(lag, int64(info.NumPending), attrs)
		return nil
	}, depth, lag)
	if err != nil {
		return nil, err
	}
	return func() { _ = reg.Unregister() }, nil
}

// consumerSample caches a consumer's info for interval.
type consumerSample struct {
	cons     jetstream.Consumer
	interval time.Duration

	mu   sync.Mutex
	at   time.Time
	info *jetstream.ConsumerInfo
}

func (s *consumerSample) get(ctx context.Context) *jetstream.ConsumerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.info != nil && time.Since(s.at) < s.interval {
		return s.info
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := s.cons.Info(ctx)
	if err != nil {
		return s.info // the last known state, or nothing
	}
	s.info, s.at = info, time.Now()
	return info
}
