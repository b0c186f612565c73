package program

import (
	"bytes"
	"fmt"
	"unicode/utf8"
)

// CheckText reports why text cannot be a program: ErrNotUTF8, with the line and column of
// the first byte that is not UTF-8, or ErrEmpty.
func CheckText(text []byte) error {
	if err := CheckUTF8(text); err != nil {
		return err
	}
	if len(bytes.TrimSpace(text)) == 0 {
		return ErrEmpty
	}
	return nil
}

// CheckUTF8 reports ErrNotUTF8, with where, when text is not UTF-8, as a person would look
// for the byte in an editor.
func CheckUTF8(text []byte) error {
	if utf8.Valid(text) {
		return nil
	}
	line, col := 1, 1
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRune(text[i:])
		if r == utf8.RuneError && n <= 1 {
			return fmt.Errorf("%w: byte 0x%02x at line %d, column %d; save it as UTF-8", ErrNotUTF8, text[i], line, col)
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		i += n
	}
	return ErrNotUTF8
}
