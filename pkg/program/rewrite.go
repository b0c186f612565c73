package program

import (
	"fmt"
	"strings"
)

// ExtractRewrite takes the program out of a full-rewrite reply. Models wrap
// code in fences and surround it with prose, so the first fenced block is the
// program, unless several are fenced and one is labelled with language (such
// as "python" or "py"), which is preferred over a leading shell snippet or
// example. A fence the reply never closes runs to the end of the reply, since
// a reply cut off by the token limit still carries most of the program. With
// no fence the whole reply, trimmed, is the program.
//
// The result always ends in one newline, as a program file does. A reply with
// no code returns ErrEmptyRewrite.
func ExtractRewrite(reply, language string) (string, error) {
	lines := Lines(strings.ReplaceAll(reply, "\r\n", "\n"))
	var text string
	if fences := findFences(lines); len(fences) > 0 {
		pick := fences[0]
		for _, f := range fences {
			if language != "" && sameLanguage(f.info, language) {
				pick = f
				break
			}
		}
		body := lines[pick.from:pick.to]
		for len(body) > 0 && strings.TrimSpace(body[0]) == "" {
			body = body[1:]
		}
		for len(body) > 0 && strings.TrimSpace(body[len(body)-1]) == "" {
			body = body[:len(body)-1]
		}
		text = joinLines(body, true)
	} else if t := strings.TrimSpace(strings.Join(lines, "\n")); t != "" {
		text = t + "\n"
	}
	if strings.TrimSpace(text) == "" {
		return "", ErrEmptyRewrite
	}
	return text, nil
}

// fence is a fenced code block: its info string and the body lines [from, to).
type fence struct {
	info     string
	from, to int
}

// findFences follows CommonMark closely enough for model replies: ``` or ~~~
// of three or more, closed by a line of at least as many of the same
// character, so code that itself contains a shorter fence survives.
func findFences(lines []string) []fence {
	var fences []fence
	for i := 0; i < len(lines); i++ {
		t := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(t, "```") && !strings.HasPrefix(t, "~~~") {
			continue
		}
		c := t[:1]
		run := len(t) - len(strings.TrimLeft(t, c))
		f := fence{info: strings.TrimSpace(t[run:]), from: i + 1, to: len(lines)}
		for j := i + 1; j < len(lines); j++ {
			u := strings.TrimSpace(lines[j])
			if len(u) >= run && strings.Trim(u, c) == "" {
				f.to = j
				break
			}
		}
		fences = append(fences, f)
		i = f.to
	}
	return fences
}

// sameLanguage compares a fence's info string with the run's language,
// allowing the short names models tend to write.
func sameLanguage(info, language string) bool {
	word, _, _ := strings.Cut(info, " ")
	word = strings.TrimPrefix(word, "{.") // pandoc-style {.python}
	word = strings.TrimSuffix(word, "}")
	return canonicalLanguage(word) == canonicalLanguage(language)
}

func canonicalLanguage(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	switch s {
	case "py", "python3", "py3":
		return "python"
	case "js", "node":
		return "javascript"
	case "ts":
		return "typescript"
	case "rs":
		return "rust"
	case "golang":
		return "go"
	case "c++", "cc", "cxx", "hpp":
		return "cpp"
	case "sh", "shell", "zsh":
		return "bash"
	}
	return s
}

// ApplyRewrite turns an extracted rewrite into the child of parent. When the
// parent has evolve regions, only they take the rewrite's text: everything
// outside, often the evaluator's harness, is kept from the parent even if the
// model rewrote it, and the summary says so. The rewrite must then have the
// same number of regions, matched by position; otherwise there is no safe way
// to tell which of its text belongs where, and ErrOutsideBlock explains the
// mismatch. A parent without regions is simply replaced.
func ApplyRewrite(parent, rewrite string) (string, string, error) {
	if strings.TrimSpace(rewrite) == "" {
		return "", "", ErrEmptyRewrite
	}
	ptext, crlf := toLF(parent)
	plines := Lines(ptext)
	pregions, err := regionsIn(plines)
	if err != nil {
		return "", "", fmt.Errorf("parent: %w", err)
	}
	if len(pregions) == 0 {
		return rewrite, "full rewrite", nil
	}
	rlines := Lines(strings.ReplaceAll(rewrite, "\r\n", "\n"))
	rregions, err := regionsIn(rlines)
	if err != nil {
		return "", "", fmt.Errorf("rewrite: %w: %w", ErrOutsideBlock, err)
	}
	if len(rregions) != len(pregions) {
		return "", "", fmt.Errorf("parent has %s, rewrite has %s: %w",
			countBlocks(len(pregions)), countBlocks(len(rregions)), ErrOutsideBlock)
	}

	var out []string
	changedOutside := false
	prev, rprev := 0, 0
	for i, pr := range pregions {
		rr := rregions[i]
		changedOutside = changedOutside || !equalLines(plines[prev:pr.Start], rlines[rprev:rr.Start])
		out = append(out, plines[prev:pr.Start]...)
		out = append(out, rlines[rr.Start:rr.End]...)
		prev, rprev = pr.End, rr.End
	}
	changedOutside = changedOutside || !equalLines(plines[prev:], rlines[rprev:])
	out = append(out, plines[prev:]...)

	summary := "rewrote " + countBlocks(len(pregions))
	if changedOutside {
		summary += "; kept the parent's text outside them, which the rewrite had changed"
	}
	return fromLF(joinLines(out, strings.HasSuffix(ptext, "\n")), crlf), summary, nil
}

func countBlocks(n int) string {
	if n == 1 {
		return "1 evolve block"
	}
	return fmt.Sprintf("%d evolve blocks", n)
}

// equalLines ignores trailing whitespace, which models drop freely and which
// would otherwise make almost every summary claim outside text changed.
func equalLines(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if strings.TrimRight(a[i], " \t\r") != strings.TrimRight(b[i], " \t\r") {
			return false
		}
	}
	return true
}
