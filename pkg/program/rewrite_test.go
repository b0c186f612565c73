package program

import (
	"errors"
	"strings"
	"testing"
)

func TestExtractRewrite(t *testing.T) {
	tests := []struct {
		name     string
		reply    string
		language string
		want     string
		wantErr  error
	}{
		{
			name:     "python fence among prose",
			reply:    "Here is a faster version:\n\n```python\ndef f():\n    return 2\n```\n\nIt avoids the loop.",
			language: "python",
			want:     "def f():\n    return 2\n",
		},
		{
			name:  "bare fence",
			reply: "```\nx = 1\n```",
			want:  "x = 1\n",
		},
		{
			name:     "fence in the run's language preferred over an earlier one",
			reply:    "Install first:\n```bash\npip install numpy\n```\nThen:\n```py\nimport numpy\n```\n",
			language: "python",
			want:     "import numpy\n",
		},
		{
			name:     "first fence when none matches the language",
			reply:    "```text\nnotes\n```\n```\ncode\n```\n",
			language: "python",
			want:     "notes\n",
		},
		{
			name:  "longer fence keeps a shorter one inside",
			reply: "````markdown\n# doc\n```\nexample\n```\n````\n",
			want:  "# doc\n```\nexample\n```\n",
		},
		{
			name:  "fence cut off by the token limit runs to the end",
			reply: "```python\ndef f():\n    return 1\n",
			want:  "def f():\n    return 1\n",
		},
		{
			name:  "no fence: whole reply trimmed",
			reply: "\n\ndef f():\n    return 3\n\n\n",
			want:  "def f():\n    return 3\n",
		},
		{
			name:  "CRLF reply",
			reply: "```python\r\nx = 1\r\ny = 2\r\n```\r\n",
			want:  "x = 1\ny = 2\n",
		},
		{name: "empty reply", reply: "  \n\t\n", wantErr: ErrEmptyRewrite},
		{name: "empty fence", reply: "```python\n\n```\n", wantErr: ErrEmptyRewrite},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ExtractRewrite(tt.reply, tt.language)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ExtractRewrite() = %q, %v; want error %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ExtractRewrite() error = %v", err)
			}
			if got != tt.want {
				t.Errorf("ExtractRewrite() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestApplyRewrite(t *testing.T) {
	const harness = "import math\n\n# EVOLVE-BLOCK-START\ndef area(r):\n    return 3 * r * r\n# EVOLVE-BLOCK-END\n\ndef evaluate():\n    return area(2)\n"
	tests := []struct {
		name    string
		parent  string
		rewrite string
		want    string
		summary string
	}{
		{
			name:    "no regions: rewrite replaces the program",
			parent:  "x = 1\n",
			rewrite: "x = 2\ny = 3\n",
			want:    "x = 2\ny = 3\n",
			summary: "full rewrite",
		},
		{
			name:    "region spliced into the parent",
			parent:  harness,
			rewrite: "import math\n\n# EVOLVE-BLOCK-START\ndef area(r):\n    return math.pi * r * r\n# EVOLVE-BLOCK-END\n\ndef evaluate():\n    return area(2)\n",
			want:    strings.Replace(harness, "3 * r * r", "math.pi * r * r", 1),
			summary: "rewrote 1 evolve block",
		},
		{
			name:    "changed text outside the region is kept from the parent",
			parent:  harness,
			rewrite: "import math, os\n# EVOLVE-BLOCK-START\ndef area(r):\n    return math.pi * r ** 2\n\n# EVOLVE-BLOCK-END\ndef evaluate():\n    return 1e9\n",
			want:    strings.Replace(harness, "    return 3 * r * r\n", "    return math.pi * r ** 2\n\n", 1),
			summary: "rewrote 1 evolve block; kept the parent's text outside them, which the rewrite had changed",
		},
		{
			name:    "two regions matched by position, CRLF parent",
			parent:  "// EVOLVE-BLOCK-START\r\na\r\n// EVOLVE-BLOCK-END\r\nmid\r\n// EVOLVE-BLOCK-START\r\nb\r\n// EVOLVE-BLOCK-END\r\n",
			rewrite: "// EVOLVE-BLOCK-START\nA1\nA2\n// EVOLVE-BLOCK-END\nmid\n// EVOLVE-BLOCK-START\n// EVOLVE-BLOCK-END\n",
			want:    "// EVOLVE-BLOCK-START\r\nA1\r\nA2\r\n// EVOLVE-BLOCK-END\r\nmid\r\n// EVOLVE-BLOCK-START\r\n// EVOLVE-BLOCK-END\r\n",
			summary: "rewrote 2 evolve blocks",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, summary, err := ApplyRewrite(tt.parent, tt.rewrite)
			if err != nil {
				t.Fatalf("ApplyRewrite() error = %v", err)
			}
			if got != tt.want {
				t.Errorf("ApplyRewrite() code:\ngot:\n%q\nwant:\n%q", got, tt.want)
			}
			if summary != tt.summary {
				t.Errorf("ApplyRewrite() summary = %q, want %q", summary, tt.summary)
			}
		})
	}
}

func TestApplyRewriteRejects(t *testing.T) {
	const parent = "a\n# EVOLVE-BLOCK-START\nb\n# EVOLVE-BLOCK-END\nc\n# EVOLVE-BLOCK-START\nd\n# EVOLVE-BLOCK-END\n"
	tests := []struct {
		name    string
		parent  string
		rewrite string
		wantErr []error
		errText string
	}{
		{name: "rewrite without markers", parent: parent, rewrite: "b2\nd2\n", wantErr: []error{ErrOutsideBlock}, errText: "parent has 2 evolve blocks, rewrite has 0"},
		{
			name:    "rewrite with fewer regions",
			parent:  parent,
			rewrite: "# EVOLVE-BLOCK-START\nb2\n# EVOLVE-BLOCK-END\n",
			wantErr: []error{ErrOutsideBlock}, errText: "rewrite has 1 evolve block",
		},
		{
			name:    "rewrite with broken markers",
			parent:  parent,
			rewrite: "# EVOLVE-BLOCK-START\nb2\n",
			wantErr: []error{ErrOutsideBlock, ErrMarkers}, errText: "rewrite",
		},
		{name: "parent with broken markers", parent: "# EVOLVE-BLOCK-END\n", rewrite: "x\n", wantErr: []error{ErrMarkers}, errText: "parent"},
		{name: "empty rewrite", parent: "x\n", rewrite: " \n", wantErr: []error{ErrEmptyRewrite}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, summary, err := ApplyRewrite(tt.parent, tt.rewrite)
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("ApplyRewrite() error = %v, want %v", err, want)
				}
			}
			if err != nil && !strings.Contains(err.Error(), tt.errText) {
				t.Errorf("ApplyRewrite() error = %q, want it to mention %q", err, tt.errText)
			}
			if got != "" || summary != "" {
				t.Errorf("ApplyRewrite() = %q, %q on error, want nothing", got, summary)
			}
		})
	}
}
