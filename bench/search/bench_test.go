package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
)

func result(seed bool, status protocol.Status, score float64) protocol.Result {
	r := protocol.Result{Meta: protocol.Meta{Run: "r"}, Status: status, Score: score}
	if !seed {
		r.Candidate.TaskID = "r.t1"
	}
	return r
}

func TestBestCurve(t *testing.T) {
	ok, failed := protocol.StatusOK, protocol.StatusFailed
	cases := []struct {
		name    string
		results []protocol.Result
		evals   int
		want    curve
		wantErr string
	}{
		{
			name:    "running best; failures score nothing",
			results: []protocol.Result{result(true, ok, 0.5), result(false, ok, 0.4), result(false, failed, 0.9), result(false, ok, 0.7), result(false, ok, 0.6)},
			evals:   4,
			want:    curve{0.5, 0.5, 0.5, 0.7, 0.7},
		},
		{
			name:    "results past the budget are left out",
			results: []protocol.Result{result(true, ok, 0.5), result(false, ok, 0.6), result(false, ok, 0.9)},
			evals:   1,
			want:    curve{0.5, 0.6},
		},
		{
			name:    "a failed seed counts as 0",
			results: []protocol.Result{result(true, failed, 0), result(false, ok, 0.2)},
			evals:   1,
			want:    curve{0, 0.2},
		},
		{
			name:    "too few evaluations",
			results: []protocol.Result{result(true, ok, 0.5), result(false, ok, 0.6)},
			evals:   3,
			wantErr: "1 evaluations, want 3",
		},
		{
			name:    "no seed",
			results: []protocol.Result{result(false, ok, 0.6)},
			evals:   1,
			wantErr: "before the seed",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bestCurve(tc.results, tc.evals)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// TestBenchSmallBudget runs the whole benchmark on circle_packing with a tiny budget: every
// method (the stand-in served in process) goes through the real services and python3, every run spends exactly its budget, the
// curves start at the seed's score and never fall, and the table and plot name the problem.
func TestBenchSmallBudget(t *testing.T) {
	p, err := loadProblem("circle_packing", filepath.Join(examplesDir, "circle_packing"))
	if err != nil {
		t.Fatal(err)
	}
	const evals = 6
	methods := []method{evolution, standin, random}
	cfg := benchConfig{
		problems: []*problem{p},
		seeds:    []int64{1, 2},
		evals:    evals,
		methods:  methods,
		workDir:  t.TempDir(),
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := runBench(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const seedScore = 2.138246841523449 / 2.635 // the seed's ring construction
	for _, m := range methods {
		curves := out["circle_packing"][m]
		if len(curves) != len(cfg.seeds) {
			t.Fatalf("%s: %d curves, want %d", m, len(curves), len(cfg.seeds))
		}
		for i, c := range curves {
			if len(c) != evals+1 {
				t.Errorf("%s seed %d: %d points, want %d", m, cfg.seeds[i], len(c), evals+1)
			}
			if c[0] < seedScore-1e-9 || c[0] > seedScore+1e-9 {
				t.Errorf("%s seed %d: starts at %v, want the seed's %v", m, cfg.seeds[i], c[0], seedScore)
			}
			for k := 1; k < len(c); k++ {
				if c[k] < c[k-1] {
					t.Errorf("%s seed %d: best falls from %v to %v at %d", m, cfg.seeds[i], c[k-1], c[k], k)
				}
			}
		}
	}
	var table, svg, png bytes.Buffer
	printTable(&table, []string{"circle_packing"}, methods, out, checkpoints(evals))
	if !strings.Contains(table.String(), "circle_packing") || strings.Count(table.String(), "\n") != 1+len(checkpoints(evals)) {
		t.Errorf("table:\n%s", table.String())
	}
	if err := writePlot(&svg, false, []string{"circle_packing"}, methods, out, len(cfg.seeds)); err != nil {
		t.Fatal(err)
	}
	if err := writePlot(&png, true, []string{"circle_packing"}, methods, out, len(cfg.seeds)); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png.Bytes(), []byte("\x89PNG")) {
		t.Errorf("PNG plot starts with %q", png.Bytes()[:min(8, png.Len())])
	}
	if !strings.Contains(svg.String(), "<svg") || !strings.Contains(svg.String(), "circle_packing") {
		t.Errorf("plot is not an SVG naming the problem: %.200s", svg.String())
	}
}

func TestCheckpoints(t *testing.T) {
	if got, want := checkpoints(300), []int{0, 10, 20, 40, 80, 160, 300}; !slices.Equal(got, want) {
		t.Errorf("checkpoints(300) = %v, want %v", got, want)
	}
	if got, err := parseCheckpoints("1000,3000,10000", 3000); err != nil || !slices.Equal(got, []int{0, 1000, 3000}) {
		t.Errorf("parseCheckpoints past the budget = %v, %v; want [0 1000 3000]", got, err)
	}
}

// TestDiagnose reads a short run back: a duplicate, a child above its parent that is a new
// best, and a child of a copy (a migrant's id) scored against the copy's original.
func TestDiagnose(t *testing.T) {
	res := func(id, parent, code string, score float64) protocol.Result {
		r := protocol.Result{Status: protocol.StatusOK, Score: score}
		r.Candidate.ID, r.Candidate.ParentID, r.Candidate.Code = id, parent, code
		if parent != "" {
			r.Candidate.TaskID = "t-" + id
		}
		return r
	}
	d := diagnose([]protocol.Result{
		res("s", "", "a\nx", 0.5),
		res("c1", "s", "b\nx", 0.7),     // better than its parent, new best
		res("c2", "s~i1", "b\nx", 0.6),  // a duplicate; parent is the seed's copy (0.5)
		res("c3", "c1~i2", "c\ny", 0.4), // parent at the best (0.7); two lines changed
	}, 3)
	want := diagnosis{evals: 3, oneLine: 2, duplicates: 1, better: 2, newBest: 1, parentBest: 2, gap: 0.2,
		lateEvals: 2, lateBetter: 1, lateParentBest: 1, lateGap: 0.2}
	if math.Abs(d.gap-want.gap) > 1e-12 || math.Abs(d.lateGap-want.lateGap) > 1e-12 {
		t.Fatalf("gap %v, late gap %v; want %v, %v", d.gap, d.lateGap, want.gap, want.lateGap)
	}
	d.gap, d.lateGap = want.gap, want.lateGap
	if d != want {
		t.Errorf("diagnose = %+v, want %+v", d, want)
	}
}
