package runconfig

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Parse reads a config.yaml: Default, then the file's values over it, then Validate.
//
// Models inherit the llm-level api_base, api_key, temperature, top_p, max_tokens, timeout,
// retries and retry_delay they do not set, and use the "openai" backend unless they name
// another. Without llm.models (or OpenEvolve's llm.primary_model), the built-in mutate model
// stays. An empty file is Default.
//
// The warnings come back even with an error. The error joins every unusable value; each is a
// *FieldError, and errors.Is(err, ErrInvalid) holds. A YAML syntax error keeps its line.
func Parse(data []byte) (*Config, []Warning, error) {
	root, err := parseYAML(data)
	if err != nil {
		return nil, nil, err
	}
	c := Default()
	d := &decoder{}
	if root != nil && !isNull(root) {
		if root.Kind != yaml.MappingNode {
			return nil, nil, fmt.Errorf("%w: the file holds %s, want a mapping of keys such as max_iterations and llm", ErrInvalid, describe(root))
		}
		d.section(root, "", rootSchema(c))
	}
	d.warnUnusedBins(c)

	// A key whose value could not be read keeps its default; do not report it twice.
	failed := make(map[string]bool, len(d.errs))
	errs := make([]error, 0, len(d.errs))
	for _, e := range d.errs {
		failed[e.Key] = true
		errs = append(errs, e)
	}
	for _, e := range c.problems() {
		if !failed[e.Key] {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return nil, d.warnings, errors.Join(errs...)
	}
	return c, d.warnings, nil
}

// Load reads and parses the config file at path. Every error names the path, and a relative
// prompt.template_dir is taken relative to the file, as OpenEvolve does.
func Load(path string) (*Config, []Warning, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	c, warnings, err := Parse(data)
	if err != nil {
		return nil, warnings, inFile(path, err)
	}
	if dir := c.Prompt.TemplateDir; dir != "" && !filepath.IsAbs(dir) {
		abs, err := filepath.Abs(filepath.Join(filepath.Dir(path), dir))
		if err != nil {
			return nil, warnings, fmt.Errorf("%s: prompt.template_dir: %w", path, err)
		}
		c.Prompt.TemplateDir = abs
	}
	return c, warnings, nil
}

// inFile puts path in front of each joined error, so that every line of the message says
// which file it is about.
func inFile(path string, err error) error {
	if list, ok := err.(interface{ Unwrap() []error }); ok {
		errs := list.Unwrap()
		out := make([]error, len(errs))
		for i, e := range errs {
			out[i] = fmt.Errorf("%s: %w", path, e)
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s: %w", path, err)
}

// parseYAML returns the document's top node, or nil for a file with no document.
func parseYAML(data []byte) (root *yaml.Node, err error) {
	// The YAML library reports bad input with errors; a panic would be its bug, and one bad
	// config must not take a service down with it.
	defer func() {
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("yaml: cannot parse the config: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, err
	default:
		return nil, fmt.Errorf("yaml: line %d: a second document starts here; a config is one document", next.Line)
	}
	n := &doc
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil, nil
		}
		n = n.Content[0]
	}
	return resolve(n), nil
}

// maxEntries bounds the key-value pairs and list items read from one file, aliases and
// merges counted each time they are used, so that a small file cannot make Parse run long.
const maxEntries = 1 << 20

// decoder reads nodes into a Config, collecting warnings and errors as it goes.
type decoder struct {
	warnings []Warning
	errs     []*FieldError
	entries  int
	tooMany  bool
	known    []string // KnownKeys, once needed for a suggestion
}

// setFunc stores n, a resolved node that is not null, at key.
type setFunc func(d *decoder, n *yaml.Node, key string)

// field is one accepted key of a mapping.
type field struct {
	name string
	set  setFunc
	// sub lists the keys inside this one, for KnownKeys and suggestions; list says that they
	// are the keys of each item of a list.
	sub  func() schema
	list bool
}

// ignored is an OpenEvolve key that shoal accepts and does not act on.
type ignored struct {
	name string
	why  string
}

// schema is what one mapping may hold.
type schema struct {
	fields  []field
	ignored []ignored
}

func (s schema) field(name string) (field, bool) {
	for _, f := range s.fields {
		if f.name == name {
			return f, true
		}
	}
	return field{}, false
}

func (s schema) ignores(name string) (ignored, bool) {
	for _, i := range s.ignored {
		if i.name == name {
			return i, true
		}
	}
	return ignored{}, false
}

func (d *decoder) fail(key, format string, args ...any) {
	d.errs = append(d.errs, &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) warn(key, format string, args ...any) {
	d.warnings = append(d.warnings, Warning{Key: key, Message: fmt.Sprintf(format, args...)})
}

// spend counts entries read and says whether the budget still allows reading more.
func (d *decoder) spend(n int) bool {
	d.entries += n
	if d.entries > maxEntries && !d.tooMany {
		d.tooMany = true
		d.fail("config", "aliases and merges expand to more than %d entries", maxEntries)
	}
	return !d.tooMany
}

// section reads mapping n at path against s and returns the names it set. Null values leave
// the default in place and do not count as set.
func (d *decoder) section(n *yaml.Node, path string, s schema) map[string]bool {
	set := make(map[string]bool)
	for _, p := range d.pairs(n, path) {
		key := join(path, p.name)
		if f, ok := s.field(p.name); ok {
			if !isNull(p.val) {
				f.set(d, p.val, key)
				set[p.name] = true
			}
			continue
		}
		if ig, ok := s.ignores(p.name); ok {
			msg := "OpenEvolve setting that shoal does not use; ignored"
			if ig.why != "" {
				msg += " (" + ig.why + ")"
			}
			d.warn(key, "%s", msg)
			continue
		}
		d.warn(key, "unknown key, ignored%s", d.suggest(path, s, p.name))
	}
	return set
}

// mapping reports whether n is a mapping, and says what was wanted when it is not.
func (d *decoder) mapping(n *yaml.Node, key, want string) bool {
	if n.Kind == yaml.MappingNode {
		return true
	}
	d.fail(key, "got %s, want %s", describe(n), want)
	return false
}

// pair is one key of a mapping with its value, aliases resolved.
type pair struct {
	name string
	key  *yaml.Node
	val  *yaml.Node
}

// pairs lists a mapping's keys as PyYAML's safe_load sees them: merge keys (<<) expanded,
// explicit keys over merged ones, an earlier merged mapping over a later one, and the last
// of a repeated key winning (with a warning).
func (d *decoder) pairs(n *yaml.Node, path string) []pair {
	var out []pair
	index := make(map[string]int)
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !d.spend(1) {
			return out
		}
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if isMergeKey(k) {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.warn(join(path, "?"), "key at line %d is %s, not a name; ignored", k.Line, describe(k))
			continue
		}
		if j, dup := index[k.Value]; dup {
			d.warn(join(path, k.Value), "set twice (lines %d and %d); the last is used", out[j].key.Line, k.Line)
			out[j].key, out[j].val = k, v
			continue
		}
		index[k.Value] = len(out)
		out = append(out, pair{name: k.Value, key: k, val: v})
	}

	seen := make(map[*yaml.Node]bool)
	var merge func(m *yaml.Node, inList bool)
	merge = func(m *yaml.Node, inList bool) {
		switch {
		case m.Kind == yaml.MappingNode:
			if seen[m] {
				return
			}
			seen[m] = true
			var nested []*yaml.Node
			for i := 0; i+1 < len(m.Content); i += 2 {
				if !d.spend(1) {
					return
				}
				k, v := resolve(m.Content[i]), resolve(m.Content[i+1])
				if isMergeKey(k) {
					nested = append(nested, v)
					continue
				}
				if k.Kind != yaml.ScalarNode {
					continue
				}
				if _, ok := index[k.Value]; !ok {
					index[k.Value] = len(out)
					out = append(out, pair{name: k.Value, key: k, val: v})
				}
			}
			for _, v := range nested {
				merge(v, false)
			}
		case m.Kind == yaml.SequenceNode && !inList:
			for _, item := range m.Content {
				merge(resolve(item), true)
			}
		default:
			d.fail(join(path, "<<"), "got %s, want a mapping or a list of mappings to merge", describe(m))
		}
	}
	for _, m := range merges {
		merge(m, false)
	}
	return out
}

func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// describe names a node's kind for an error: "a list", "a string".
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!bool":
			return "true/false"
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!str":
			return "the string " + show(n)
		}
		return "the value " + show(n)
	}
	return "nothing"
}

// show quotes a scalar as the user wrote it: strings quoted, numbers bare.
func show(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return describe(n)
	}
	v := n.Value
	if r := []rune(v); len(r) > 60 {
		v = string(r[:57]) + "..."
	}
	switch n.ShortTag() {
	case "!!int", "!!float", "!!bool", "!!null":
		return v
	}
	return strconv.Quote(v)
}

// number reads a numeric scalar, or a string holding a number ("60").
func number(n *yaml.Node) (float64, bool) {
	if n.Kind != yaml.ScalarNode {
		return 0, false
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		var f float64
		if n.Decode(&f) == nil {
			return f, true
		}
	case "!!str":
	default:
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(n.Value), 64)
	return f, err == nil
}

func (d *decoder) int(n *yaml.Node, key string) (int64, bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		var v int64
		if n.Decode(&v) == nil {
			return v, true
		}
	}
	f, ok := number(n)
	switch {
	case !ok:
		d.fail(key, "%s is not a whole number", show(n))
	case f != math.Trunc(f):
		d.fail(key, "%s is not a whole number", show(n))
	case f < math.MinInt64 || f >= math.MaxInt64:
		d.fail(key, "%s is too large", show(n))
	default:
		return int64(f), true
	}
	return 0, false
}

func (d *decoder) float(n *yaml.Node, key string) (float64, bool) {
	if f, ok := number(n); ok {
		return f, true
	}
	d.fail(key, "%s is not a number", show(n))
	return 0, false
}

// bool reads YAML 1.1 booleans as PyYAML does (true, yes, on; false, no, off).
func (d *decoder) bool(n *yaml.Node, key string) (bool, bool) {
	if n.Kind == yaml.ScalarNode {
		switch n.Value {
		case "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON":
			return true, true
		case "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF":
			return false, true
		}
	}
	d.fail(key, "%s is not true or false", show(n))
	return false, false
}

// string takes any scalar as written, so that api_key: 0123 keeps its leading zero.
func (d *decoder) string(n *yaml.Node, key string) (string, bool) {
	if n.Kind == yaml.ScalarNode {
		return n.Value, true
	}
	d.fail(key, "got %s, want a string", describe(n))
	return "", false
}

// duration reads seconds (60, 0.5, "60") or a Go duration ("90s", "2m").
func (d *decoder) duration(n *yaml.Node, key string) (time.Duration, bool) {
	if f, ok := number(n); ok {
		ns := f * float64(time.Second)
		if math.IsNaN(ns) || ns <= math.MinInt64 || ns >= math.MaxInt64 {
			d.fail(key, "%s is not a usable number of seconds", show(n))
			return 0, false
		}
		return time.Duration(math.Round(ns)), true
	}
	if n.Kind == yaml.ScalarNode {
		if v, err := time.ParseDuration(strings.TrimSpace(n.Value)); err == nil {
			return v, true
		}
	}
	d.fail(key, "%s is not a number of seconds", show(n))
	return 0, false
}

// list walks a sequence's items, resolved, with their keys ("key[2]"); null items are errors.
func (d *decoder) list(n *yaml.Node, key, want string, each func(item *yaml.Node, key string)) bool {
	if n.Kind != yaml.SequenceNode {
		d.fail(key, "got %s, want %s", describe(n), want)
		return false
	}
	for i, item := range n.Content {
		if !d.spend(1) {
			return false
		}
		item, ik := resolve(item), fmt.Sprintf("%s[%d]", key, i)
		if isNull(item) {
			d.fail(ik, "is null, want a value")
			continue
		}
		each(item, ik)
	}
	return true
}

func (d *decoder) strings(n *yaml.Node, key string) ([]string, bool) {
	out := make([]string, 0, len(n.Content))
	ok := d.list(n, key, "a list of strings", func(item *yaml.Node, k string) {
		if s, good := d.string(item, k); good {
			out = append(out, s)
		}
	})
	return out, ok && len(out) == len(n.Content)
}

func (d *decoder) floats(n *yaml.Node, key string) ([]float64, bool) {
	out := make([]float64, 0, len(n.Content))
	ok := d.list(n, key, "a list of numbers", func(item *yaml.Node, k string) {
		if f, good := d.float(item, k); good {
			out = append(out, f)
		}
	})
	return out, ok && len(out) == len(n.Content)
}

// Setters for the schema tables.

func intTo[T int | int64](dst *T) setFunc {
	return func(d *decoder, n *yaml.Node, key string) {
		if v, ok := d.int(n, key); ok {
			if int64(T(v)) != v {
				d.fail(key, "%s is too large", show(n))
				return
			}
			*dst = T(v)
		}
	}
}

func floatTo(dst *float64) setFunc {
	return func(d *decoder, n *yaml.Node, key string) {
		if v, ok := d.float(n, key); ok {
			*dst = v
		}
	}
}

func boolTo(dst *bool) setFunc {
	return func(d *decoder, n *yaml.Node, key string) {
		if v, ok := d.bool(n, key); ok {
			*dst = v
		}
	}
}

func stringTo(dst *string) setFunc {
	return func(d *decoder, n *yaml.Node, key string) {
		if v, ok := d.string(n, key); ok {
			*dst = v
		}
	}
}

func durationTo(dst *time.Duration) setFunc {
	return func(d *decoder, n *yaml.Node, key string) {
		if v, ok := d.duration(n, key); ok {
			*dst = v
		}
	}
}

func stringsTo(dst *[]string) setFunc {
	return func(d *decoder, n *yaml.Node, key string) {
		if v, ok := d.strings(n, key); ok {
			*dst = v
		}
	}
}

func intsTo(dst *[]int) setFunc {
	return func(d *decoder, n *yaml.Node, key string) {
		out := make([]int, 0, len(n.Content))
		ok := d.list(n, key, "a list of whole numbers", func(item *yaml.Node, k string) {
			var v int
			before := len(d.errs)
			intTo(&v)(d, item, k)
			if len(d.errs) == before {
				out = append(out, v)
			}
		})
		if ok && len(out) == len(n.Content) {
			*dst = out
		}
	}
}

func floatsTo(dst *[]float64) setFunc {
	return func(d *decoder, n *yaml.Node, key string) {
		if v, ok := d.floats(n, key); ok {
			*dst = v
		}
	}
}

// warnUnusedBins points at feature_bins entries for dimensions the grid does not have;
// OpenEvolve ignores them silently.
func (d *decoder) warnUnusedBins(c *Config) {
	for _, dim := range slices.Sorted(maps.Keys(c.Database.FeatureBinsByDimension)) {
		if !slices.Contains(c.Database.FeatureDimensions, dim) {
			d.warn("database.feature_bins."+dim, "%q is not one of database.feature_dimensions; ignored", dim)
		}
	}
}
