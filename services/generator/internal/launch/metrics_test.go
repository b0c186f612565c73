package launch_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/telemetry"
	"github.com/shoal-run/shoal/services/generator/internal/launch"
	"github.com/shoal-run/shoal/services/generator/internal/launch/launchtest"
)

// TestGPUMetrics: once a launched model holds a lease, the GPU gauges show the memory the
// ledger grants on each GPU, and the claim's wait is measured. A declared inventory has no
// NVML to read use from, so no use is reported rather than a made-up one.
func TestGPUMetrics(t *testing.T) {
	launchtest.NoLeaks(t)
	dir := t.TempDir()
	launchtest.KillGroups(t, dir)
	server := launchtest.Recorded(dir, "python3 "+launchtest.Standin(t)+" --port {port} --model-name {model}")
	ps := launchtest.Profiles(t, launchtest.Profile("standin", server, `
    health_path: /health
    startup_timeout: 60
    variants:
      - {name: big, need_gib: 30, group_sizes: [2]}
`))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	e := startObserved(t, launch.Config{Replica: "gen-m", Profiles: ps}, "2x24GiB", mp.Meter("test"))
	if _, err := e.ask("r1", model("coder", "standin")); err != nil {
		t.Fatalf("task: %v", err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(e.ctx, &rm); err != nil {
		t.Fatal(err)
	}
	var leased int64
	gpus := 0
	claims := uint64(0)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch m.Name {
			case telemetry.MetricGPULeased:
				for _, p := range m.Data.(metricdata.Gauge[int64]).DataPoints {
					leased += p.Value
					gpus++
				}
			case telemetry.MetricGPUUsed:
				t.Errorf("GPU use reported for a declared inventory: %+v", m.Data)
			case telemetry.MetricLeaseWaitTime:
				for _, p := range m.Data.(metricdata.Histogram[float64]).DataPoints {
					claims += p.Count
				}
			}
		}
	}
	if gpus != 2 || leased < 30*int64(gpu.GiB)<<20 {
		t.Errorf("leased memory %d bytes over %d GPUs; want ≥ 30 GiB over 2", leased, gpus)
	}
	if claims != 1 {
		t.Errorf("%d claims measured, want 1", claims)
	}
}
