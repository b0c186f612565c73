package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
)

// openLog returns a logger that writes JSON at level to a file and warnings and errors as
// text to the terminal, so `shoal up` keeps its progress line readable and its log complete;
// and one that writes to the file alone, for what up reports on the terminal in its own words.
func openLog(path, level string, term io.Writer) (log, file *slog.Logger, closeLog func(), err error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open log: %w", err)
	}
	toFile := slog.NewJSONHandler(f, &slog.HandlerOptions{Level: lv})
	toTerm := shownElsewhere{slog.NewTextHandler(term, &slog.HandlerOptions{Level: slog.LevelWarn})}
	return slog.New(slog.NewMultiHandler(toFile, toTerm)), slog.New(toFile), func() { _ = f.Close() }, nil
}

// saidByUp reports whether up already says on the terminal, in its own words, what a
// service's log record with this message says: the run config's warnings, which up prints
// when it reads the config (the archive, which logs them for deployments, would say them a
// second time).
func saidByUp(msg string) bool { return msg == "run config" }

// shownElsewhere is the terminal's handler without the records saidByUp; the log file keeps
// them.
type shownElsewhere struct{ slog.Handler }

func (h shownElsewhere) Handle(ctx context.Context, r slog.Record) error {
	if saidByUp(r.Message) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h shownElsewhere) WithAttrs(attrs []slog.Attr) slog.Handler {
	return shownElsewhere{h.Handler.WithAttrs(attrs)}
}

func (h shownElsewhere) WithGroup(name string) slog.Handler {
	return shownElsewhere{h.Handler.WithGroup(name)}
}

// syncWriter serializes writes to the terminal, which up's progress view, its event printer
// (a NATS callback) and every service's log handler share: a line is never cut by another.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
