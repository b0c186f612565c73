package archive

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/metric"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/telemetry"
)

// metrics are the archive's instruments: the candidates the owner folds, by status and run
// (their rate is candidates per second), and each run's best score.
type metrics struct {
	meter      metric.Meter
	candidates metric.Int64Counter
	best       metric.Float64ObservableGauge
}

func newMetrics(m metric.Meter) (*metrics, error) {
	c, err := m.Int64Counter(telemetry.MetricCandidates, metric.WithUnit("{candidate}"),
		metric.WithDescription("candidates whose results the archive folded, by run and status (ok, failed, timeout, rejected)"))
	if err != nil {
		return nil, fmt.Errorf("archive metrics: %w", err)
	}
	b, err := m.Float64ObservableGauge(telemetry.MetricBestScore,
		metric.WithDescription("the best score of each run this replica owns"))
	if err != nil {
		return nil, fmt.Errorf("archive metrics: %w", err)
	}
	return &metrics{meter: m, candidates: c, best: b}, nil
}

func (m *metrics) folded(ctx context.Context, run string, status protocol.Status) {
	m.candidates.Add(context.WithoutCancel(ctx), 1, metric.WithAttributes(telemetry.Run.String(run), telemetry.Status.String(string(status))))
}

// observeBest reports what scores returns, run by run, when the meter is read.
func (m *metrics) observeBest(scores func() map[string]float64) (stop func(), err error) {
	reg, err := m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for run, score := range scores() {
			o.ObserveFloat64(m.best, score, metric.WithAttributes(telemetry.Run.String(run)))
		}
		return nil
	}, m.best)
	if err != nil {
		return nil, fmt.Errorf("best score gauge: %w", err)
	}
	return func() { _ = reg.Unregister() }, nil
}

// bestScores is the best score of each run, when this replica owns the runs.
func (s *Service) bestScores() map[string]float64 {
	if !s.owner() {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]float64, len(s.pops))
	for run, pop := range s.pops {
		if b, ok := pop.Best(); ok {
			out[run] = b.Score
		}
	}
	return out
}
