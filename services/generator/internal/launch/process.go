package launch

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// process is a model server started in its own process group, so that the whole group (a
// server with worker processes, such as vLLM with tensor parallelism) is stopped together.
type process struct {
	cmd     *exec.Cmd
	pgid    int
	started time.Time
	stderr  *outputLog
	exited  chan struct{} // closed when the server's main process has exited and been reaped
	err     error         // Wait's error, set before exited is closed
}

// startProcess runs argv with env in a new process group; its output goes to log, one
// record per line.
func startProcess(argv, env []string, log *slog.Logger) (*process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.SysProcAttr = sysProcAttr()
	p := &process{cmd: cmd, stderr: newOutputLog(log, "stderr"), exited: make(chan struct{})}
	cmd.Stdout = newOutputLog(log, "stdout")
	cmd.Stderr = p.stderr
	// A grandchild that keeps the output pipes open must not keep Wait from returning.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p.pgid, p.started = cmd.Process.Pid, time.Now()
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// kill stops the whole group at once (fencing: its GPUs may already be someone else's) and
// waits for it to be gone.
func (p *process) kill() {
	p.signal(syscall.SIGKILL)
	<-p.exited
	p.waitGone(time.Now().Add(killWait))
}

// stop asks the group to exit with SIGTERM and kills what is left of it after grace. It
// returns when the group is gone, so that a lease released after it frees GPU memory that
// is truly free.
func (p *process) stop(grace time.Duration) {
	p.signal(syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	select {
	case <-p.exited:
	case <-time.After(grace):
	}
	// Workers may outlive the main process for a moment while they shut down.
	p.waitGone(deadline)
	p.kill()
}

// killWait bounds the wait for killed workers to be reaped (by init, as orphans).
const killWait = 5 * time.Second

// waitGone waits until no process of the group is left, or until deadline.
func (p *process) waitGone(deadline time.Time) {
	for p.groupAlive() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// signal signals every process of the group; a group that is gone is not an error.
func (p *process) signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.pgid, sig)
}

// groupAlive reports whether any process of the group is left.
func (p *process) groupAlive() bool {
	return !errors.Is(syscall.Kill(-p.pgid, 0), syscall.ESRCH)
}

// exitReason says how the server ended, with its last line on stderr (where servers print
// the exception or error that stopped them).
func (p *process) exitReason() string {
	status := "exited"
	if p.err != nil {
		status = p.err.Error()
	}
	if line := p.stderr.last(); line != "" {
		return fmt.Sprintf("%s (%s)", line, status)
	}
	return fmt.Sprintf("%s with no output on stderr", status)
}

// Output caps: a server that prints without pause must not flood the generator's log.
const (
	maxLineBytes  = 1024 // longer lines are cut
	outputBurst   = 200  // lines logged at once before the rate applies
	outputPerSec  = 20   // lines logged per second after a burst
	maxPendingOut = 64 << 10
)

// outputLog writes a server's output to the generator's log line by line, cut to
// maxLineBytes and rate-limited, and keeps the last line for error messages.
type outputLog struct {
	log    *slog.Logger
	stream string

	mu         sync.Mutex
	pending    []byte
	lastLine   string
	tokens     float64
	refilled   time.Time
	suppressed int
}

func newOutputLog(log *slog.Logger, stream string) *outputLog {
	return &outputLog{log: log, stream: stream, tokens: outputBurst, refilled: time.Now()}
}

func (o *outputLog) Write(b []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pending = append(o.pending, b...)
	for {
		i := bytes.IndexByte(o.pending, '\n')
		if i < 0 {
			break
		}
		o.line(o.pending[:i])
		o.pending = o.pending[i+1:]
	}
	if len(o.pending) > maxPendingOut {
		o.line(o.pending)
		o.pending = o.pending[:0]
	}
	return len(b), nil
}

func (o *outputLog) line(b []byte) {
	b = bytes.TrimRight(b, "\r")
	if len(bytes.TrimSpace(b)) == 0 {
		return
	}
	if len(b) > maxLineBytes {
		b = append(b[:maxLineBytes:maxLineBytes], "…"...)
	}
	s := string(bytes.ToValidUTF8(b, []byte("?")))
	o.lastLine = s
	now := time.Now()
	o.tokens = min(outputBurst, o.tokens+now.Sub(o.refilled).Seconds()*outputPerSec)
	o.refilled = now
	if o.tokens < 1 {
		o.suppressed++
		return
	}
	o.tokens--
	if o.suppressed > 0 {
		o.log.Warn("server output suppressed", "stream", o.stream, "lines", o.suppressed)
		o.suppressed = 0
	}
	o.log.Info("server output", "stream", o.stream, "line", s)
}

// last is the last non-empty line written.
func (o *outputLog) last() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(bytes.TrimSpace(o.pending)) > 0 {
		return string(bytes.ToValidUTF8(o.pending[:min(len(o.pending), maxLineBytes)], []byte("?")))
	}
	return o.lastLine
}
