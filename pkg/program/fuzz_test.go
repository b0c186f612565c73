package program

import (
	"strings"
	"testing"
)

// FuzzParseApply feeds arbitrary replies to both reply paths. Whatever a model
// writes must not panic, and a successful edit of a program with evolve
// regions must leave every line outside them, the markers, and the final
// newline exactly as they were.
func FuzzParseApply(f *testing.F) {
	seeds := []struct{ code, reply string }{
		{pyProgram, "<<<<<<< SEARCH\n    return math.pi * r * r\n=======\n    return 0\n>>>>>>> REPLACE\n"},
		{pyProgram, "<<<<<<< SEARCH\nif r < 0:\n    return 0\n=======\nif r < 1:\n  return 1\n\treturn 2\n>>>>>>> REPLACE\n"},
		{pyProgram, "```python\nimport math\n# EVOLVE-BLOCK-START\ndef area(r):\n    return r\n# EVOLVE-BLOCK-END\n```\n"},
		{"a\r\n// EVOLVE-BLOCK-START\r\nb\r\n// EVOLVE-BLOCK-END\r\nc", "<<<<< SEARCH\r\nb\r\n=====\r\nB\r\n>>>>> REPLACE\r\n"},
		{"x = 1\nx = 1\n", "<<<<<<< SEARCH\n\nx = 1\n\n=======\n>>>>>>> REPLACE\n"},
		{"func f() {\n\tx := 1\n}\n", "<<<<<<< SEARCH\n    x := 1\n=======\n        y := 2\n  z\n>>>>>>> REPLACE\n"},
		{"# EVOLVE-BLOCK-START\n# EVOLVE-BLOCK-END\n", "<<<<<<< SEARCH\n# EVOLVE-BLOCK-START\n=======\n>>>>>>> REPLACE\n"},
		{"", "no diff here"},
	}
	for _, s := range seeds {
		f.Add(s.code, s.reply)
	}
	f.Fuzz(func(t *testing.T, code, reply string) {
		regions, markerErr := Regions(code)

		if blocks, err := ParseDiff(reply); err == nil {
			out, _, err := ApplyDiff(code, blocks)
			if err == nil {
				if markerErr != nil {
					t.Fatalf("ApplyDiff succeeded on code with bad markers (%v)", markerErr)
				}
				assertOutsideKept(t, code, regions, out)
			} else if out != "" {
				t.Fatalf("ApplyDiff returned %q with error %v", out, err)
			}
		}

		if rewrite, err := ExtractRewrite(reply, "python"); err == nil {
			out, _, err := ApplyRewrite(code, rewrite)
			if err == nil {
				if markerErr != nil {
					t.Fatalf("ApplyRewrite succeeded on a parent with bad markers (%v)", markerErr)
				}
				assertOutsideKept(t, code, regions, out)
			} else if out != "" {
				t.Fatalf("ApplyRewrite returned %q with error %v", out, err)
			}
		}
	})
}

func assertOutsideKept(t *testing.T, code string, regions []Region, out string) {
	t.Helper()
	if len(regions) == 0 {
		return
	}
	got, err := Regions(out)
	if err != nil {
		t.Fatalf("edited code has bad markers: %v\ncode: %q\nout:  %q", err, code, out)
	}
	if len(got) != len(regions) {
		t.Fatalf("edited code has %d regions, want %d\ncode: %q\nout:  %q", len(got), len(regions), code, out)
	}
	before, after := outsideLines(Lines(code), regions), outsideLines(Lines(out), got)
	if strings.Join(before, "\n") != strings.Join(after, "\n") || len(before) != len(after) {
		t.Fatalf("text outside the regions changed\ncode: %q\nout:  %q", code, out)
	}
	if strings.HasSuffix(code, "\n") != strings.HasSuffix(out, "\n") {
		t.Fatalf("final newline changed\ncode: %q\nout:  %q", code, out)
	}
}

// outsideLines returns the lines outside the regions, with a separator per
// region so that text cannot silently move from one gap to another.
func outsideLines(lines []string, regions []Region) []string {
	var out []string
	prev := 0
	for _, r := range regions {
		out = append(out, lines[prev:r.Start]...)
		out = append(out, "\x00region")
		prev = r.End
	}
	return append(out, lines[prev:]...)
}
