// Package prompt renders a task's chat messages in the shape OpenEvolve's prompts take —
// the current program with its metrics, previous attempts and how they ended, top and
// inspiration programs, and the artifacts of failures — from OpenEvolve's templates or a
// run's overrides of them (prompt.template_dir), so models tuned on those prompts see what
// they expect and users keep the templates they wrote.
package prompt

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// maxPreviousAttempts is how many of the island's latest attempts a prompt shows, as in
// OpenEvolve.
const maxPreviousAttempts = 3

// Inputs is what a prompt is rendered from.
type Inputs struct {
	Parent       protocol.Program
	Top          []protocol.Program
	Inspirations []protocol.Program
	// Previous are the island's latest attempts, newest first, failures included.
	Previous []protocol.Program
	Mode     protocol.Mode
	Language string
}

// Render returns the system and user messages for one task.
func Render(cfg *runconfig.Config, t *Templates, in Inputs) []protocol.ChatMessage {
	lang := in.Language
	if lang == "" {
		lang = cfg.Language
	}
	previous := in.Previous[:min(len(in.Previous), maxPreviousAttempts)]
	top := in.Top[:min(len(in.Top), max(cfg.Prompt.NumTopPrograms, 0))]

	history := t.fill(EvolutionHistory, map[string]string{
		"previous_attempts":    orNone(t.previousAttempts(in.Parent, previous)),
		"top_programs":         orNone(t.topPrograms(top, lang)),
		"inspirations_section": t.inspirations(in.Parent, in.Inspirations, lang),
	})
	artifacts := ""
	if cfg.Prompt.IncludeArtifacts {
		artifacts = renderArtifacts(in.Parent, previous, cfg.Prompt.MaxArtifactBytes)
	}
	user := FullRewriteUser
	if in.Mode != protocol.ModeRewrite {
		user = DiffUser
	}
	dims := strings.Join(cfg.Database.FeatureDimensions, ", ")
	if dims == "" {
		dims = "None"
	}
	text := t.fill(user, map[string]string{
		"metrics":            metricLines(in.Parent.Metrics),
		"fitness_score":      score(in.Parent.Score),
		"feature_coords":     cmp.Or(featureCoords(cfg.Database.FeatureDimensions, in.Parent.Features), "none"),
		"feature_dimensions": dims,
		"improvement_areas":  improvementAreas(cfg, in.Parent, previous),
		"evolution_history":  history,
		"current_program":    strings.TrimRight(in.Parent.Code, "\n"),
		"language":           lang,
		"artifacts":          artifacts,
	})
	return []protocol.ChatMessage{{Role: "system", Content: t.system(cfg)}, {Role: "user", Content: text}}
}

// system returns the config's system message; as in OpenEvolve, a system message that names
// a template is that template, and none at all is the system_message template.
func (t *Templates) system(cfg *runconfig.Config) string {
	msg := cfg.Prompt.SystemMessage
	if strings.TrimSpace(msg) == "" {
		msg = SystemMessage
	}
	if t.has(msg) {
		return t.text[msg]
	}
	return msg
}

func (t *Templates) previousAttempts(parent protocol.Program, previous []protocol.Program) string {
	parts := make([]string, 0, len(previous))
	for i, p := range previous {
		n := strconv.FormatInt(p.Iteration, 10)
		if p.Iteration == 0 {
			n = strconv.Itoa(len(previous) - i)
		}
		changes := p.Changes
		if changes == "" {
			changes = "not recorded"
		}
		perf := metricList(p.Metrics)
		if perf == "" {
			perf = "no metrics"
		}
		parts = append(parts, strings.TrimRight(t.fill(PreviousAttempt, map[string]string{
			"attempt_number": n, "changes": changes, "performance": perf, "outcome": outcome(parent, p),
		}), "\n"))
	}
	return strings.Join(parts, "\n\n")
}

// outcome says how an attempt ended: its score against the current program's, or why it
// failed, so the model does not repeat a failure.
func outcome(parent, p protocol.Program) string {
	reason := ""
	if p.Reason != "" {
		reason = ": " + p.Reason
	}
	switch p.Status {
	case protocol.StatusOK, "":
		rel := "equal to"
		switch {
		case p.Score > parent.Score:
			rel = "above"
		case p.Score < parent.Score:
			rel = "below"
		}
		return fmt.Sprintf("scored %s, %s the current program's %s", score(p.Score), rel, score(parent.Score))
	case protocol.StatusFailed:
		return "failed" + reason
	case protocol.StatusTimeout:
		return "timed out" + reason
	case protocol.StatusRejected:
		return "the reply could not be applied" + reason
	}
	return string(p.Status) + reason
}

func (t *Templates) topPrograms(top []protocol.Program, lang string) string {
	parts := make([]string, 0, len(top))
	for i, p := range top {
		features := metricList(p.Metrics)
		if features == "" {
			features = "score " + score(p.Score)
		}
		parts = append(parts, strings.TrimRight(t.fill(TopProgram, map[string]string{
			"program_number": strconv.Itoa(i + 1), "score": score(p.Score), "language": lang,
			"program_snippet": strings.TrimRight(p.Code, "\n"), "key_features": features,
		}), "\n"))
	}
	return strings.Join(parts, "\n\n")
}

func (t *Templates) inspirations(parent protocol.Program, insp []protocol.Program, lang string) string {
	if len(insp) == 0 {
		return ""
	}
	parts := make([]string, 0, len(insp))
	for i, p := range insp {
		kind := "Alternative"
		switch {
		case p.Island != parent.Island:
			kind = "Migrant"
		case p.Score > parent.Score:
			kind = "High-Performer"
		}
		unique := p.Changes
		if len(unique) > 100 {
			unique = unique[:100] + "…"
		}
		if unique == "" {
			unique = orNone(metricList(p.Metrics))
		}
		parts = append(parts, strings.TrimRight(t.fill(InspirationProgram, map[string]string{
			"program_number": strconv.Itoa(i + 1), "score": score(p.Score), "program_type": kind, "language": lang,
			"program_snippet": strings.TrimRight(p.Code, "\n"), "unique_features": unique,
		}), "\n"))
	}
	return t.fill(InspirationsSection, map[string]string{"inspiration_programs": strings.Join(parts, "\n\n")})
}

// improvementAreas is shoal's guidance, one "- " line each: fix a failing program first,
// learn from failed attempts, and how fitness moved.
func improvementAreas(cfg *runconfig.Config, parent protocol.Program, previous []protocol.Program) string {
	var areas []string
	if parent.Status != "" && parent.Status != protocol.StatusOK {
		areas = append(areas, fmt.Sprintf("The current program's evaluation ended with status %s: fix that first", parent.Status))
	}
	failed := 0
	for _, p := range previous {
		if p.Status != "" && p.Status != protocol.StatusOK {
			failed++
		}
	}
	if failed > 0 {
		areas = append(areas, fmt.Sprintf("%d of the last %d attempts failed; their outcomes are below: do not repeat them", failed, len(previous)))
	}
	if len(previous) > 0 && (previous[0].Status == protocol.StatusOK || previous[0].Status == "") {
		switch p := previous[0]; {
		case p.Score > parent.Score:
			areas = append(areas, fmt.Sprintf("The latest attempt raised fitness to %s from the current %s", score(p.Score), score(parent.Score)))
		case p.Score < parent.Score:
			areas = append(areas, fmt.Sprintf("The latest attempt lowered fitness to %s from the current %s", score(p.Score), score(parent.Score)))
		default:
			areas = append(areas, fmt.Sprintf("Fitness is unchanged at %s: try something different", score(parent.Score)))
		}
	}
	if cfg.MaxCodeLength > 0 && utf8.RuneCountInString(parent.Code) > cfg.MaxCodeLength*3/4 {
		areas = append(areas, fmt.Sprintf("The program is near max_code_length (%d characters): simplify rather than grow it", cfg.MaxCodeLength))
	}
	if len(areas) == 0 {
		areas = append(areas, "Focus on raising the fitness score")
	}
	return "- " + strings.Join(areas, "\n- ")
}

// renderArtifacts shows the current program's artifacts, then those of the recent attempts
// that carry any (the archive keeps them for attempts that failed or fell short at a cascade
// stage), newest first, within one budget of maxBytes.
func renderArtifacts(parent protocol.Program, previous []protocol.Program, maxBytes int) string {
	budget := maxBytes
	section := func(title string, arts map[string]string) string {
		var b strings.Builder
		for _, k := range slices.Sorted(maps.Keys(arts)) {
			if budget <= 0 {
				b.WriteString("\n… (further artifacts cut at prompt.max_artifact_bytes)\n")
				break
			}
			v := strings.TrimRight(arts[k], "\n")
			if len(v) > budget {
				v = strings.ToValidUTF8(v[:budget], "") + "\n… (truncated)"
			}
			budget -= len(v)
			fmt.Fprintf(&b, "\n### %s%s\n```\n%s\n```\n", title, k, v)
		}
		return b.String()
	}
	var out strings.Builder
	if len(parent.Artifacts) > 0 {
		out.WriteString("## Last Execution Output\n")
		out.WriteString(section("", parent.Artifacts))
	}
	var failed strings.Builder
	for _, p := range previous {
		if len(p.Artifacts) == 0 || budget <= 0 {
			continue
		}
		status := string(p.Status)
		if p.Status == protocol.StatusOK || p.Status == "" {
			status = "score " + score(p.Score)
		}
		failed.WriteString(section(fmt.Sprintf("Attempt %d (%s): ", p.Iteration, status), p.Artifacts))
	}
	if failed.Len() > 0 {
		if out.Len() > 0 {
			out.WriteString("\n")
		}
		out.WriteString("## Output of Recent Attempts\n")
		out.WriteString(failed.String())
	}
	return strings.TrimRight(out.String(), "\n")
}

func featureCoords(dims []string, features []int) string {
	parts := make([]string, 0, len(features))
	for i, f := range features {
		name := "dim" + strconv.Itoa(i)
		if i < len(dims) {
			name = dims[i]
		}
		parts = append(parts, fmt.Sprintf("%s=%d", name, f))
	}
	return strings.Join(parts, ", ")
}

func score(s float64) string { return fmt.Sprintf("%.4f", s) }

func metricLines(m map[string]float64) string {
	if len(m) == 0 {
		return "- none"
	}
	lines := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		lines = append(lines, fmt.Sprintf("- %s: %.4f", k, m[k]))
	}
	return strings.Join(lines, "\n")
}

func metricList(m map[string]float64) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s: %.4f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "none yet"
	}
	return s
}
