// Command placebench compares shoal's GPU placement with the strategies users write by hand
// and with an exhaustive optimum, on a fixed set of hosts and model mixes (the three failures
// of the placement issue and the fleets of pkg/gpu/placement's table tests).
//
//	go run ./pkg/gpu/placement/internal/placebench [-v]
//
// For each scenario it prints the replicas asked for and, per strategy, replicas placed / VRAM
// leased (GiB):
//   - shoal: placement.ChooseVariant then placement.Fit per replica, in arrival order;
//   - round-robin: gpus_per_worker = len(gpus) // workers, worker k gets [k*g, (k+1)*g),
//     first variant only;
//   - fixed: big models on the last card, small ones on card 0, first variant only;
//   - optimum: every assignment searched; most replicas, then least VRAM;
//   - optimum/pref: most replicas, then most preferred variants, then least VRAM (what
//     shoal aims at: it keeps Q8 where Q8 fits, so it leases more VRAM than "optimum").
//
// -v also prints where each replica went (the optimum names cards by kind: "2×20.5/23.5G" is
// 20.5 GiB on each of two cards that had 23.5 GiB free) and why shoal refused one.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/shoal-run/shoal/pkg/gpu"
)

func main() {
	verbose := flag.Bool("v", false, "print where each replica went")
	flag.Parse()
	report(os.Stdout, *verbose)
}

type row struct {
	s                                  scenario
	shoal, rr, fixed, optimum, optPref result
}

func evaluate(s scenario) row {
	return row{s: s, shoal: runShoal(s), rr: runRoundRobin(s), fixed: runFixed(s),
		optimum: runOptimum(s, false), optPref: runOptimum(s, true)}
}

func cell(r result) string {
	b := ""
	if r.bounded {
		b = "≥"
	}
	return fmt.Sprintf("%s%d / %s", b, r.placed, gibs(r.vram))
}

func gibs(m gpu.MiB) string {
	return strconv.FormatFloat(float64(m)/float64(gpu.GiB), 'f', 1, 64)
}

func report(out io.Writer, verbose bool) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tGPUs\tasked\tshoal\tround-robin\tfixed\toptimum\toptimum/pref\tshoal = optimum?\t")
	var rows []row
	totals := make([]int, 6)
	for _, s := range scenarios {
		r := evaluate(s)
		rows = append(rows, r)
		match := "yes"
		if r.shoal.placed < r.optimum.placed {
			match = fmt.Sprintf("no (%d short)", r.optimum.placed-r.shoal.placed)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", s.name, s.spec, len(s.replicas),
			cell(r.shoal), cell(r.rr), cell(r.fixed), cell(r.optimum), cell(r.optPref), match)
		for k, p := range []int{len(s.replicas), r.shoal.placed, r.rr.placed, r.fixed.placed, r.optimum.placed, r.optPref.placed} {
			totals[k] += p
		}
	}
	fmt.Fprintf(tw, "total\t\t%d\t%d\t%d\t%d\t%d\t%d\t\t\n", totals[0], totals[1], totals[2], totals[3], totals[4], totals[5])
	tw.Flush()
	fmt.Fprintln(out, "cells: replicas placed / VRAM leased (GiB); every card keeps a 512 MiB reserve")
	if !verbose {
		return
	}
	for _, r := range rows {
		fmt.Fprintf(out, "\n%s (%s)\n", r.s.name, r.s.spec)
		for k, rep := range r.s.replicas {
			fmt.Fprintf(out, "  %-6s shoal %-14s round-robin %-14s fixed %-10s optimum/pref %s\n", rep.model,
				r.shoal.detail[k], r.rr.detail[k], r.fixed.detail[k], r.optPref.detail[k])
		}
	}
}

// used by the test and the benchmark: a short name without spaces.
func slug(name string) string {
	return strings.NewReplacer(" ", "_", ":", "", "|", "-", "(", "", ")", "", ",", "").Replace(name)
}
