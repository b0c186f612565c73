package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// replica is one service process of the fleet. Killing it kills its whole process group, as a
// container runtime would; a model server it launched dies with it through its parent-death
// signal.
type replica struct {
	service string
	name    string
	bin     string
	args    []string
	env     []string
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
	pids    []int // every pid this replica has had, oldest first
}

// start runs the replica's process; its output is appended to its log file.
func (r *replica) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return fmt.Errorf("%s: already running", r.name)
	}
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	cmd := exec.Command(r.bin, r.args...)
	cmd.Env = append(os.Environ(), r.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", r.name, err)
	}
	fmt.Fprintf(logf, "\n=== chaos: started pid %d at %s\n", cmd.Process.Pid, time.Now().Format(time.RFC3339Nano))
	done := make(chan struct{})
	r.cmd, r.done = cmd, done
	r.pids = append(r.pids, cmd.Process.Pid)
	go func() {
		err := cmd.Wait()
		logf.Close()
		r.mu.Lock()
		r.exitErr = err
		r.mu.Unlock()
		close(done)
	}()
	return nil
}

// alive reports whether the replica's process runs now, and its pid.
func (r *replica) alive() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0, false
	}
	select {
	case <-r.done:
		return 0, false
	default:
		return r.cmd.Process.Pid, true
	}
}

// kill sends SIGKILL to the replica's process group and waits for it to be reaped.
func (r *replica) kill() bool {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return false
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	r.mu.Lock()
	r.cmd = nil
	r.mu.Unlock()
	return true
}

// stop asks the replica to shut down with SIGTERM and reports whether it exited cleanly (status
// 0) within limit; past the limit it is killed.
func (r *replica) stop(limit time.Duration) error {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(limit):
		r.kill()
		return fmt.Errorf("%s: still running %s after SIGTERM; killed", r.name, limit)
	}
	// A clean stop leaves nothing of the group behind; reap what did.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	r.mu.Lock()
	err := r.exitErr
	r.cmd = nil
	r.mu.Unlock()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("%s: exit after SIGTERM: %s (log %s)", r.name, ee.ProcessState, filepath.Base(r.logPath))
		}
		return fmt.Errorf("%s: %w", r.name, err)
	}
	return nil
}

// crashedOnItsOwn reports whether the process exited without being killed by the harness,
// and how.
func (r *replica) crashedOnItsOwn() (error, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return nil, false
	}
	select {
	case <-r.done:
		return r.exitErr, true
	default:
		return nil, false
	}
}

// forget clears a replica whose process exited on its own, so it can be started again.
func (r *replica) forget() {
	r.mu.Lock()
	r.cmd = nil
	r.mu.Unlock()
}
