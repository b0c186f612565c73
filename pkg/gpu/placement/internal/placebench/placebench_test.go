package main

import (
	"io"
	"testing"
)

// TestShoalMatchesOptimum holds the claims of the scenario set both ways: where a scenario
// claims optimal, shoal places as many replicas as the exhaustive optimum; where it does not,
// shoal is still short (so a placement change that closes the gap updates the claim). Every
// strategy stays within the optimum, which must be exact (not cut by its node limit).
func TestShoalMatchesOptimum(t *testing.T) {
	for _, s := range scenarios {
		t.Run(slug(s.name), func(t *testing.T) {
			r := evaluate(s)
			if r.optimum.bounded || r.optPref.bounded {
				t.Fatalf("optimum hit its node limit: got a lower bound, want an exact answer")
			}
			if r.optPref.placed != r.optimum.placed {
				t.Errorf("optimum/pref placed %d, optimum %d: want equal (same first objective)", r.optPref.placed, r.optimum.placed)
			}
			for name, got := range map[string]result{"shoal": r.shoal, "round-robin": r.rr, "fixed": r.fixed} {
				if got.placed > r.optimum.placed {
					t.Errorf("%s placed %d, want at most the optimum's %d", name, got.placed, r.optimum.placed)
				}
			}
			switch {
			case s.optimal && r.shoal.placed != r.optimum.placed:
				t.Errorf("shoal placed %d (%v), want the optimum's %d", r.shoal.placed, r.shoal.detail, r.optimum.placed)
			case !s.optimal && r.shoal.placed >= r.optimum.placed:
				t.Errorf("shoal placed %d, the optimum %d: shoal now matches, mark the scenario optimal", r.shoal.placed, r.optimum.placed)
			}
		})
	}
}

// TestIssueFailures: on the issue's three failures shoal places every replica, and each
// naive strategy loses at least one of them somewhere.
func TestIssueFailures(t *testing.T) {
	rrLost, fixedLost := 0, 0
	for _, s := range scenarios[:5] {
		r := evaluate(s)
		if r.shoal.placed != len(s.replicas) {
			t.Errorf("%s: shoal placed %d (%v), want all %d", s.name, r.shoal.placed, r.shoal.detail, len(s.replicas))
		}
		rrLost += len(s.replicas) - r.rr.placed
		fixedLost += len(s.replicas) - r.fixed.placed
	}
	if rrLost == 0 || fixedLost == 0 {
		t.Errorf("naive strategies lost %d (round-robin) and %d (fixed) replicas, want both > 0", rrLost, fixedLost)
	}
}

func TestReport(t *testing.T) {
	report(io.Discard, true)
}

// BenchmarkScenarios times shoal's placement of each whole scenario and reports, as metrics
// that `make bench` prints, the replicas each strategy placed and the VRAM shoal leased.
func BenchmarkScenarios(b *testing.B) {
	for _, s := range scenarios {
		b.Run(slug(s.name), func(b *testing.B) {
			r := evaluate(s)
			for b.Loop() {
				runShoal(s)
			}
			b.ReportMetric(float64(len(s.replicas)), "asked")
			b.ReportMetric(float64(r.shoal.placed), "shoal")
			b.ReportMetric(float64(r.rr.placed), "round-robin")
			b.ReportMetric(float64(r.fixed.placed), "fixed")
			b.ReportMetric(float64(r.optimum.placed), "optimum")
			b.ReportMetric(float64(r.shoal.vram)/1024, "shoal-GiB")
		})
	}
}
