// Package program applies a language model's proposed edits to a candidate
// program without letting them reach text the user did not mark as evolvable.
//
// Replies from local models are rarely byte-perfect, so parsing and matching
// forgive the usual slips (marker lengths, indentation drift, CRLF, code
// fences) and reject everything else with a reason that can be shown to the
// user and fed back to the model, where OpenEvolve would silently drop the
// edit.
package program

import (
	"fmt"
	"strings"
)

// The markers are matched anywhere in a line, so they work inside the comment
// syntax of any language: "# EVOLVE-BLOCK-START", "// EVOLVE-BLOCK-START".
const (
	BlockStart = "EVOLVE-BLOCK-START"
	BlockEnd   = "EVOLVE-BLOCK-END"
)

// Region is a half-open range of 0-based line indices [Start, End) holding the
// lines strictly between a start marker line and its end marker line. The
// marker lines themselves are outside, so no edit can remove or move them.
type Region struct{ Start, End int }

// Regions finds the evolve regions of code. Code without markers has none
// (nil, nil) and is editable everywhere. Unbalanced or nested markers are an
// error rather than a best guess, because guessing wrong would let an edit
// through where the user forbade it.
func Regions(code string) ([]Region, error) {
	return regionsIn(Lines(code))
}

func regionsIn(lines []string) ([]Region, error) {
	var regions []Region
	open := -1
	for i, line := range lines {
		start, end := strings.Contains(line, BlockStart), strings.Contains(line, BlockEnd)
		switch {
		case start && end:
			return nil, fmt.Errorf("line %d: %s and %s on one line: %w", i+1, BlockStart, BlockEnd, ErrMarkers)
		case start && open >= 0:
			return nil, fmt.Errorf("line %d: %s inside the block opened on line %d: %w", i+1, BlockStart, open+1, ErrMarkers)
		case start:
			open = i
		case end && open < 0:
			return nil, fmt.Errorf("line %d: %s with no open block: %w", i+1, BlockEnd, ErrMarkers)
		case end:
			regions = append(regions, Region{Start: open + 1, End: i})
			open = -1
		}
	}
	if open >= 0 {
		return nil, fmt.Errorf("line %d: %s never closed: %w", open+1, BlockStart, ErrMarkers)
	}
	return regions, nil
}

// Lines splits code into lines the way Regions counts them. A final "\n"
// terminates the last line rather than starting an empty one, so a region's
// line numbers match what an editor shows. Carriage returns stay in the lines.
func Lines(code string) []string {
	if code == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(code, "\n"), "\n")
}

// joinLines undoes Lines, restoring whether the text ended with a newline, so
// that an edit never shows up as a spurious change on the last line.
func joinLines(lines []string, trailingNewline bool) string {
	if len(lines) == 0 {
		return ""
	}
	s := strings.Join(lines, "\n")
	if trailingNewline {
		s += "\n"
	}
	return s
}

// toLF lets edits work on "\n" lines when code uses CRLF throughout; the
// returned flag tells fromLF to give the result back in CRLF. Code with mixed
// endings is left alone: its lines keep their "\r", which whitespace-tolerant
// matching ignores.
func toLF(code string) (string, bool) {
	n := strings.Count(code, "\n")
	if n == 0 || strings.Count(code, "\r\n") != n {
		return code, false
	}
	return strings.ReplaceAll(code, "\r\n", "\n"), true
}

func fromLF(code string, crlf bool) string {
	if !crlf {
		return code
	}
	return strings.ReplaceAll(code, "\n", "\r\n")
}

// inside reports whether lines [at, at+n) may be edited: all of them within one
// region, or anywhere when the code has no regions.
func inside(regions []Region, at, n int) bool {
	if len(regions) == 0 {
		return true
	}
	for _, r := range regions {
		if at >= r.Start && at+n <= r.End {
			return true
		}
	}
	return false
}

// describeRegions lists regions as 1-based line ranges, as an editor shows
// them, for error messages a user or model reads.
func describeRegions(regions []Region) string {
	parts := make([]string, len(regions))
	for i, r := range regions {
		if r.End == r.Start {
			parts[i] = fmt.Sprintf("none (empty block after line %d)", r.Start)
			continue
		}
		parts[i] = lineRange(r.Start, r.End-r.Start)
	}
	return strings.Join(parts, ", ")
}

// lineRange names n lines from 0-based index at in 1-based words.
func lineRange(at, n int) string {
	if n == 1 {
		return fmt.Sprintf("line %d", at+1)
	}
	return fmt.Sprintf("lines %d-%d", at+1, at+n)
}

func hasMarker(lines []string) bool {
	for _, l := range lines {
		if strings.Contains(l, BlockStart) || strings.Contains(l, BlockEnd) {
			return true
		}
	}
	return false
}
