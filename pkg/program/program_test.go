package program

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestRegions(t *testing.T) {
	tests := []struct {
		name    string
		code    string
		want    []Region
		wantErr string // substring of the error; "" means no error
	}{
		{name: "no markers", code: "x = 1\n", want: nil},
		{name: "empty code", code: "", want: nil},
		{
			name: "python comments",
			code: "import os\n# EVOLVE-BLOCK-START\nx = 1\ny = 2\n# EVOLVE-BLOCK-END\nprint(x)\n",
			want: []Region{{Start: 2, End: 4}},
		},
		{
			name: "slash comments, two regions, no final newline",
			code: "// EVOLVE-BLOCK-START\na();\n// EVOLVE-BLOCK-END\nb();\n  /* EVOLVE-BLOCK-START */\nc();\n  /* EVOLVE-BLOCK-END */",
			want: []Region{{Start: 1, End: 2}, {Start: 5, End: 6}},
		},
		{
			name: "empty region",
			code: "# EVOLVE-BLOCK-START\n# EVOLVE-BLOCK-END\n",
			want: []Region{{Start: 1, End: 1}},
		},
		{
			name: "CRLF",
			code: "# EVOLVE-BLOCK-START\r\nx = 1\r\n# EVOLVE-BLOCK-END\r\n",
			want: []Region{{Start: 1, End: 2}},
		},
		{name: "start never closed", code: "a\n# EVOLVE-BLOCK-START\nx\n", wantErr: "line 2"},
		{name: "end without start", code: "a\nb\n# EVOLVE-BLOCK-END\n", wantErr: "line 3"},
		{
			name:    "nested",
			code:    "# EVOLVE-BLOCK-START\nx\n# EVOLVE-BLOCK-START\ny\n# EVOLVE-BLOCK-END\n# EVOLVE-BLOCK-END\n",
			wantErr: "line 3: EVOLVE-BLOCK-START inside the block opened on line 1",
		},
		{name: "both on one line", code: "# EVOLVE-BLOCK-START EVOLVE-BLOCK-END\n", wantErr: "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Regions(tt.code)
			if tt.wantErr != "" {
				if !errors.Is(err, ErrMarkers) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Regions() error = %v, want ErrMarkers mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Regions() error = %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Regions() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLines(t *testing.T) {
	tests := []struct {
		code string
		want []string
	}{
		{"", nil},
		{"\n", []string{""}},
		{"a", []string{"a"}},
		{"a\n", []string{"a"}},
		{"a\n\nb\n", []string{"a", "", "b"}},
		{"a\r\nb", []string{"a\r", "b"}},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.code, "\n", `\n`), func(t *testing.T) {
			got := Lines(tt.code)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Lines(%q) = %q, want %q", tt.code, got, tt.want)
			}
			if back := joinLines(got, strings.HasSuffix(tt.code, "\n")); back != tt.code {
				t.Errorf("joinLines(Lines(%q)) = %q, want the input back", tt.code, back)
			}
		})
	}
}
