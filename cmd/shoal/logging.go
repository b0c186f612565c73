package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
)

// openLog returns a logger that writes JSON at level to a file and warnings and errors as
// text to the terminal, so `shoal up` keeps its progress line readable and its log complete.
func openLog(path, level string, term io.Writer) (*slog.Logger, func(), error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open log: %w", err)
	}
	h := slog.NewMultiHandler(
		slog.NewJSONHandler(f, &slog.HandlerOptions{Level: lv}),
		slog.NewTextHandler(term, &slog.HandlerOptions{Level: slog.LevelWarn}),
	)
	return slog.New(h), func() { _ = f.Close() }, nil
}
