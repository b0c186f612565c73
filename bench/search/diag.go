package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// diagnosis is how a run's search spent its evaluations, read back from its results: where
// its parents came from and what their children did. It is what tells a search that stalls
// from one that climbs slowly.
type diagnosis struct {
	// evals counts the generated results read (up to the budget).
	evals int
	// duplicates counts children whose code an earlier result of the run already had.
	duplicates int
	// rejected counts children whose edit did not apply.
	rejected int
	// oneLine counts children that differ from their parent's code in exactly one line: with
	// the stand-in, which edits one line of the prompt's current program, every child should,
	// unless the prompt showed the model a program other than the parent.
	oneLine int
	// better counts working children that scored above their parent.
	better int
	// newBest counts children that raised the run's best.
	newBest int
	// parentBest counts children whose parent scored the run's best at the time the child was
	// folded; gap sums the run's best minus the parent's score over all children.
	parentBest int
	gap        float64
	// late* are the same over the second half of the budget, where a stall shows.
	lateEvals, lateBetter, lateParentBest int
	lateGap                               float64
}

// diagnose reads a run's results in RESULTS order.
func diagnose(results []protocol.Result, evals int) diagnosis {
	var d diagnosis
	score := map[string]float64{}
	code := map[string]string{}
	seen := map[string]bool{}
	best := 0.0
	for _, r := range results {
		c := &r.Candidate
		s := 0.0
		if r.Status == protocol.StatusOK {
			s = r.Score
		}
		if c.IsSeed() {
			score[c.ID], code[c.ID], seen[c.Code], best = s, c.Code, true, max(best, s)
			continue
		}
		if d.evals >= evals {
			break
		}
		d.evals++
		late := d.evals > evals/2
		parent := score[originalID(c.ParentID)]
		if r.Status == protocol.StatusRejected {
			d.rejected++
		}
		if pc, ok := code[originalID(c.ParentID)]; ok && c.Code != "" && linesChanged(pc, c.Code) == 1 {
			d.oneLine++
		}
		if c.Code != "" && seen[c.Code] {
			d.duplicates++
		}
		seen[c.Code] = true
		atBest := parent >= best
		gap := best - parent
		d.gap += gap
		if atBest {
			d.parentBest++
		}
		if late {
			d.lateEvals++
			d.lateGap += gap
			if atBest {
				d.lateParentBest++
			}
		}
		if r.Status == protocol.StatusOK && s > parent {
			d.better++
			if late {
				d.lateBetter++
			}
		}
		if s > best {
			d.newBest++
			best = s
		}
		score[c.ID], code[c.ID] = s, c.Code
	}
	return d
}

// linesChanged counts the lines that differ between two programs of the same length in
// lines, or returns -1 when their lengths differ.
func linesChanged(a, b string) int {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	if len(la) != len(lb) {
		return -1
	}
	n := 0
	for i := range la {
		if la[i] != lb[i] {
			n++
		}
	}
	return n
}

// originalID maps a copy's id (a seed on another island, a migrant: id~iN) to its original.
func originalID(id string) string {
	if i := strings.Index(id, "~i"); i >= 0 {
		return id[:i]
	}
	return id
}

// printDiagnoses writes one line per problem and method: the means over its seeds.
func printDiagnoses(w io.Writer, order []string, methods []method, diags map[string]map[method][]diagnosis) {
	fmt.Fprintf(w, "%-22s %-10s %8s %8s %8s %8s %8s %10s %10s %10s %10s\n", "problem", "method", "1-line %", "dup %", "rejected", "better %", "new best",
		"at best %", "gap", "late bet %", "late gap")
	for _, name := range order {
		for _, m := range methods {
			ds := diags[name][m]
			if len(ds) == 0 {
				continue
			}
			var one, dup, rej, bet, nb, pb, gap, lb, lg float64
			for _, d := range ds {
				n, ln := float64(max(d.evals, 1)), float64(max(d.lateEvals, 1))
				one += 100 * float64(d.oneLine) / n
				dup += 100 * float64(d.duplicates) / n
				rej += float64(d.rejected)
				bet += 100 * float64(d.better) / n
				nb += float64(d.newBest)
				pb += 100 * float64(d.parentBest) / n
				gap += d.gap / n
				lb += 100 * float64(d.lateBetter) / ln
				lg += d.lateGap / ln
			}
			k := float64(len(ds))
			fmt.Fprintf(w, "%-22s %-10s %8.1f %8.1f %8.1f %8.1f %8.1f %10.1f %10.4f %10.1f %10.4f\n", name, m, one/k, dup/k, rej/k, bet/k, nb/k, pb/k, gap/k, lb/k, lg/k)
		}
	}
}
