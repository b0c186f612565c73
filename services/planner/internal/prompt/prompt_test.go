package prompt

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

func defaultTemplates(t *testing.T) *Templates {
	t.Helper()
	tpl, err := New(nil)
	if err != nil {
		t.Fatalf("defaults do not parse: %v", err)
	}
	return tpl
}

var (
	parent = protocol.Program{
		ID: "p", Code: "# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n", Score: 0.25, Status: protocol.StatusOK, Island: 1,
		Metrics:   map[string]float64{"combined_score": 0.25, "speed": 3},
		Artifacts: map[string]string{"stdout": "ran 10 cases"},
		Features:  []int{3, 7},
	}
	top      = []protocol.Program{{ID: "t1", Code: "x = 2\n", Score: 0.5, Metrics: map[string]float64{"combined_score": 0.5}}}
	insp     = []protocol.Program{{ID: "i1", Code: "x = 9\n", Score: 0.1, Island: 2, Changes: "tried nine"}}
	previous = []protocol.Program{
		{ID: "a7", Iteration: 7, Status: protocol.StatusFailed, Reason: "stage 1: ZeroDivisionError",
			Artifacts: map[string]string{"traceback": "Traceback (most recent call last):\nZeroDivisionError: division by zero", "stderr": strings.Repeat("y", 100)}},
		{ID: "a6", Iteration: 6, Status: protocol.StatusOK, Score: 0.3, Changes: "faster loop", Metrics: map[string]float64{"combined_score": 0.3}},
		{ID: "a5", Iteration: 5, Status: protocol.StatusRejected, Reason: "SEARCH block 1 does not match"},
		{ID: "a4", Iteration: 4, Status: protocol.StatusTimeout, Reason: "30s"},
	}
)

func TestRenderDefaults(t *testing.T) {
	tests := []struct {
		name       string
		mode       protocol.Mode
		cfg        func(*runconfig.Config)
		want, omit []string
	}{
		{"diff mode shows program, metrics, history and failures", protocol.ModeDiff, func(*runconfig.Config) {},
			[]string{
				"<<<<<<< SEARCH", "- Fitness: 0.2500", "- speed: 3.0000", "complexity=3, diversity=7",
				"```python\n# EVOLVE-BLOCK-START\nx = 1\n# EVOLVE-BLOCK-END\n```",
				"## Last Execution Output", "### stdout\n```\nran 10 cases\n```",
				"### Attempt 7\n- Changes: not recorded\n- Performance: no metrics\n- Outcome: failed: stage 1: ZeroDivisionError",
				"### Attempt 6\n- Changes: faster loop", "scored 0.3000, above the current program's 0.2500",
				"### Attempt 5", "the reply could not be applied: SEARCH block 1 does not match",
				"## Output of Recent Attempts", "### Attempt 7 (failed): traceback", "ZeroDivisionError: division by zero",
				"### Program 1 (Score: 0.5000)\n```python\nx = 2\n```", "Key features: combined_score: 0.5000",
				"## Inspiration Programs", "### Inspiration 1 (Score: 0.1000, Type: Migrant)", "Unique approach: tried nine",
				"2 of the last 3 attempts failed",
			},
			// Only the three latest attempts are shown, as in OpenEvolve.
			[]string{"### Attempt 4", "timed out", "complete new program"}},
		{"rewrite mode asks for the whole program", protocol.ModeRewrite, func(*runconfig.Config) {},
			[]string{"complete new program", "```python\n# your rewritten program here\n```"}, []string{"<<<<<<< SEARCH"}},
		{"artifacts off", protocol.ModeDiff, func(c *runconfig.Config) { c.Prompt.IncludeArtifacts = false },
			[]string{"Outcome: failed: stage 1"}, []string{"ZeroDivisionError: division by zero", "ran 10 cases"}},
		{"artifacts capped over parent and attempts together", protocol.ModeDiff, func(c *runconfig.Config) { c.Prompt.MaxArtifactBytes = 40 },
			[]string{"ran 10 cases", "(truncated)"}, []string{strings.Repeat("y", 30), "division by zero"}},
		{"top programs capped", protocol.ModeDiff, func(c *runconfig.Config) { c.Prompt.NumTopPrograms = 0 },
			[]string{"## Top Performing Programs\n\nnone yet"}, []string{"### Program 1"}},
		{"system message from config", protocol.ModeDiff, func(c *runconfig.Config) { c.Prompt.SystemMessage = "Be terse {really}." },
			nil, nil},
	}
	tpl := defaultTemplates(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := runconfig.Default()
			tt.cfg(cfg)
			msgs := Render(cfg, tpl, Inputs{Parent: parent, Top: top, Inspirations: insp, Previous: previous, Mode: tt.mode, Language: "python"})
			if len(msgs) != 2 || msgs[0].Role != "system" || msgs[1].Role != "user" {
				t.Fatalf("messages = %+v, want system then user", msgs)
			}
			wantSystem := defaults[SystemMessage]
			if cfg.Prompt.SystemMessage != "" {
				wantSystem = cfg.Prompt.SystemMessage
			}
			if msgs[0].Content != wantSystem {
				t.Errorf("system message = %q, want %q", msgs[0].Content, wantSystem)
			}
			for _, w := range tt.want {
				if !strings.Contains(msgs[1].Content, w) {
					t.Errorf("prompt lacks %q:\n%s", w, msgs[1].Content)
				}
			}
			for _, o := range tt.omit {
				if strings.Contains(msgs[1].Content, o) {
					t.Errorf("prompt holds %q:\n%s", o, msgs[1].Content)
				}
			}
			if strings.Contains(msgs[1].Content, "{") && !strings.Contains(parent.Code, "{") {
				t.Errorf("a placeholder was left unfilled:\n%s", msgs[1].Content)
			}
		})
	}
}

func TestRenderOverrides(t *testing.T) {
	tpl, err := New(map[string]string{
		SystemMessage:   "You write {fast} code.", // sent as written: OpenEvolve does not format it
		DiffUser:        "FIT={fitness_score} LANG={language}\n{evolution_history}\n{{literal}}\n{current_program}",
		PreviousAttempt: "#{attempt_number}: {outcome}",
		TopProgram:      "TOP {program_number}={score}",
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := runconfig.Default()
	msgs := Render(cfg, tpl, Inputs{Parent: parent, Top: top, Previous: previous, Mode: protocol.ModeDiff, Language: "go"})
	if msgs[0].Content != "You write {fast} code." {
		t.Errorf("system = %q", msgs[0].Content)
	}
	user := msgs[1].Content
	for _, w := range []string{"FIT=0.2500 LANG=go", "#7: failed: stage 1: ZeroDivisionError", "#6: scored 0.3000", "TOP 1=0.5000", "{literal}", "x = 1"} {
		if !strings.Contains(user, w) {
			t.Errorf("prompt lacks %q:\n%s", w, user)
		}
	}
	// Templates that are not overridden keep their defaults.
	if !strings.Contains(user, "## Previous Attempts") {
		t.Errorf("default evolution_history not used:\n%s", user)
	}

	// A config's system_message that names a template is that template, as in OpenEvolve.
	cfg.Prompt.SystemMessage = "system_message"
	if got := Render(cfg, tpl, Inputs{Parent: parent})[0].Content; got != "You write {fast} code." {
		t.Errorf("system_message naming the template gave %q", got)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name      string
		overrides map[string]string
		err       string // substring; "" = no error
		warnings  []string
	}{
		{"good", map[string]string{DiffUser: "{metrics} {current_program}", SystemMessage: "{anything goes}"}, "", nil},
		{"unknown placeholder", map[string]string{DiffUser: "{metrics} {curent_program}"}, "diff_user: unknown placeholder {curent_program}", nil},
		{"placeholder of another template", map[string]string{TopProgram: "{current_program}"}, "top_program: unknown placeholder {current_program}", nil},
		{"format spec", map[string]string{TopProgram: "{score:.2f}"}, "unknown placeholder {score:.2f}", nil},
		{"unclosed brace", map[string]string{PreviousAttempt: "{outcome"}, "never closed", nil},
		{"stray brace", map[string]string{PreviousAttempt: "a } b"}, "single '}'", nil},
		{"unknown name", map[string]string{"diff_usr": "x"}, "", []string{"diff_usr.txt: not a template name shoal knows"}},
		{"OpenEvolve name shoal does not use", map[string]string{"evaluation": "{current_program}"}, "", []string{"evaluation.txt: OpenEvolve template that shoal does not use"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			warnings, err := Check(tt.overrides)
			if tt.err == "" && err != nil {
				t.Fatalf("Check: %v", err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrTemplate)) {
				t.Fatalf("Check error = %v, want one about %q", err, tt.err)
			}
			if len(warnings) != len(tt.warnings) {
				t.Fatalf("warnings = %q, want %q", warnings, tt.warnings)
			}
			for i, w := range tt.warnings {
				if !strings.Contains(warnings[i], w) {
					t.Errorf("warning %q lacks %q", warnings[i], w)
				}
			}
		})
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"diff_user.txt":        "{current_program}\n{evolution_history}",
		"previous_attempt.txt": "- {changes} -> {outcome}",
		"fragments.json":       "{}",
		"README.md":            "notes",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, warnings, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[DiffUser] != files["diff_user.txt"] || got[PreviousAttempt] != files["previous_attempt.txt"] {
		t.Errorf("LoadDir = %q, want the two .txt templates by name", got)
	}
	if len(warnings) != 2 || !strings.Contains(strings.Join(warnings, "\n"), "fragments.json") || !strings.Contains(strings.Join(warnings, "\n"), "README.md") {
		t.Errorf("warnings = %q, want one each for fragments.json and README.md", warnings)
	}
	if err := os.WriteFile(filepath.Join(dir, "top_program.txt"), []byte("{snippet}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "{snippet}") {
		t.Errorf("LoadDir with a bad placeholder: %v, want an error naming it", err)
	}
	if _, _, err := LoadDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("LoadDir of a missing directory succeeded")
	}
}

// BenchmarkRender measures one task's prompt with the defaults: the planner renders one per
// task, on its planning goroutine.
func BenchmarkRender(b *testing.B) {
	tpl, err := New(nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := runconfig.Default()
	in := Inputs{Parent: parent, Top: top, Inspirations: insp, Previous: previous, Mode: protocol.ModeDiff, Language: "python"}
	for b.Loop() {
		Render(cfg, tpl, in)
	}
}
