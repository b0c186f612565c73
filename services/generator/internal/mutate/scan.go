package mutate

import "strings"

// lineInfo is what a cheap, language-aware scan learns about one line: where its numeric
// literals are (outside strings, comments and identifiers), and whether the line holds one
// whole statement, which the line operators may move, copy or delete without breaking the
// program's syntax.
type lineInfo struct {
	indent string
	lits   []literal
	// code: the line has something besides whitespace and comments.
	code bool
	// clean: the line starts a statement (not inside a string, comment, bracket or a
	// continued line); closed: the line ends one.
	clean, closed bool
	// braces: the line holds { or } of a brace-block language.
	braces bool
	// first is the line's first word ("return", "def") or first character ("@", "#");
	// last is its last code character.
	first string
	last  byte
}

// literal is a decimal numeric literal at line[start:end].
type literal struct {
	start, end int
	float      bool
}

// syntax is as much of a language as the scanner needs.
type syntax struct {
	lineComments []string
	blockComment bool   // /* ... */
	tripleQuotes bool   // Python's """ and '''
	multiQuote   byte   // a quote whose strings may span lines: ` in Go, JavaScript
	braceBlocks  bool   // { } delimit blocks and statements end with ;
	keep         string // first words of lines the line operators leave alone, space-separated
}

func syntaxFor(language string) syntax {
	switch strings.ToLower(strings.TrimSpace(language)) {
	case "c", "cpp", "c++", "cc", "cuda", "cu", "h", "hpp", "go", "rust", "rs", "java", "javascript", "js",
		"typescript", "ts", "kotlin", "kt", "swift", "scala", "csharp", "c#", "cs", "zig", "dart":
		return syntax{
			lineComments: []string{"//"},
			blockComment: true,
			multiQuote:   '`',
			braceBlocks:  true,
			keep:         " return break continue goto case default else # } let var const fn func ",
		}
	case "lua", "sql", "haskell", "hs":
		return syntax{lineComments: []string{"--"}, keep: " return break end else elseif "}
	default: // python and the languages with # comments (R, Julia, shell, Ruby)
		return syntax{
			lineComments: []string{"#"},
			tripleQuotes: true,
			keep:         " return break continue pass raise import from global nonlocal else elif except finally def class @ \" ' ",
		}
	}
}

// movable reports whether the line is a whole, simple statement.
func (in lineInfo) movable(syn syntax) bool {
	if !in.code || !in.clean || !in.closed || in.braces {
		return false
	}
	if syn.braceBlocks {
		if in.last != ';' {
			return false
		}
	} else if in.last == ':' || in.last == ',' || in.last == '\\' {
		return false
	}
	return !strings.Contains(syn.keep, " "+in.first+" ")
}

// scan reads every line of a program in order, carrying strings, comments and brackets that
// span lines, so that a line in the middle of a docstring is known to be one.
func scan(lines []string, syn syntax) []lineInfo {
	infos := make([]lineInfo, len(lines))
	var (
		depth    int    // open ( and [ (and { where braces are brackets)
		multi    string // the delimiter of a string still open
		inBlock  bool   // inside /* */
		contd    bool   // the previous line ended with a backslash
		prevLast byte   // brace languages: last code character of the previous code line
	)
	for n, line := range lines {
		in := &infos[n]
		in.indent = line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		in.clean = depth == 0 && multi == "" && !inBlock
		if syn.braceBlocks {
			in.clean = in.clean && (prevLast == 0 || strings.IndexByte(";{}:", prevLast) >= 0)
		} else {
			in.clean = in.clean && !contd
		}
		i := 0
	chars:
		for i < len(line) {
			c := line[i]
			if multi != "" {
				switch {
				case c == '\\':
					i += 2
				case strings.HasPrefix(line[i:], multi):
					i += len(multi)
					multi = ""
					in.last = c
				default:
					i++
				}
				continue
			}
			if inBlock {
				if strings.HasPrefix(line[i:], "*/") {
					inBlock = false
					i += 2
				} else {
					i++
				}
				continue
			}
			if c == ' ' || c == '\t' || c == '\r' {
				i++
				continue
			}
			for _, lc := range syn.lineComments {
				if strings.HasPrefix(line[i:], lc) {
					break chars
				}
			}
			if syn.blockComment && strings.HasPrefix(line[i:], "/*") {
				inBlock = true
				i += 2
				continue
			}
			if !in.code {
				in.code = true
				in.first = string(c)
				if isIdentStart(c) {
					j := i
					for j < len(line) && isIdent(line[j]) {
						j++
					}
					in.first = line[i:j]
				}
			}
			in.last = c
			prev := byte(' ')
			if i > 0 {
				prev = line[i-1]
			}
			switch {
			case c == '"' || c == '\'':
				if syn.tripleQuotes && (strings.HasPrefix(line[i:], `"""`) || strings.HasPrefix(line[i:], `'''`)) {
					multi = line[i : i+3]
					i += 3
					continue
				}
				j := i + 1
				for j < len(line) && line[j] != c {
					if line[j] == '\\' {
						j++
					}
					j++
				}
				i = j + 1
				continue
			case syn.multiQuote != 0 && c == syn.multiQuote:
				multi = string(c)
				i++
				continue
			case isIdentStart(c):
				// Skip the whole identifier, so that the 1 of x1 is never a literal.
				for i < len(line) && isIdent(line[i]) {
					i++
				}
				continue
			case isDigit(c) || c == '.' && i+1 < len(line) && isDigit(line[i+1]) && !isIdent(prev) && strings.IndexByte(".)]", prev) < 0:
				end, float, ok := number(line, i)
				// The 0 of t.0 (a tuple field) is no literal to tune; the 10 of 1..10 is.
				field := prev == '.' && i >= 2 && (isIdent(line[i-2]) || line[i-2] == ')' || line[i-2] == ']')
				if ok && !field {
					in.lits = append(in.lits, literal{start: i, end: end, float: float})
				}
				in.last = line[end-1]
				i = end
				continue
			}
			switch c {
			case '(', '[':
				depth++
			case ')', ']':
				depth = max(depth-1, 0)
			case '{', '}':
				if syn.braceBlocks {
					in.braces = true
				} else if c == '{' {
					depth++
				} else {
					depth = max(depth-1, 0)
				}
			}
			i++
		}
		in.closed = depth == 0 && multi == "" && !inBlock
		contd = in.last == '\\' && in.code
		if syn.braceBlocks && in.code && multi == "" && !inBlock {
			prevLast = in.last
			if in.first == "#" {
				prevLast = ';' // a preprocessor line ends where it ends
			}
		}
	}
	return infos
}

// number reads the decimal literal starting at line[i]. ok is false for what is not a plain
// decimal literal (hex, octal, suffixed like 1.0f or 2j), which the scanner skips whole.
func number(line string, i int) (end int, float, ok bool) {
	j := i
	digits := func() {
		for j < len(line) && (isDigit(line[j]) || line[j] == '_') {
			j++
		}
	}
	digits()
	if j < len(line) && line[j] == '.' {
		var next byte
		if j+1 < len(line) {
			next = line[j+1]
		}
		switch {
		case isDigit(next):
			j++
			digits()
			float = true
		case next != '.' && !isIdentStart(next):
			j++ // "1." is a float; "1..2" is a range and "1.max()" a call
			float = true
		}
	}
	if j < len(line) && (line[j] == 'e' || line[j] == 'E') {
		k := j + 1
		if k < len(line) && (line[k] == '+' || line[k] == '-') {
			k++
		}
		if k < len(line) && isDigit(line[k]) {
			j = k
			digits()
			float = true
		}
	}
	if j < len(line) && isIdent(line[j]) {
		for j < len(line) && (isIdent(line[j]) || line[j] == '.') {
			j++
		}
		return j, false, false
	}
	text := line[i:j]
	if strings.HasSuffix(text, "_") || strings.Contains(text, "__") || strings.Contains(text, "_.") || strings.Contains(text, "._") {
		return j, false, false
	}
	if !float && len(text) > 1 && text[0] == '0' {
		return j, false, false // octal in C, an error in Python
	}
	return j, float, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isIdentStart(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func isIdent(c byte) bool { return isIdentStart(c) || isDigit(c) }
