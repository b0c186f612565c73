package mutate

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-run/shoal/pkg/program"
)

// parametric is the shape of most evolved programs: a fixed harness around a block of
// tunable constants and a few statements.
const parametric = `"""Pack circles; the evaluator calls run()."""
import math

SCALE = 2.5  # outside the block: never touched


# EVOLVE-BLOCK-START
def construct(n=26):
    """Place n circles; 0.5 in this docstring is text."""
    radius = 0.085
    spacing = 1.75 * radius
    jitter = 1e-3
    rows = 5
    label = "v2 with 3.5 inside a string"  # and 4.5 in a comment
    x1 = 0.1
    centers = []
    for i in range(n):
        row, col = divmod(i, rows)
        cx = x1 + col * spacing + (row % 2) * 0.5 * spacing
        cy = 0.1 + row * spacing * math.sqrt(3) / 2
        cx += jitter * ((i * 7) % 3)
        centers.append((cx, cy, radius))
    weights = [0.25, 0.5,
               0.75, 1.0]
    total = sum(weights) * 0.9
    return centers, total
# EVOLVE-BLOCK-END


def run():
    return construct()
`

func TestMutateIsDeterministic(t *testing.T) {
	for _, seed := range []int64{1, 2, 42, -7} {
		in := Input{Parent: parametric, Language: "python", Seed: seed}
		a, sa, err := Mutate(in)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		b, sb, err := Mutate(in)
		if err != nil {
			t.Fatal(err)
		}
		if a != b || sa != sb {
			t.Errorf("seed %d: two runs differ:\n%s\n---\n%s", seed, sa, sb)
		}
	}
	distinct := map[string]bool{}
	for seed := range int64(20) {
		code, _, err := Mutate(Input{Parent: parametric, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		distinct[code] = true
	}
	if len(distinct) < 15 {
		t.Errorf("20 seeds gave %d distinct mutants, want most of them distinct", len(distinct))
	}
}

func TestMutateStaysInsideBlock(t *testing.T) {
	regions, err := program.Regions(parametric)
	if err != nil {
		t.Fatal(err)
	}
	r := regions[0]
	parent := program.Lines(parametric)
	before, after := parent[:r.Start], parent[r.End:]
	for seed := range int64(200) {
		code, summary, err := Mutate(Input{Parent: parametric, Seed: seed})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if code == parametric {
			t.Fatalf("seed %d: mutant equals parent (%s)", seed, summary)
		}
		lines := program.Lines(code)
		if strings.Join(lines[:r.Start], "\n") != strings.Join(before, "\n") ||
			strings.Join(lines[len(lines)-len(after):], "\n") != strings.Join(after, "\n") {
			t.Fatalf("seed %d changed lines outside the block (%s):\n%s", seed, summary, code)
		}
		for _, untouchable := range []string{`"v2 with 3.5 inside a string"`, "# and 4.5 in a comment", "0.5 in this docstring", "x1 = ", "divmod(i, rows)"} {
			if !strings.Contains(code, untouchable) && !strings.Contains(summary, "deleted") {
				t.Fatalf("seed %d changed %q, which is no numeric literal (%s)", seed, untouchable, summary)
			}
		}
		if !strings.HasPrefix(summary, "mutate: ") {
			t.Errorf("summary %q", summary)
		}
	}
}

func TestMutantsMostlyParse(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed to check that mutants parse: %v", err)
	}
	const n = 50
	dir := t.TempDir()
	for seed := range n {
		code, _, err := Mutate(Input{Parent: parametric, Language: "python", Seed: int64(seed) * 7919})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%02d.py", seed)), []byte(code), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// One interpreter for all mutants: the check is ast.parse on each file.
	const check = `import ast, glob, sys
for p in sorted(glob.glob(sys.argv[1] + "/*.py")):
    try:
        ast.parse(open(p).read())
    except SyntaxError as e:
        print(p, e)
`
	out, err := exec.Command(python, "-c", check, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	failed := program.Lines(string(out))
	for _, f := range failed {
		t.Logf("does not parse: %s", f)
	}
	if parsed := n - len(failed); parsed < n*8/10 {
		t.Errorf("%d of %d mutants parse, want at least 80%%", parsed, n)
	}
	t.Logf("%d of %d mutants parse", n-len(failed), n)
}

func TestMutateWholeProgramWithoutMarkers(t *testing.T) {
	code, _, err := Mutate(Input{Parent: "alpha = 0.3\nbeta = 7\n", Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if code == "alpha = 0.3\nbeta = 7\n" || !strings.HasSuffix(code, "\n") {
		t.Errorf("mutant %q: want a change and the final newline kept", code)
	}
}

func TestMutateNothingToChange(t *testing.T) {
	src := "# EVOLVE-BLOCK-START\ndef f():\n    return g()\n# EVOLVE-BLOCK-END\nx = 1\n"
	_, _, err := Mutate(Input{Parent: src, Seed: 1})
	if !errors.Is(err, ErrNoChange) {
		t.Errorf("err = %v, want ErrNoChange", err)
	}
}

func TestMutateBadMarkers(t *testing.T) {
	_, _, err := Mutate(Input{Parent: "# EVOLVE-BLOCK-START\nx = 1\n", Seed: 1})
	if !errors.Is(err, program.ErrMarkers) {
		t.Errorf("err = %v, want program.ErrMarkers", err)
	}
}

func TestCrossoverTakesLinesFromInspiration(t *testing.T) {
	// Same line count as the parent's block, different statements: only line crossover fits.
	parent := "import os\n# EVOLVE-BLOCK-START\na = f(1)\nb = g(a)\nc = h(b)\nd = a + b + c\n# EVOLVE-BLOCK-END\n"
	insp := "import os\n# EVOLVE-BLOCK-START\na = alpha(9)\nb = beta(a)\nc = gamma(b)\nd = a * b * c\n# EVOLVE-BLOCK-END\n"
	took := 0
	for seed := range int64(100) {
		code, summary, err := Mutate(Input{Parent: parent, Inspirations: []Inspiration{{ID: "p7", Code: insp}}, Seed: seed})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if !strings.Contains(summary, "crossover") {
			continue
		}
		took++
		if !strings.Contains(summary, "inspiration p7") {
			t.Errorf("summary %q does not name the inspiration", summary)
		}
		if !strings.Contains(code, "alpha(") && !strings.Contains(code, "beta(") && !strings.Contains(code, "gamma(") && !strings.Contains(code, "a * b * c") {
			t.Errorf("seed %d: crossover took nothing from the inspiration:\n%s", seed, code)
		}
		if !strings.HasPrefix(code, "import os\n# EVOLVE-BLOCK-START\n") || !strings.HasSuffix(code, "# EVOLVE-BLOCK-END\n") {
			t.Errorf("seed %d: crossover moved the markers:\n%s", seed, code)
		}
	}
	if took == 0 {
		t.Fatal("no seed of 100 chose crossover")
	}
}

func TestUniformCrossoverTakesLiterals(t *testing.T) {
	parent := "# EVOLVE-BLOCK-START\nlr = 0.1\nsteps = 10\nmomentum = 0.9\n# EVOLVE-BLOCK-END\n"
	insp := "# EVOLVE-BLOCK-START\nlr = 0.003\nsteps = 40\nmomentum = 0.5\n# EVOLVE-BLOCK-END\n"
	took := 0
	for seed := range int64(100) {
		code, summary, err := Mutate(Input{Parent: parent, Inspirations: []Inspiration{{Code: insp}}, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(summary, "differing literals from inspiration 1") {
			continue
		}
		took++
		if !strings.Contains(code, "0.003") && !strings.Contains(code, "40") && !strings.Contains(code, "0.5") {
			t.Errorf("seed %d: no literal of the inspiration in\n%s", seed, code)
		}
	}
	if took == 0 {
		t.Fatal("no seed of 100 chose literal-wise crossover")
	}
}

func TestPerturbLiterals(t *testing.T) {
	tests := []struct {
		name, src string
		lang      string
		want      []string // the literal texts the scanner must find, in order
	}{
		{"python", `x = f(a1, 2.5e-3, .5, 1., 7) + 0x1F + 3j + y.real  # 9`, "python", []string{"2.5e-3", ".5", "1.", "7"}},
		{"c suffixes and octal", `float v = 1.0f + 2.5 + 010 + 42u; // 3`, "cpp", []string{"2.5"}},
		{"rust ranges and fields", `let r = 1..10; let z = t.0 + 3.max(4);`, "rust", []string{"1", "10", "3", "4"}},
		{"strings", `s = "1.5" + '2' + 3`, "python", []string{"3"}},
		{"underscores", `n = 1_000_000 + 2__0`, "python", []string{"1_000_000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := scan([]string{tt.src}, syntaxFor(tt.lang))[0]
			var got []string
			for _, l := range info.lits {
				got = append(got, tt.src[l.start:l.end])
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("literals = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestScanKnowsMultiLineStatements(t *testing.T) {
	src := []string{
		"a = 1",
		"b = [1,",
		"     2]",
		`s = """text`,
		`x = 5 still text"""`,
		"if a:",
		"    c = 3 \\",
		"        + 4",
		"d = 6",
	}
	want := []bool{true, false, false, false, false, false, false, false, true}
	infos := scan(src, syntaxFor("python"))
	for i, in := range infos {
		if got := in.movable(syntaxFor("python")); got != want[i] {
			t.Errorf("line %d %q: movable = %v, want %v", i+1, src[i], got, want[i])
		}
	}
	if len(infos[4].lits) != 0 {
		t.Errorf("found literals inside a docstring: %v", infos[4].lits)
	}
}

func TestPerturbFloatKeepsAFloat(t *testing.T) {
	for seed := range uint64(500) {
		rng := rand.New(rand.NewPCG(seed, 1))
		for _, old := range []string{"2.0", "0.5", "1e-3", "0.0", "3.", "1_000.5", "0.125"} {
			got := perturbFloat(rng, old)
			if got == "" || got == old || !strings.ContainsAny(got, ".eE") || strings.HasPrefix(got, "-") || strings.ContainsAny(got, "NnIi") {
				t.Fatalf("perturbFloat(%q) = %q", old, got)
			}
		}
		for _, old := range []string{"0", "1", "10", "1_000"} {
			got := perturbInt(rng, old)
			if got == "" || got == old || strings.HasPrefix(got, "-") {
				t.Fatalf("perturbInt(%q) = %q", old, got)
			}
		}
	}
}
