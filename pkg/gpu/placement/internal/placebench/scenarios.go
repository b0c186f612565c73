package main

import (
	"fmt"

	"github.com/shoal-run/shoal/pkg/gpu"
)

// replica is one generator replica to start: a model and its variants in order of preference.
type replica struct {
	model    string
	variants []gpu.Variant
}

// scenario is a host and the replicas started on it, in arrival order.
type scenario struct {
	name     string
	spec     string // gpu.ParseDeclared spec; every card keeps a 512 MiB reserve
	replicas []replica
	// optimal claims that shoal places as many replicas as the exhaustive optimum. The test
	// holds both ways: a claim that fails, or a scenario where shoal catches up unclaimed.
	optimal bool
}

const reserveMiB gpu.MiB = 512

func (s scenario) inventory() gpu.Inventory {
	inv, err := gpu.ParseDeclared("bench", s.spec)
	if err != nil {
		panic(fmt.Sprintf("scenario %s: %v", s.name, err))
	}
	inv.ReserveMiB = reserveMiB
	return inv
}

// workers counts the replicas of each model: what the lease client reads from the generators
// registry and passes to ChooseVariant.
func (s scenario) workers(model string) int {
	n := 0
	for _, r := range s.replicas {
		if r.model == model {
			n++
		}
	}
	return n
}

func gib(g float64) gpu.MiB { return gpu.MiB(g * float64(gpu.GiB)) }

// Variants: NeedMiB is weights + KV cache for the context; 512 MiB per GPU of overhead on
// consumer cards, 1 GiB on data-centre cards.
var (
	q8of12B   = gpu.Variant{Name: "q8", NeedMiB: gib(12.5), PerGPUOverheadMiB: 512}
	q4of12B   = gpu.Variant{Name: "q4", NeedMiB: 7 * gpu.GiB, PerGPUOverheadMiB: 512}
	q4of27B   = gpu.Variant{Name: "q4", NeedMiB: 17 * gpu.GiB, PerGPUOverheadMiB: 512}
	q8of4B    = gpu.Variant{Name: "q8", NeedMiB: gib(3.5), PerGPUOverheadMiB: 512}
	q4of70B   = gpu.Variant{Name: "q4", NeedMiB: 40 * gpu.GiB, PerGPUOverheadMiB: 512}
	q3of70B   = gpu.Variant{Name: "q3", NeedMiB: 31 * gpu.GiB, PerGPUOverheadMiB: 512}
	q8of13B   = gpu.Variant{Name: "q8", NeedMiB: 13 * gpu.GiB, PerGPUOverheadMiB: 512}
	q4of13B   = gpu.Variant{Name: "q4", NeedMiB: gib(7.5), PerGPUOverheadMiB: 512}
	q8of7B    = gpu.Variant{Name: "q8", NeedMiB: gib(7.5), PerGPUOverheadMiB: 512}
	q4of7B    = gpu.Variant{Name: "q4", NeedMiB: gib(4.5), PerGPUOverheadMiB: 512}
	q8of3B    = gpu.Variant{Name: "q8", NeedMiB: 2 * gpu.GiB, PerGPUOverheadMiB: 512}
	q8of1B    = gpu.Variant{Name: "q8", NeedMiB: gib(1.2), PerGPUOverheadMiB: 512}
	q8of8B    = gpu.Variant{Name: "q8", NeedMiB: 8 * gpu.GiB, PerGPUOverheadMiB: 512}
	q4of30B   = gpu.Variant{Name: "q4", NeedMiB: 18 * gpu.GiB, PerGPUOverheadMiB: 512}
	bf16of8B  = gpu.Variant{Name: "bf16", NeedMiB: 16 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
	bf16of70  = gpu.Variant{Name: "bf16", NeedMiB: 140 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
	fp8of70   = gpu.Variant{Name: "fp8", NeedMiB: 72 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
	fp8of32B  = gpu.Variant{Name: "fp8", NeedMiB: 36 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
	fp8of235  = gpu.Variant{Name: "fp8", NeedMiB: 240 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
	bf16of405 = gpu.Variant{Name: "bf16", NeedMiB: 810 * gpu.GiB, PerGPUOverheadMiB: gpu.GiB}
)

func rep(model string, n int, variants ...gpu.Variant) []replica {
	out := make([]replica, n)
	for k := range out {
		out[k] = replica{model: model, variants: variants}
	}
	return out
}

func seq(parts ...[]replica) []replica {
	var out []replica
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// scenarios: the three failures first, then the fleets of the table tests.
var scenarios = []scenario{
	{name: "a: 12.5G Q8|Q4 x2 workers", spec: "4x11GiB",
		replicas: rep("12b", 2, q8of12B, q4of12B), optimal: true},
	{name: "a: 12.5G Q8|Q4 x4 workers", spec: "4x11GiB",
		replicas: rep("12b", 4, q8of12B, q4of12B), optimal: true},
	{name: "b: 27B then 4B", spec: "2x24GiB",
		replicas: seq(rep("27b", 1, q4of27B), rep("4b", 1, q8of4B)), optimal: true},
	{name: "b: 4B then 27B", spec: "2x24GiB",
		replicas: seq(rep("4b", 1, q8of4B), rep("27b", 1, q4of27B)), optimal: true},
	{name: "c: 3x 4B then 70B Q4 (2 cards)", spec: "3x24GiB",
		replicas: seq(rep("4b", 3, q8of4B), rep("70b", 1, q4of70B)), optimal: true},
	// Not optimal: the 7B arrives alone and ChooseVariant keeps its preferred Q8; the 1B that
	// arrives last no longer fits. The optimum runs the 7B as Q4. ChooseVariant sees live
	// leases, not replicas yet to come.
	{name: "1x11: 7B Q8|Q4, 3B, 1B", spec: "1x11GiB",
		replicas: seq(rep("7b", 1, q8of7B, q4of7B), rep("3b", 1, q8of3B), rep("1b", 1, q8of1B))},
	{name: "2x24: 13B Q8|Q4 x3, 4B", spec: "2x24GiB",
		replicas: seq(rep("13b", 3, q8of13B, q4of13B), rep("4b", 1, q8of4B)), optimal: true},
	// Not optimal: the second 4B joins the first on card 0 (small beside small) instead of
	// sitting beside the 27B, so the second 27B finds no card. The optimum pairs a 4B with
	// each 27B, which is the packing failure (b) forbids when the other card is free.
	{name: "2x24: 4B, 27B, 4B, 27B", spec: "2x24GiB",
		replicas: seq(rep("4b", 1, q8of4B), rep("27b", 1, q4of27B), rep("4b-b", 1, q8of4B), rep("27b-b", 1, q4of27B))},
	{name: "4x11: 3x 4B, 12B Q8|Q4 x2", spec: "4x11GiB",
		replicas: seq(rep("4b", 3, q8of4B), rep("12b", 2, q8of12B, q4of12B)), optimal: true},
	// Not optimal: the 4Bs take a wholly free card rather than sit beside a 30B (large and
	// small are kept apart), so the 70B that comes last finds one free card, not two.
	{name: "4x24+11: 8B, 30B x2, 4B x2, 70B", spec: "4x24GiB,1x11GiB",
		replicas: seq(rep("8b", 1, q8of8B), rep("30b", 2, q4of30B), rep("4b", 2, q8of4B), rep("70b", 1, q4of70B, q3of70B))},
	// Not optimal: both 70B workers fit as Q4 (2 cards each), so ChooseVariant keeps Q4 and
	// the 8Bs that arrive later find no room; the optimum runs the 70B as Q3 and splits each
	// 8B over two partly used cards (shoal gives groups wholly free cards only).
	{name: "4x24: 70B Q4|Q3 x2, 8B x2", spec: "4x24GiB",
		replicas: seq(rep("70b", 2, q4of70B, q3of70B), rep("8b", 2, q8of8B))},
	{name: "8x80 nvl: 70B x2, 8B x4, 32B x2", spec: "8x80GiB:nvlink-pairs",
		replicas: seq(rep("70b", 2, bf16of70, fp8of70), rep("8b", 4, bf16of8B), rep("32b", 2, fp8of32B)), optimal: true},
	{name: "8x80 nvl: 235B (4 cards), 70B, 8B x3", spec: "8x80GiB:nvlink-pairs",
		replicas: seq(rep("235b", 1, fp8of235), rep("70b", 1, bf16of70, fp8of70), rep("8b", 3, bf16of8B)), optimal: true},
	{name: "1x80: 4B x12, 8B x2", spec: "1x80GiB",
		replicas: seq(rep("4b", 12, q8of4B), rep("8b", 2, bf16of8B)), optimal: true},
	{name: "4x24: 405B (never), 27B x2, 4B x2", spec: "4x24GiB",
		replicas: seq(rep("405b", 1, bf16of405), rep("27b", 2, q4of27B), rep("4b", 2, q8of4B)), optimal: true},
}
