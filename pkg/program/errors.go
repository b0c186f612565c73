package program

import "errors"

// Each sentinel names a reason a model's reply is rejected, so callers can
// count rejections by kind and tell the model which mistake to avoid next time.
var (
	// ErrMarkers: EVOLVE-BLOCK markers are unbalanced or nested, so what may
	// change is unknown and nothing is edited.
	ErrMarkers = errors.New("mismatched evolve markers")
	// ErrNoBlocks: a diff reply holds no SEARCH/REPLACE block at all.
	ErrNoBlocks = errors.New("no SEARCH/REPLACE blocks")
	// ErrMalformedDiff: a block is cut short, lacks its divider, or searches
	// for nothing.
	ErrMalformedDiff = errors.New("malformed SEARCH/REPLACE block")
	// ErrNoMatch: a block's search text is not in the program, even ignoring
	// indentation and trailing whitespace.
	ErrNoMatch = errors.New("search text not found in the program")
	// ErrOutsideBlock: an edit reaches text outside the evolve blocks.
	ErrOutsideBlock = errors.New("edit outside the evolve blocks")
	// ErrEmptyRewrite: a full-rewrite reply holds no code.
	ErrEmptyRewrite = errors.New("empty rewrite")
)

// Sentinels of CheckText: a program that is no program. A seed is refused with them at
// once, rather than evaluated (an empty file) or silently rewritten (bad bytes become
// U+FFFD when decoded, and Python refuses the original file).
var (
	// ErrEmpty: the program holds nothing but white space.
	ErrEmpty = errors.New("the program is empty")
	// ErrNotUTF8: the program is not UTF-8 text.
	ErrNotUTF8 = errors.New("the program is not valid UTF-8")
)
