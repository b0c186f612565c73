package launch

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/telemetry"
)

// gpuSampleInterval is how often the GPU gauges read the ledger and NVML at most, however
// often they are scraped.
const gpuSampleInterval = 5 * time.Second

// Observe reports this host's GPU memory, leased (the ledger's live leases, every replica's)
// against used (what NVML sees its processes use, where the inventory came from NVML), and
// how long each claim of a lease waited. Call it before Start; stop unregisters the gauges.
func (b *Backend) Observe(m metric.Meter) (stop func(), err error) {
	if _, ok := m.(noop.Meter); ok || b.cfg.NoGPUs != "" {
		return func() {}, nil
	}
	wait, err := m.Float64Histogram(telemetry.MetricLeaseWaitTime, metric.WithUnit("s"),
		metric.WithDescription("time a model server's claim of GPUs waited for its lease, by model and outcome"))
	if err != nil {
		return nil, fmt.Errorf("launch metrics: %w", err)
	}
	b.claimWait = wait
	leased, err := m.Int64ObservableGauge(telemetry.MetricGPULeased, metric.WithUnit("By"),
		metric.WithDescription("GPU memory the live leases of the lease ledger hold, by host and GPU"))
	if err != nil {
		return nil, fmt.Errorf("launch metrics: %w", err)
	}
	used, err := m.Int64ObservableGauge(telemetry.MetricGPUUsed, metric.WithUnit("By"),
		metric.WithDescription("GPU memory in use by processes as NVML reads it, by host and GPU"))
	if err != nil {
		return nil, fmt.Errorf("launch metrics: %w", err)
	}
	var (
		mu   sync.Mutex
		at   time.Time
		last map[string][2]int64 // uuid: leased, used (-1: unknown)
	)
	inv := b.cfg.Inventory
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		mu.Lock()
		defer mu.Unlock()
		if last == nil || time.Since(at) >= gpuSampleInterval {
			last, at = b.sampleGPUs(ctx, inv), time.Now()
		}
		for uuid, v := range last {
			attrs := metric.WithAttributes(telemetry.Host.String(inv.Host), telemetry.GPU.String(uuid))
			o.ObserveInt64(leased, v[0], attrs)
			if v[1] >= 0 {
				o.ObserveInt64(used, v[1], attrs)
			}
		}
		return nil
	}, leased, used)
	if err != nil {
		return nil, fmt.Errorf("launch metrics: %w", err)
	}
	return func() { _ = reg.Unregister() }, nil
}

// sampleGPUs reads the ledger (one KV get) and, for an NVML inventory, each GPU's use.
func (b *Backend) sampleGPUs(ctx context.Context, inv gpu.Inventory) map[string][2]int64 {
	out := make(map[string][2]int64, len(inv.GPUs))
	var leased map[string]gpu.MiB
	b.mu.Lock()
	kv := b.leases
	b.mu.Unlock()
	if kv != nil {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if led, err := lease.Read(ctx, kv, inv.Host); err == nil {
			leased = led.Used(time.Now())
		}
		cancel()
	}
	for _, g := range inv.GPUs {
		u := int64(-1)
		if inv.Source == "nvml" {
			if mib, err := gpu.UsedByProcesses(g.UUID); err == nil {
				u = int64(mib) << 20
			}
		}
		out[g.UUID] = [2]int64{int64(leased[g.UUID]) << 20, u}
	}
	return out
}

// recordClaim records how long a claim waited and how it ended.
func (b *Backend) recordClaim(model string, took time.Duration, err error) {
	if b.claimWait == nil {
		return
	}
	outcome := "granted"
	if err != nil {
		outcome = "failed"
	}
	b.claimWait.Record(context.Background(), took.Seconds(), metric.WithAttributes(
		telemetry.GenAIRequestModel.String(model), attribute.String("shoal.outcome", outcome)))
}
