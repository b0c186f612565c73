package program

import (
	"errors"
	"testing"
)

func TestCheckText(t *testing.T) {
	tests := []struct {
		name string
		text string
		want error
		msg  string
	}{
		{"program", "def f(x):\n    return x  # café\n", nil, ""},
		{"empty", "", ErrEmpty, "the program is empty"},
		{"blank", " \n\t\r\n", ErrEmpty, "the program is empty"},
		{"latin-1", "x = 1\n# caf\xe9\n", ErrNotUTF8, "the program is not valid UTF-8: byte 0xe9 at line 2, column 6; save it as UTF-8"},
		{"utf-16", "\xff\xfex\x00", ErrNotUTF8, "the program is not valid UTF-8: byte 0xff at line 1, column 1; save it as UTF-8"},
		{"cut rune", "π\xcf", ErrNotUTF8, "the program is not valid UTF-8: byte 0xcf at line 1, column 2; save it as UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckText([]byte(tt.text))
			if !errors.Is(err, tt.want) || tt.want != nil && err.Error() != tt.msg {
				t.Errorf("CheckText = %v, want %v saying %q", err, tt.want, tt.msg)
			}
		})
	}
}
