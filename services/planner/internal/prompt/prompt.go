// Package prompt renders a task's chat messages from the parent, its metrics and artifacts,
// and the run's top and diverse programs, in the shape OpenEvolve's prompts take, so models
// tuned on those prompts see what they expect.
package prompt

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
)

// DefaultSystemMessage is used when the run's config has no prompt.system_message.
const DefaultSystemMessage = "You are an expert software developer tasked with iteratively improving a codebase. " +
	"Your job is to analyze the current program and suggest improvements based on feedback from previous attempts. " +
	"Focus on making targeted changes that will increase the program's performance metrics."

// Inputs is what a prompt is rendered from.
type Inputs struct {
	Parent       protocol.Program
	Top          []protocol.Program
	Inspirations []protocol.Program
	Mode         protocol.Mode
	Language     string
}

// Render returns the system and user messages for one task.
func Render(cfg *runconfig.Config, in Inputs) []protocol.ChatMessage {
	system := cfg.Prompt.SystemMessage
	if strings.TrimSpace(system) == "" {
		system = DefaultSystemMessage
	}
	lang := in.Language
	var b strings.Builder
	fmt.Fprintf(&b, "# Current Program Information\n- Fitness: %s\n", score(in.Parent))
	if m := metrics(in.Parent.Metrics); m != "" {
		fmt.Fprintf(&b, "- Metrics: %s\n", m)
	}
	if in.Parent.Status != "" && in.Parent.Status != protocol.StatusOK {
		fmt.Fprintf(&b, "- Status: %s\n", in.Parent.Status)
	}
	if cfg.Prompt.IncludeArtifacts && len(in.Parent.Artifacts) > 0 {
		b.WriteString("\n## Last Execution Output\n")
		budget := cfg.Prompt.MaxArtifactBytes
		for _, k := range slices.Sorted(maps.Keys(in.Parent.Artifacts)) {
			v := in.Parent.Artifacts[k]
			if budget <= 0 {
				break
			}
			if len(v) > budget {
				v = v[:budget] + "\n… (truncated)"
			}
			budget -= len(v)
			fmt.Fprintf(&b, "\n### %s\n```\n%s\n```\n", k, strings.TrimRight(v, "\n"))
		}
	}
	if len(in.Top) > 0 {
		b.WriteString("\n# Top Performing Programs\n")
		for i, p := range in.Top {
			fmt.Fprintf(&b, "\n## Program %d (Fitness: %s)\n```%s\n%s\n```\n", i+1, score(p), lang, strings.TrimRight(p.Code, "\n"))
		}
	}
	if len(in.Inspirations) > 0 {
		b.WriteString("\n# Diverse Programs\n")
		for i, p := range in.Inspirations {
			fmt.Fprintf(&b, "\n## Inspiration %d (Fitness: %s)\n```%s\n%s\n```\n", i+1, score(p), lang, strings.TrimRight(p.Code, "\n"))
		}
	}
	fmt.Fprintf(&b, "\n# Current Program\n```%s\n%s\n```\n\n# Task\n", lang, strings.TrimRight(in.Parent.Code, "\n"))
	if in.Mode == protocol.ModeRewrite {
		fmt.Fprintf(&b, "Rewrite the program to improve its fitness. Keep the EVOLVE-BLOCK-START / EVOLVE-BLOCK-END markers and change only the code between them.\n"+
			"Provide the complete new program in one fenced code block:\n\n```%s\n# your rewritten program here\n```\n", lang)
	} else {
		b.WriteString("Suggest improvements to the program that will raise its fitness. Change only code between EVOLVE-BLOCK-START and EVOLVE-BLOCK-END.\n" +
			"Describe each change as a SEARCH/REPLACE block; the SEARCH part must match the current program exactly:\n\n" +
			"<<<<<<< SEARCH\n# original code to find and replace\n=======\n# new replacement code\n>>>>>>> REPLACE\n\n" +
			"You may give several blocks. Do not repeat the whole program.\n")
	}
	return []protocol.ChatMessage{{Role: "system", Content: system}, {Role: "user", Content: b.String()}}
}

func score(p protocol.Program) string { return fmt.Sprintf("%.4f", p.Score) }

func metrics(m map[string]float64) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%.4g", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
