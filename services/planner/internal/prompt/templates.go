package prompt

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Template names, as OpenEvolve names its template files (without .txt), and the
// placeholders each may hold. A run's prompt.template_dir overrides any of them.
const (
	SystemMessage       = "system_message"
	DiffUser            = "diff_user"
	FullRewriteUser     = "full_rewrite_user"
	EvolutionHistory    = "evolution_history"
	PreviousAttempt     = "previous_attempt"
	TopProgram          = "top_program"
	InspirationsSection = "inspirations_section"
	InspirationProgram  = "inspiration_program"
)

var userPlaceholders = []string{"metrics", "fitness_score", "feature_coords", "feature_dimensions",
	"improvement_areas", "evolution_history", "current_program", "language", "artifacts"}

// placeholders lists, per template, the names OpenEvolve fills in; shoal fills the same.
var placeholders = map[string][]string{
	SystemMessage:       nil,
	DiffUser:            userPlaceholders,
	FullRewriteUser:     userPlaceholders,
	EvolutionHistory:    {"previous_attempts", "top_programs", "inspirations_section"},
	PreviousAttempt:     {"attempt_number", "changes", "performance", "outcome"},
	TopProgram:          {"program_number", "score", "language", "program_snippet", "key_features"},
	InspirationsSection: {"inspiration_programs"},
	InspirationProgram:  {"program_number", "score", "program_type", "language", "program_snippet", "unique_features"},
}

// unused are OpenEvolve's other template names: accepted with a warning, since shoal has no
// LLM feedback or changes-description mode that would read them.
var unused = []string{"evaluator_system_message", "evaluation", "system_message_changes_description",
	"system_message_with_changes_description", "user_message_with_changes_description"}

// Names returns the template names shoal renders, sorted.
func Names() []string { return slices.Sorted(maps.Keys(placeholders)) }

// ErrTemplate marks a template that cannot be rendered: an unknown placeholder or a brace
// out of place.
var ErrTemplate = errors.New("prompt template")

// Templates are parsed templates by name: the defaults with a run's overrides laid over.
type Templates struct {
	parsed map[string][]piece
	text   map[string]string
}

// piece is literal text, or a placeholder when name is set.
type piece struct{ lit, name string }

// New parses the defaults with overrides laid over them. An override with an unknown name is
// left out (Check reports it); a template that does not parse is an error naming it.
func New(overrides map[string]string) (*Templates, error) {
	t := &Templates{parsed: map[string][]piece{}, text: map[string]string{}}
	var errs []error
	for name := range placeholders {
		text, ok := overrides[name]
		if !ok {
			text = defaults[name]
		}
		ps, err := parse(name, text)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		t.parsed[name], t.text[name] = ps, text
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// Check validates a run's template overrides at seed time: an unparsable template or an
// unknown placeholder is an error; a file name shoal does not render is a warning.
func Check(overrides map[string]string) (warnings []string, err error) {
	for _, name := range slices.Sorted(maps.Keys(overrides)) {
		if _, ok := placeholders[name]; ok {
			continue
		}
		if slices.Contains(unused, name) {
			warnings = append(warnings, fmt.Sprintf("template %s.txt: OpenEvolve template that shoal does not use; ignored", name))
		} else {
			warnings = append(warnings, fmt.Sprintf("template %s.txt: not a template name shoal knows (have %s); ignored", name, strings.Join(Names(), ", ")))
		}
	}
	_, err = New(overrides)
	return warnings, err
}

// LoadDir reads the *.txt templates of an OpenEvolve template_dir, keyed by name without the
// extension, and checks them. Other files are reported as warnings.
func LoadDir(dir string) (map[string]string, []string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("prompt.template_dir: %w", err)
	}
	out := map[string]string{}
	var warnings []string
	for _, e := range entries {
		name, isTxt := strings.CutSuffix(e.Name(), ".txt")
		switch {
		case e.IsDir():
			continue
		case e.Name() == "fragments.json":
			warnings = append(warnings, "template fragments.json: shoal writes its own guidance phrases; ignored")
			continue
		case !isTxt:
			warnings = append(warnings, fmt.Sprintf("template dir: %s is not a .txt template; ignored", e.Name()))
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, nil, fmt.Errorf("prompt.template_dir: %w", err)
		}
		out[name] = string(data)
	}
	more, err := Check(out)
	return out, append(warnings, more...), err
}

// parse splits a template in Python's str.format syntax, as OpenEvolve fills it: {name} is a
// placeholder, {{ and }} are literal braces.
func parse(name, text string) ([]piece, error) {
	if name == SystemMessage {
		return []piece{{lit: text}}, nil // OpenEvolve sends it as written, braces and all
	}
	allowed := placeholders[name]
	var out []piece
	var lit strings.Builder
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '{' && i+1 < len(text) && text[i+1] == '{', c == '}' && i+1 < len(text) && text[i+1] == '}':
			lit.WriteByte(c)
			i++
		case c == '}':
			return nil, fmt.Errorf("%w %s: single '}' at byte %d: write }} for a literal brace", ErrTemplate, name, i)
		case c == '{':
			end := strings.IndexByte(text[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("%w %s: '{' at byte %d is never closed: write {{ for a literal brace", ErrTemplate, name, i)
			}
			field := text[i+1 : i+end]
			if !slices.Contains(allowed, field) {
				have := "none"
				if len(allowed) > 0 {
					have = "{" + strings.Join(allowed, "}, {") + "}"
				}
				return nil, fmt.Errorf("%w %s: unknown placeholder {%s} (have %s; write {{ and }} for literal braces)", ErrTemplate, name, field, have)
			}
			if lit.Len() > 0 {
				out = append(out, piece{lit: lit.String()})
				lit.Reset()
			}
			out = append(out, piece{name: field})
			i += end
		default:
			lit.WriteByte(c)
		}
	}
	if lit.Len() > 0 {
		out = append(out, piece{lit: lit.String()})
	}
	return out, nil
}

// fill renders template name with values; a placeholder without a value renders empty.
func (t *Templates) fill(name string, values map[string]string) string {
	var b strings.Builder
	for _, p := range t.parsed[name] {
		if p.name == "" {
			b.WriteString(p.lit)
		} else {
			b.WriteString(values[p.name])
		}
	}
	return b.String()
}

// has reports whether the template exists (the system message may name one).
func (t *Templates) has(name string) bool { _, ok := t.parsed[name]; return ok }
