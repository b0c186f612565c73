package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// records collects log records as text, one per line.
type records struct{ bytes.Buffer }

func (r *records) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(&r.Buffer, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (r *records) count(msg string) int { return strings.Count(r.String(), `msg="`+msg+`"`) }

func TestOutputLogCapsAndKeepsLastLine(t *testing.T) {
	var rec records
	o := newOutputLog(rec.logger(), "stderr")
	var in strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&in, "line %d\n", i)
	}
	// Written in odd pieces, as a pipe delivers them.
	data := in.String()
	for len(data) > 0 {
		n := min(len(data), 37)
		if _, err := o.Write([]byte(data[:n])); err != nil {
			t.Fatal(err)
		}
		data = data[n:]
	}
	if got := rec.count("server output"); got < outputBurst || got > outputBurst+10 {
		t.Errorf("%d lines logged of 1000 written at once, want about the burst of %d", got, outputBurst)
	}
	if got := o.last(); got != "line 999" {
		t.Errorf("last = %q, want line 999", got)
	}
	o.mu.Lock()
	o.refilled = time.Now().Add(-time.Second) // a second later, the rate allows more
	o.mu.Unlock()
	_, _ = o.Write([]byte(strings.Repeat("x", 3*maxLineBytes) + "\n"))
	if rec.count("server output suppressed") != 1 || !strings.Contains(rec.String(), "lines=") {
		t.Errorf("no record of the suppressed lines:\n%s", rec.String()[max(0, rec.Len()-500):])
	}
	if got := o.last(); len(got) > maxLineBytes+len("…") || !strings.HasPrefix(got, "xxx") {
		t.Errorf("a long line is kept as %d bytes, want it cut to %d", len(got), maxLineBytes)
	}
	_, _ = o.Write([]byte("no newline yet"))
	if got := o.last(); got != "no newline yet" {
		t.Errorf("last = %q, want the unfinished line", got)
	}
}

// stop ends the whole process group: a server that ignores SIGTERM is killed after the grace
// period, and so is a worker it started in the background.
func TestProcessStopEndsTheGroup(t *testing.T) {
	dir := t.TempDir()
	worker := filepath.Join(dir, "worker")
	script := fmt.Sprintf(`trap "" TERM; sleep 60 & echo $! > %s; echo started >&2; wait`, worker)
	var rec records
	p, err := startProcess([]string{"sh", "-c", script}, os.Environ(), rec.logger())
	if err != nil {
		t.Fatal(err)
	}
	var workerPID int
	deadline := time.Now().Add(10 * time.Second)
	for workerPID == 0 {
		data, _ := os.ReadFile(worker)
		workerPID, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		if time.Now().After(deadline) {
			p.kill()
			t.Fatal("the worker never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if pgid, err := syscall.Getpgid(workerPID); err != nil || pgid != p.pgid {
		t.Errorf("worker is in group %d (%v), want the server's %d", pgid, err, p.pgid)
	}
	start := time.Now()
	p.stop(300 * time.Millisecond)
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("stop took %s, want the grace period of 300ms, then a kill", d)
	}
	if !errors.Is(syscall.Kill(-p.pgid, 0), syscall.ESRCH) {
		t.Errorf("process group %d still has members after stop", p.pgid)
		_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	}
	if !strings.Contains(p.exitReason(), "started (signal: killed)") {
		t.Errorf("exit reason = %q, want the last line and the signal", p.exitReason())
	}
}

func TestWaitHealthyReportsTheExit(t *testing.T) {
	var rec records
	p, err := startProcess([]string{"sh", "-c", "echo 'CUDA out of memory' >&2; exit 1"}, os.Environ(), rec.logger())
	if err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	err = waitHealthy(context.Background(), "http://127.0.0.1:"+strconv.Itoa(port)+"/health", time.Minute, p, nil)
	want := "launch: server exited during startup: CUDA out of memory (exit status 1)"
	if err == nil || err.Error() != want {
		t.Errorf("waitHealthy = %v, want %q", err, want)
	}
}

func TestSubstitute(t *testing.T) {
	got := substitute([]string{"serve", "{model}", "--port={port}", "-tp", "{n_gpus}", "--devices", "{gpus}", "{variant}", `{"a": 1}`},
		map[string]string{"port": "8001", "gpus": "GPU-a,GPU-b", "n_gpus": "2", "model": "/m/q8.gguf", "variant": "q8"})
	want := []string{"serve", "/m/q8.gguf", "--port=8001", "-tp", "2", "--devices", "GPU-a,GPU-b", "q8", `{"a": 1}`}
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("substitute = %q, want %q", got, want)
	}
}
