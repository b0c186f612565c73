package prompt

import (
	"strings"
	"testing"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

func TestRender(t *testing.T) {
	parent := protocol.Program{
		Code: "# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n", Score: 0.25, Status: protocol.StatusFailed,
		Metrics:   map[string]float64{"combined_score": 0.25, "speed": 3},
		Artifacts: map[string]string{"stderr": "Traceback: ZeroDivisionError", "traceback": strings.Repeat("y", 100)},
	}
	top := []protocol.Program{{Code: "x = 2\n", Score: 0.5}}
	tests := []struct {
		name       string
		mode       protocol.Mode
		cfg        func(*runconfig.Config)
		want, omit []string
	}{
		{"diff mode carries the failure's artifacts", protocol.ModeDiff, func(*runconfig.Config) {},
			[]string{"<<<<<<< SEARCH", "ZeroDivisionError", "speed=3", "Status: failed", "Fitness: 0.5000", "```python\n# EVOLVE-BLOCK-START\nx = 1"}, nil},
		{"rewrite mode asks for the whole program", protocol.ModeRewrite, func(*runconfig.Config) {},
			[]string{"complete new program"}, []string{"<<<<<<< SEARCH"}},
		{"artifacts off", protocol.ModeDiff, func(c *runconfig.Config) { c.Prompt.IncludeArtifacts = false },
			nil, []string{"ZeroDivisionError"}},
		{"artifacts capped", protocol.ModeDiff, func(c *runconfig.Config) { c.Prompt.MaxArtifactBytes = 10 },
			[]string{"(truncated)"}, []string{strings.Repeat("y", 11)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := runconfig.Default()
			tt.cfg(cfg)
			msgs := Render(cfg, Inputs{Parent: parent, Top: top, Mode: tt.mode, Language: "python"})
			if len(msgs) != 2 || msgs[0].Role != "system" || msgs[0].Content != DefaultSystemMessage || msgs[1].Role != "user" {
				t.Fatalf("messages = %+v, want system (default) then user", msgs)
			}
			for _, w := range tt.want {
				if !strings.Contains(msgs[1].Content, w) {
					t.Errorf("prompt lacks %q:\n%s", w, msgs[1].Content)
				}
			}
			for _, o := range tt.omit {
				if strings.Contains(msgs[1].Content, o) {
					t.Errorf("prompt holds %q", o)
				}
			}
		})
	}
}
