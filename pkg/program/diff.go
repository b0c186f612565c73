package program

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Block is one SEARCH/REPLACE edit. Search and Replace are lines, each ending
// in "\n" (the last one may omit it), so that an empty Replace deletes the
// matched lines while "\n" replaces them with one blank line.
type Block struct{ Search, Replace string }

// ParseDiff extracts SEARCH/REPLACE blocks from a model's reply:
//
//	<<<<<<< SEARCH
//	old lines
//	=======
//	new lines
//	>>>>>>> REPLACE
//
// Text between blocks is ignored, so blocks may sit inside ``` fences or among
// explanations. Local models often get the markers slightly wrong, so 5 to 9
// '<', '=' or '>' characters, surrounding spaces and CRLF line endings are all
// accepted. A reply with no block returns ErrNoBlocks; a block cut short or
// missing its divider returns ErrMalformedDiff naming the block, rather than
// applying the blocks before it and leaving the model's intent half done.
//
// Inside a block's replace text a "=======" line is kept as text; inside its
// search text it ends the search, since that is the only place a divider can be.
func ParseDiff(reply string) ([]Block, error) {
	const (
		between = iota
		inSearch
		inReplace
	)
	var (
		blocks          []Block
		search, replace []string
		state           = between
		opened          int // reply line of the current block's SEARCH marker
	)
	n := func() int { return len(blocks) + 1 }
	for i, line := range Lines(strings.ReplaceAll(reply, "\r\n", "\n")) {
		m := diffMarker(line)
		switch state {
		case between:
			switch m {
			case searchMarker:
				state, opened, search, replace = inSearch, i+1, nil, nil
			case replaceMarker:
				return nil, fmt.Errorf("block %d (reply line %d): REPLACE marker without a SEARCH marker: %w", n(), i+1, ErrMalformedDiff)
			}
		case inSearch:
			switch m {
			case dividerMarker:
				state = inReplace
			case searchMarker:
				return nil, fmt.Errorf("block %d (reply line %d): never closed before the next SEARCH marker on line %d: %w", n(), opened, i+1, ErrMalformedDiff)
			case replaceMarker:
				return nil, fmt.Errorf("block %d (reply line %d): no ======= divider before REPLACE: %w", n(), opened, ErrMalformedDiff)
			default:
				search = append(search, line)
			}
		case inReplace:
			switch m {
			case replaceMarker:
				blocks = append(blocks, Block{Search: blockText(search), Replace: blockText(replace)})
				state = between
			case searchMarker:
				return nil, fmt.Errorf("block %d (reply line %d): never closed before the next SEARCH marker on line %d: %w", n(), opened, i+1, ErrMalformedDiff)
			default:
				replace = append(replace, line)
			}
		}
	}
	switch state {
	case inSearch:
		return nil, fmt.Errorf("block %d (reply line %d): no ======= divider and never closed: %w", n(), opened, ErrMalformedDiff)
	case inReplace:
		return nil, fmt.Errorf("block %d (reply line %d): never closed with >>>>>>> REPLACE: %w", n(), opened, ErrMalformedDiff)
	}
	if len(blocks) == 0 {
		return nil, ErrNoBlocks
	}
	return blocks, nil
}

type marker int

const (
	noMarker marker = iota
	searchMarker
	dividerMarker
	replaceMarker
)

// diffMarker recognises a marker line the way a forgiving reader would: any
// surrounding whitespace, 5 to 9 marker characters, keyword in any case.
func diffMarker(line string) marker {
	t := strings.TrimSpace(line)
	if t == "" {
		return noMarker
	}
	c := t[0]
	run := len(t) - len(strings.TrimLeft(t, string(c)))
	if run < 5 || run > 9 {
		return noMarker
	}
	rest := strings.TrimSpace(t[run:])
	switch {
	case c == '<' && strings.EqualFold(rest, "SEARCH"):
		return searchMarker
	case c == '=' && rest == "":
		return dividerMarker
	case c == '>' && strings.EqualFold(rest, "REPLACE"):
		return replaceMarker
	}
	return noMarker
}

func blockText(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

// blockLines splits a block's text into lines; a final "\n" ends the last line.
func blockLines(text string) []string {
	return Lines(strings.ReplaceAll(text, "\r\n", "\n"))
}

// ApplyDiff applies blocks in order to code, all or nothing: on any error it
// returns "" and the error, so a reply is either the model's whole edit or a
// rejection with a reason, never a half-edited program.
//
// A block replaces the first run of whole lines equal to its search lines. If
// there is none, it matches again ignoring leading and trailing whitespace on
// every line (and blank lines around the search), and shifts the replacement's
// indentation by what the model got wrong, so a reply that dropped a level of
// indentation still yields correct Python. A search never matches part of a
// line or part of a run.
//
// When code has evolve regions, the first match lying wholly inside a region
// wins, even if the same text appears earlier outside; if every match lies
// outside, the block fails with ErrOutsideBlock. A replacement may not add
// markers, since that would move the boundary of what may change.
//
// The summary, such as "applied 2 blocks (1 whitespace-tolerant)", is meant for
// logs and for the user.
func ApplyDiff(code string, blocks []Block) (string, string, error) {
	if len(blocks) == 0 {
		return "", "", ErrNoBlocks
	}
	text, crlf := toLF(code)
	trailing := strings.HasSuffix(text, "\n")
	lines := Lines(text)
	regions, err := regionsIn(lines)
	if err != nil {
		return "", "", fmt.Errorf("program: %w", err)
	}
	// Whether edits are confined is decided by the program as given: markers
	// a block adds to unmarked code do not bind the blocks after it.
	confined := len(regions) > 0
	tolerant := 0
	for i, b := range blocks {
		if confined && i > 0 {
			// Earlier blocks moved lines but, kept off the markers, left
			// the regions balanced.
			if regions, err = regionsIn(lines); err != nil {
				return "", "", fmt.Errorf("program after block %d: %w", i, err)
			}
		}
		var loose bool
		lines, loose, err = applyBlock(lines, regions, b)
		if err != nil {
			return "", "", fmt.Errorf("block %d: %w", i+1, err)
		}
		if loose {
			tolerant++
		}
	}
	summary := fmt.Sprintf("applied %d block", len(blocks))
	if len(blocks) != 1 {
		summary += "s"
	}
	if tolerant > 0 {
		summary += fmt.Sprintf(" (%d whitespace-tolerant)", tolerant)
	}
	return fromLF(joinLines(lines, trailing), crlf), summary, nil
}

// applyBlock leaves naming the block to ApplyDiff, which knows its number.
func applyBlock(lines []string, regions []Region, b Block) ([]string, bool, error) {
	search, replace := blockLines(b.Search), blockLines(b.Replace)
	if strings.TrimSpace(strings.Join(search, "")) == "" {
		return nil, false, fmt.Errorf("empty search text: %w", ErrMalformedDiff)
	}
	if len(regions) > 0 && hasMarker(replace) {
		return nil, false, fmt.Errorf("replace text contains an evolve marker: %w", ErrOutsideBlock)
	}
	outside := span{at: -1}
	if at, ok := find(lines, search, regions, exactLine, &outside); ok {
		return splice(lines, at, len(search), replace), false, nil
	}
	s, r := trimBlankEnds(search, replace)
	if at, ok := find(lines, s, regions, looseLine, &outside); ok {
		return splice(lines, at, len(s), reindent(s, lines[at:at+len(s)], r)), true, nil
	}
	if outside.at >= 0 {
		return nil, false, fmt.Errorf("search matches %s, but only %s may change: %w",
			lineRange(outside.at, outside.n), describeRegions(regions), ErrOutsideBlock)
	}
	return nil, false, fmt.Errorf("search begins %q: %w", quoteLine(search), ErrNoMatch)
}

// span is a run of n code lines starting at index at.
type span struct{ at, n int }

func exactLine(a, b string) bool { return a == b }

func looseLine(a, b string) bool { return strings.TrimSpace(a) == strings.TrimSpace(b) }

// find returns the first position where every search line equals its code
// line under eq and the run may be edited. The first run that matches but may
// not be edited goes to *outside (unless one is already there) so the caller
// can say why a block failed.
func find(lines, search []string, regions []Region, eq func(a, b string) bool, outside *span) (int, bool) {
next:
	for at := 0; at+len(search) <= len(lines); at++ {
		for j, s := range search {
			if !eq(lines[at+j], s) {
				continue next
			}
		}
		if inside(regions, at, len(search)) {
			return at, true
		}
		if outside.at < 0 {
			*outside = span{at: at, n: len(search)}
		}
	}
	return 0, false
}

func splice(lines []string, at, n int, replace []string) []string {
	out := make([]string, 0, len(lines)-n+len(replace))
	out = append(out, lines[:at]...)
	out = append(out, replace...)
	return append(out, lines[at+n:]...)
}

// trimBlankEnds drops blank lines around the search text, which models add for
// readability and the code may not have. As many blank lines are dropped from
// the same end of the replacement, so the spacing the model intended survives.
func trimBlankEnds(search, replace []string) ([]string, []string) {
	blank := func(s string) bool { return strings.TrimSpace(s) == "" }
	lead := 0
	for lead < len(search) && blank(search[lead]) {
		lead++
	}
	trail := 0
	for trail < len(search)-lead && blank(search[len(search)-1-trail]) {
		trail++
	}
	rl := 0
	for rl < lead && rl < len(replace) && blank(replace[rl]) {
		rl++
	}
	rt := 0
	for rt < trail && rt < len(replace)-rl && blank(replace[len(replace)-1-rt]) {
		rt++
	}
	return search[lead : len(search)-trail], replace[rl : len(replace)-rt]
}

func indentOf(s string) string {
	return s[:len(s)-len(strings.TrimLeft(s, " \t"))]
}

// reindent moves replacement lines from the indentation the model used in its
// search text to the indentation the code really has. The mapping is learnt
// from the matched line pairs, so it handles a dropped or added level, and
// spaces written for tab-indented code; indentation beyond any seen level is
// converted to the code's own tabs or spaces.
func reindent(search, matched, replace []string) []string {
	shift := map[string]string{}
	var keys []string
	for i, s := range search {
		if strings.TrimSpace(s) == "" {
			continue
		}
		si := indentOf(s)
		if _, ok := shift[si]; !ok {
			shift[si] = indentOf(matched[i])
			keys = append(keys, si)
		}
	}
	conv := newIndentStyle(keys, shift, matched)
	// Longest first, so the deepest known level that prefixes a line wins.
	sort.SliceStable(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })

	out := make([]string, len(replace))
	for i, line := range replace {
		out[i] = line
		if strings.TrimSpace(line) == "" {
			continue
		}
		ri := indentOf(line)
		body := line[len(ri):]
		if ci, ok := shift[ri]; ok {
			out[i] = ci + body
			continue
		}
		deeper := false
		for _, k := range keys {
			if strings.HasPrefix(ri, k) {
				out[i] = shift[k] + conv.convert(ri[len(k):]) + body
				deeper = true
				break
			}
		}
		if deeper {
			continue
		}
		// Shallower than any search line: take the cut off the shallowest
		// level it prefixes. If the code's indentation cannot lose that much,
		// the line is left as the model wrote it.
		for j := len(keys) - 1; j >= 0; j-- {
			k := keys[j]
			if !strings.HasPrefix(k, ri) {
				continue
			}
			cut := conv.convert(k[len(ri):])
			if ci := shift[k]; strings.HasSuffix(ci, cut) {
				out[i] = ci[:len(ci)-len(cut)] + body
			}
			break
		}
	}
	return out
}

// indentStyle is how the matched code indents, and how many of the model's
// spaces make one of its tabs (or the reverse).
type indentStyle struct {
	known, tabs bool
	width       int
}

// newIndentStyle reads the search indents in keys in the order the model wrote
// them, so the first telling pair decides the width.
func newIndentStyle(keys []string, shift map[string]string, matched []string) indentStyle {
	st := indentStyle{width: 4}
	for _, l := range matched {
		ind := indentOf(l)
		if strings.Contains(ind, "\t") {
			st.known, st.tabs = true, true
			break
		}
		if ind != "" {
			st.known = true
		}
	}
	only := func(s string, c string) bool { return s != "" && strings.Trim(s, c) == "" }
	for _, s := range keys {
		c := shift[s]
		switch {
		case only(s, " ") && only(c, "\t") && len(s)%len(c) == 0:
			st.width = len(s) / len(c)
		case only(s, "\t") && only(c, " ") && len(c)%len(s) == 0:
			st.width = len(c) / len(s)
		default:
			continue
		}
		break
	}
	return st
}

func (st indentStyle) convert(extra string) string {
	switch {
	case !st.known:
		return extra
	case st.tabs:
		return strings.ReplaceAll(extra, strings.Repeat(" ", st.width), "\t")
	default:
		return strings.ReplaceAll(extra, "\t", strings.Repeat(" ", st.width))
	}
}

// quoteLine picks the first non-blank search line, cut to about 200 bytes, to
// show in an error: enough for a person or the model to find what was meant.
func quoteLine(search []string) string {
	const max = 200
	for _, l := range search {
		if strings.TrimSpace(l) == "" {
			continue
		}
		if len(l) <= max {
			return l
		}
		cut := max
		for cut > 0 && !utf8.RuneStart(l[cut]) {
			cut--
		}
		return l[:cut] + "…"
	}
	return ""
}
