package planner

import "github.com/shoal-run/shoal/services/planner/internal/prompt"

// LoadTemplates reads an OpenEvolve prompt.template_dir for a run's seed: its *.txt templates
// by name (diff_user, previous_attempt, …). A template with a placeholder the planner does not
// fill, or with a stray brace, is an error naming it; a file the planner does not render is a
// warning.
func LoadTemplates(dir string) (templates map[string]string, warnings []string, err error) {
	return prompt.LoadDir(dir)
}

// CheckTemplates validates templates shipped in a seed in the same way.
func CheckTemplates(templates map[string]string) (warnings []string, err error) {
	return prompt.Check(templates)
}
