package program

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseDiff(t *testing.T) {
	tests := []struct {
		name    string
		reply   string
		want    []Block
		wantErr error
		errText string
	}{
		{
			name:  "one block among prose",
			reply: "I will change x.\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\nThis should help.\n",
			want:  []Block{{Search: "x = 1\n", Replace: "x = 2\n"}},
		},
		{
			name:  "two blocks in fences",
			reply: "```python\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n```\n\n```\n<<<<<<< SEARCH\nc\n=======\nd\n>>>>>>> REPLACE\n```\n",
			want:  []Block{{Search: "a\n", Replace: "b\n"}, {Search: "c\n", Replace: "d\n"}},
		},
		{
			name:  "five and nine marker characters with trailing spaces",
			reply: "<<<<< SEARCH  \na\n=========   \nb\n>>>>>>>>> REPLACE\t\n",
			want:  []Block{{Search: "a\n", Replace: "b\n"}},
		},
		{
			name:  "CRLF reply",
			reply: "<<<<<<< SEARCH\r\n    a = 1\r\n=======\r\n    a = 2\r\n>>>>>>> REPLACE\r\n",
			want:  []Block{{Search: "    a = 1\n", Replace: "    a = 2\n"}},
		},
		{
			name:  "empty replace deletes, blank replace keeps a line",
			reply: "<<<<<<< SEARCH\na\n=======\n>>>>>>> REPLACE\n<<<<<<< SEARCH\nb\n=======\n\n>>>>>>> REPLACE\n",
			want:  []Block{{Search: "a\n", Replace: ""}, {Search: "b\n", Replace: "\n"}},
		},
		{
			name:  "divider line inside replace is text",
			reply: "<<<<<<< SEARCH\na\n=======\nb\n=======\nc\n>>>>>>> REPLACE\n",
			want:  []Block{{Search: "a\n", Replace: "b\n=======\nc\n"}},
		},
		{name: "no blocks", reply: "Here is my idea: make x bigger.", wantErr: ErrNoBlocks},
		{name: "four characters is not a marker", reply: "<<<< SEARCH\na\n====\nb\n>>>> REPLACE\n", wantErr: ErrNoBlocks},
		{
			name:    "second block never closed",
			reply:   "<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n<<<<<<< SEARCH\nc\n=======\nd\n",
			wantErr: ErrMalformedDiff, errText: "block 2",
		},
		{
			name:    "missing divider",
			reply:   "<<<<<<< SEARCH\na\nb\n>>>>>>> REPLACE\n",
			wantErr: ErrMalformedDiff, errText: "block 1",
		},
		{
			name:    "next block starts before close",
			reply:   "<<<<<<< SEARCH\na\n=======\nb\n<<<<<<< SEARCH\nc\n=======\nd\n>>>>>>> REPLACE\n",
			wantErr: ErrMalformedDiff, errText: "block 1",
		},
		{
			name:    "replace marker without search",
			reply:   "<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\nc\n=======\nd\n>>>>>>> REPLACE\n",
			wantErr: ErrMalformedDiff, errText: "block 2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDiff(tt.reply)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("ParseDiff() = %q, %v; want error %v mentioning %q", got, err, tt.wantErr, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseDiff() error = %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseDiff() = %q, want %q", got, tt.want)
			}
		})
	}
}

const pyProgram = `import math

# EVOLVE-BLOCK-START
def area(r):
    if r < 0:
        return 0
    return math.pi * r * r
# EVOLVE-BLOCK-END

def evaluate():
    return area(2)
`

func TestApplyDiff(t *testing.T) {
	tests := []struct {
		name    string
		code    string
		blocks  []Block
		want    string
		summary string
	}{
		{
			name:    "exact match",
			code:    "a = 1\nb = 2\nc = 3\n",
			blocks:  []Block{{Search: "b = 2\n", Replace: "b = 20\n"}},
			want:    "a = 1\nb = 20\nc = 3\n",
			summary: "applied 1 block",
		},
		{
			name:   "first match only",
			code:   "x = 1\ny = 0\nx = 1\n",
			blocks: []Block{{Search: "x = 1\n", Replace: "x = 2\n"}},
			want:   "x = 2\ny = 0\nx = 1\n",
		},
		{
			name:   "whole lines only, not a prefix of a longer line",
			code:   "x = 10\nx = 1\n",
			blocks: []Block{{Search: "x = 1\n", Replace: "x = 2\n"}},
			want:   "x = 10\nx = 2\n",
		},
		{
			name: "multiple blocks in order, later sees earlier",
			code: "a\nb\nc\n",
			blocks: []Block{
				{Search: "a\n", Replace: "A\n"},
				{Search: "A\nb\n", Replace: "AB\n"},
			},
			want:    "AB\nc\n",
			summary: "applied 2 blocks",
		},
		{
			name:    "indentation dropped by the model is restored",
			code:    pyProgram,
			blocks:  []Block{{Search: "if r < 0:\n    return 0\n", Replace: "if r < 0:\n    raise ValueError(r)\nif r == 0:\n    return 0\n"}},
			want:    strings.Replace(pyProgram, "    if r < 0:\n        return 0\n", "    if r < 0:\n        raise ValueError(r)\n    if r == 0:\n        return 0\n", 1),
			summary: "applied 1 block (1 whitespace-tolerant)",
		},
		{
			name:   "indentation added by the model is removed",
			code:   "def f():\n    return 1\n",
			blocks: []Block{{Search: "        return 1\n", Replace: "        x = 1\n        return x\n"}},
			want:   "def f():\n    x = 1\n    return x\n",
		},
		{
			name:   "deeper replace lines keep their relative indentation",
			code:   "class A:\n    def f(self):\n        return 1\n",
			blocks: []Block{{Search: "def f(self):\n    return 1\n", Replace: "def f(self):\n    for i in range(3):\n        if i:\n            return i\n    return 1\n"}},
			want:   "class A:\n    def f(self):\n        for i in range(3):\n            if i:\n                return i\n        return 1\n",
		},
		{
			name:    "trailing whitespace in code and search",
			code:    "a = 1   \nb = 2\n",
			blocks:  []Block{{Search: "a = 1\nb = 2  \n", Replace: "a = 3\nb = 4\n"}},
			want:    "a = 3\nb = 4\n",
			summary: "applied 1 block (1 whitespace-tolerant)",
		},
		{
			name:   "spaces in reply, tabs in code",
			code:   "func f() int {\n\tx := 1\n\treturn x\n}\n",
			blocks: []Block{{Search: "    x := 1\n    return x\n", Replace: "    x := 1\n    if x > 0 {\n        x++\n    }\n    return x\n"}},
			want:   "func f() int {\n\tx := 1\n\tif x > 0 {\n\t\tx++\n\t}\n\treturn x\n}\n",
		},
		{
			name:   "tabs in reply, spaces in code",
			code:   "def f():\n    x = 1\n    return x\n",
			blocks: []Block{{Search: "\tx = 1\n", Replace: "\tfor i in range(2):\n\t\tx += i\n"}},
			want:   "def f():\n    for i in range(2):\n        x += i\n    return x\n",
		},
		{
			name:   "blank lines around the search are tolerated",
			code:   "a\nb\nc\n",
			blocks: []Block{{Search: "\nb\n\n", Replace: "\nB\n\n"}},
			want:   "a\nB\nc\n",
		},
		{
			name:   "empty replace deletes lines",
			code:   "a\nb\nc\n",
			blocks: []Block{{Search: "b\n", Replace: ""}},
			want:   "a\nc\n",
		},
		{
			name:   "no trailing newline stays that way",
			code:   "a\nb",
			blocks: []Block{{Search: "b", Replace: "c\nd"}},
			want:   "a\nc\nd",
		},
		{
			name:   "CRLF code stays CRLF",
			code:   "a\r\nb\r\nc\r\n",
			blocks: []Block{{Search: "b\n", Replace: "B1\nB2\n"}},
			want:   "a\r\nB1\r\nB2\r\nc\r\n",
		},
		{
			name:   "edit inside a region",
			code:   pyProgram,
			blocks: []Block{{Search: "    return math.pi * r * r\n", Replace: "    return math.pi * r ** 2\n"}},
			want:   strings.Replace(pyProgram, "r * r", "r ** 2", 1),
		},
		{
			name:   "match inside a region wins over an earlier one outside",
			code:   "x = 1\n# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n",
			blocks: []Block{{Search: "x = 1\n", Replace: "x = 2\n"}},
			want:   "x = 1\n# EVOLVE-BLOCK-START\nx = 2\n# EVOLVE-BLOCK-END\n",
		},
		{
			name:   "markers in slash comments",
			code:   "package main\n\n// EVOLVE-BLOCK-START\nfunc score() int { return 1 }\n// EVOLVE-BLOCK-END\n\nfunc main() { println(score()) }\n",
			blocks: []Block{{Search: "func score() int { return 1 }\n", Replace: "func score() int { return 2 }\n"}},
			want:   "package main\n\n// EVOLVE-BLOCK-START\nfunc score() int { return 2 }\n// EVOLVE-BLOCK-END\n\nfunc main() { println(score()) }\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, summary, err := ApplyDiff(tt.code, tt.blocks)
			if err != nil {
				t.Fatalf("ApplyDiff() error = %v", err)
			}
			if got != tt.want {
				t.Errorf("ApplyDiff() code:\ngot:\n%s\nwant:\n%s", got, tt.want)
			}
			if tt.summary != "" && summary != tt.summary {
				t.Errorf("ApplyDiff() summary = %q, want %q", summary, tt.summary)
			}
		})
	}
}

func TestApplyDiffRejects(t *testing.T) {
	tests := []struct {
		name    string
		code    string
		blocks  []Block
		wantErr error
		errText []string
	}{
		{
			name:    "no match names the block and quotes the search",
			code:    "a\nb\n",
			blocks:  []Block{{Search: "a\n", Replace: "A\n"}, {Search: "\nzzz = compute()\n", Replace: "q\n"}},
			wantErr: ErrNoMatch, errText: []string{"block 2", `"zzz = compute()"`},
		},
		{
			name:    "whitespace-tolerant match is never partial",
			code:    "if x:\n    y = 1\n    z = 2\n",
			blocks:  []Block{{Search: "if x:\n  y = 1\n  z = 3\n", Replace: "pass\n"}},
			wantErr: ErrNoMatch, errText: []string{"block 1"},
		},
		{
			name:    "long search line is cut",
			code:    "a\n",
			blocks:  []Block{{Search: strings.Repeat("x", 500) + "\n", Replace: "b\n"}},
			wantErr: ErrNoMatch, errText: []string{strings.Repeat("x", 200) + "…"},
		},
		{
			name:    "edit outside the region",
			code:    pyProgram,
			blocks:  []Block{{Search: "    return area(2)\n", Replace: "    return 1e9\n"}},
			wantErr: ErrOutsideBlock, errText: []string{"block 1: search matches line 11, but only lines 4-7 may change"},
		},
		{
			name:    "edit straddling the end marker",
			code:    pyProgram,
			blocks:  []Block{{Search: "    return math.pi * r * r\n# EVOLVE-BLOCK-END\n", Replace: "    return 0\n"}},
			wantErr: ErrOutsideBlock, errText: []string{"block 1"},
		},
		{
			name:    "second block outside means first is not applied",
			code:    pyProgram,
			blocks:  []Block{{Search: "        return 0\n", Replace: "        return -1\n"}, {Search: "import math\n", Replace: "import os\n"}},
			wantErr: ErrOutsideBlock, errText: []string{"block 2"},
		},
		{
			name:    "replacement may not add markers",
			code:    pyProgram,
			blocks:  []Block{{Search: "        return 0\n", Replace: "        return 0\n# EVOLVE-BLOCK-END\n"}},
			wantErr: ErrOutsideBlock, errText: []string{"block 1", "marker"},
		},
		{
			name:    "empty search",
			code:    "a\n",
			blocks:  []Block{{Search: "", Replace: "b\n"}},
			wantErr: ErrMalformedDiff, errText: []string{"block 1"},
		},
		{
			name:    "blank search",
			code:    "a\n\n",
			blocks:  []Block{{Search: "  \n\t\n", Replace: "b\n"}},
			wantErr: ErrMalformedDiff, errText: []string{"block 1"},
		},
		{
			name:    "unbalanced markers in the program",
			code:    "# EVOLVE-BLOCK-START\na\n",
			blocks:  []Block{{Search: "a\n", Replace: "b\n"}},
			wantErr: ErrMarkers, errText: []string{"line 1"},
		},
		{name: "no blocks", code: "a\n", wantErr: ErrNoBlocks},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, summary, err := ApplyDiff(tt.code, tt.blocks)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ApplyDiff() error = %v, want %v", err, tt.wantErr)
			}
			for _, s := range tt.errText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("ApplyDiff() error = %q, want it to mention %q", err, s)
				}
			}
			if got != "" || summary != "" {
				t.Errorf("ApplyDiff() = %q, %q on error, want nothing applied", got, summary)
			}
		})
	}
}

// TestParseThenApply is the path a generator takes: a sloppy CRLF reply from a
// local model, straight into the program.
func TestParseThenApply(t *testing.T) {
	reply := "Sure!\r\n```\r\n<<<<<<< SEARCH \r\nif r < 0:\r\n    return 0\r\n=======\r\nif r <= 0:\r\n    return 0.0\r\n>>>>>>>  REPLACE\r\n```\r\n"
	blocks, err := ParseDiff(reply)
	if err != nil {
		t.Fatalf("ParseDiff() error = %v", err)
	}
	got, _, err := ApplyDiff(pyProgram, blocks)
	if err != nil {
		t.Fatalf("ApplyDiff() error = %v", err)
	}
	want := strings.Replace(pyProgram, "    if r < 0:\n        return 0\n", "    if r <= 0:\n        return 0.0\n", 1)
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestApplyDiffUnmarkedStaysUnconfined: a model adding markers to a program
// that had none must not turn its own later blocks into rejections.
func TestApplyDiffUnmarkedStaysUnconfined(t *testing.T) {
	code := "a\nb\n"
	blocks := []Block{
		{Search: "a\n", Replace: "# EVOLVE-BLOCK-START\na\n"},
		{Search: "b\n", Replace: "B\n"},
	}
	got, _, err := ApplyDiff(code, blocks)
	if want := "# EVOLVE-BLOCK-START\na\nB\n"; err != nil || got != want {
		t.Errorf("ApplyDiff() = %q, %v; want %q, nil", got, err, want)
	}
}
