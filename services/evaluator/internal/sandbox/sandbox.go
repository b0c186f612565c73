// Package sandbox runs one evaluation command under limits: a wall-clock timeout that kills
// the whole process group, a private work directory removed afterwards, a clean environment
// (the service's own variables, API keys among them, never reach the command), capped
// stdout/stderr, and an optional address-space limit.
//
// Every command runs under a /bin/sh `ulimit` wrapper that execs it, so the limits hold from
// its first instruction and every descendant inherits them: CPU time (the timeout rounded up,
// so a busy loop that ignores SIGTERM is still killed even by itself), file size, no core
// dumps, the optional address space, and, unless the service runs as root (RLIMIT_NPROC
// is per user and root ignores it), the number of processes.
//
// It is deliberately small: cgroups (CPU, memory accounting that survives setsid) and a
// network namespace come later and fit behind the same Run.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Command is one process to run inside a Box.
type Command struct {
	// Args is the argv; Args[0] is looked up on the sandbox's PATH when it has no slash.
	Args []string
	// Env holds variables added to the clean environment (e.g. PYTHONPATH=...).
	Env []string
	// Timeout is the wall-clock limit; zero or less means no limit besides ctx.
	Timeout time.Duration
	// MemoryLimitMB sets RLIMIT_AS for the process and its children when > 0.
	MemoryLimitMB int
	// MaxOutputBytes caps what is kept of each of stdout and stderr; default 64 KiB.
	MaxOutputBytes int
	// MaxFileBytes caps the size of any file the command writes (RLIMIT_FSIZE); zero means
	// DefaultMaxFileBytes, less than zero no cap.
	MaxFileBytes int64
}

// Outcome is what happened to a Command.
type Outcome struct {
	// ExitCode is the process' exit status, or -1 when a signal ended it.
	ExitCode int
	// Signal names the signal that ended the process ("killed"), if any.
	Signal string
	// TimedOut is set when the Timeout was reached and the process group killed.
	TimedOut bool
	// Stdout and Stderr hold each stream, or its head and a short tail around a note saying
	// how much was cut when it was over MaxOutputBytes.
	Stdout, Stderr string
	Duration       time.Duration
	// PGID is the process group the command ran in (already empty when Run returns).
	PGID int
}

// Success reports whether the command exited with status 0 on its own.
func (o *Outcome) Success() bool { return o.ExitCode == 0 && !o.TimedOut && o.Signal == "" }

// DefaultMaxFileBytes is the largest file a command may write when it sets no MaxFileBytes.
const DefaultMaxFileBytes = 64 << 20

// maxProcs is RLIMIT_NPROC for commands run by a user other than root. The limit counts
// every process of the user, the service's own among them, so it is generous: it only stops
// a fork bomb from exhausting the machine before the timeout kills its group.
const maxProcs = 1024

// DefaultMaxOutputBytes is the cap on each captured stream when a Command sets none.
const DefaultMaxOutputBytes = 64 << 10

// pipeGrace is how long captured output may keep flowing after the process group was killed;
// only a process that left the group (setsid) can hold a pipe open that long.
const pipeGrace = time.Second

// Box is a private work directory for one evaluation: the command's cwd, HOME and TMPDIR.
type Box struct {
	Dir string
}

// New creates a fresh work directory under parent.
func New(parent string) (*Box, error) {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("sandbox work dir: %w", err)
	}
	dir, err := os.MkdirTemp(parent, "eval-")
	if err != nil {
		return nil, fmt.Errorf("sandbox work dir: %w", err)
	}
	return &Box{Dir: dir}, nil
}

// Close removes the work directory, whatever permissions the command left on it.
func (b *Box) Close() error {
	_ = filepath.WalkDir(b.Dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(path, 0o755)
		}
		return nil
	})
	if err := os.RemoveAll(b.Dir); err != nil {
		return fmt.Errorf("remove sandbox work dir: %w", err)
	}
	return nil
}

// Env is the whole environment a command sees before Command.Env is added: nothing of the
// service's own environment but PATH.
func (b *Box) Env() []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	return []string{
		"PATH=" + path,
		"HOME=" + b.Dir,
		"TMPDIR=" + b.Dir,
		"LANG=C.UTF-8",
		"PYTHONDONTWRITEBYTECODE=1",
		"PYTHONUNBUFFERED=1",
	}
}

// Run runs c in the box and waits for it and every process of its group to end. It returns
// an error only when the command could not start or ctx ended first; a command that fails,
// crashes or times out is an Outcome.
func (b *Box) Run(ctx context.Context, c Command) (*Outcome, error) {
	if len(c.Args) == 0 {
		return nil, errors.New("sandbox: empty command")
	}
	maxOut := c.MaxOutputBytes
	if maxOut <= 0 {
		maxOut = DefaultMaxOutputBytes
	}
	// The command is looked up before the wrapper execs it, so that one which cannot start
	// is still an error rather than the shell's exit status 127.
	bin := c.Args[0]
	if strings.Contains(bin, "/") && !filepath.IsAbs(bin) {
		bin = filepath.Join(b.Dir, bin)
	}
	if _, err := exec.LookPath(bin); err != nil {
		return nil, fmt.Errorf("sandbox: start %s: %w", c.Args[0], err)
	}
	args := limitArgs(c)
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	// The write ends are handed to the process as files, so that exec starts no copying
	// goroutines of its own and Wait returns when the process exits, even if a grandchild
	// still holds the pipes.
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = b.Dir
	cmd.Env = append(b.Env(), c.Env...)
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("sandbox: start %s: %w", c.Args[0], err)
	}
	pgid := cmd.Process.Pid
	stdout, stderr := newCapture(maxOut), newCapture(maxOut)
	var readers sync.WaitGroup
	readers.Go(func() { _, _ = io.Copy(stdout, outR) })
	readers.Go(func() { _, _ = io.Copy(stderr, errR) })

	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var timeout <-chan time.Time
	if c.Timeout > 0 {
		t := time.NewTimer(c.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var waitErr error
	timedOut, cancelled := false, false
	select {
	case waitErr = <-exited:
	case <-timeout:
		timedOut = true
		killGroup(pgid)
		waitErr = <-exited
	case <-ctx.Done():
		cancelled = true
		killGroup(pgid)
		waitErr = <-exited
	}
	dur := time.Since(start)
	// Whatever the leader did, nothing it started may outlive the evaluation.
	killGroup(pgid)
	drained := make(chan struct{})
	go func() { readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(pipeGrace):
		// A process outside the group still holds a pipe: stop reading (Close unblocks Read).
		outR.Close()
		errR.Close()
		<-drained
	}
	outR.Close()
	errR.Close()
	if cancelled {
		return nil, fmt.Errorf("sandbox: %w", ctx.Err())
	}

	o := &Outcome{ExitCode: cmd.ProcessState.ExitCode(), TimedOut: timedOut, Stdout: stdout.String(), Stderr: stderr.String(), Duration: dur, PGID: pgid}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		o.Signal = ws.Signal().String()
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		return nil, fmt.Errorf("sandbox: wait %s: %w", c.Args[0], waitErr)
	}
	return o, nil
}

func killGroup(pgid int) { _ = syscall.Kill(-pgid, syscall.SIGKILL) }

// capture keeps the head of a stream and a short tail (where a command's JSON line and a
// crash's last words are) and counts what it drops, so that a command printing without end
// costs bounded memory and is never blocked on a full pipe.
type capture struct {
	headMax, tailMax int
	head, tail       []byte
	total            int64
}

func newCapture(max int) *capture {
	tailMax := max / 8
	return &capture{headMax: max - tailMax, tailMax: tailMax}
}

func (c *capture) Write(p []byte) (int, error) {
	n := len(p)
	c.total += int64(n)
	if room := c.headMax - len(c.head); room > 0 {
		k := min(room, len(p))
		c.head = append(c.head, p[:k]...)
		p = p[k:]
	}
	if len(p) == 0 || c.tailMax == 0 {
		return n, nil
	}
	if len(p) >= c.tailMax {
		c.tail = append(c.tail[:0], p[len(p)-c.tailMax:]...)
		return n, nil
	}
	if over := len(c.tail) + len(p) - c.tailMax; over > 0 {
		c.tail = c.tail[:copy(c.tail, c.tail[over:])]
	}
	c.tail = append(c.tail, p...)
	return n, nil
}

func (c *capture) String() string {
	cut := c.total - int64(len(c.head)+len(c.tail))
	if cut <= 0 {
		return string(c.head) + string(c.tail)
	}
	return fmt.Sprintf("%s\n[output truncated: %d bytes in all, %d cut here]\n%s", c.head, c.total, cut, c.tail)
}

// limits is what the shell at /bin/sh can do, probed once.
type limits struct {
	// sh is false when /bin/sh cannot set limits; commands then run without the wrapper.
	sh bool
	// fileBlock is the unit of `ulimit -f`: 512 bytes for dash, 1024 for bash.
	fileBlock int64
	// nprocFlag is the `ulimit` flag for RLIMIT_NPROC (-u for bash, -p for dash), or "" when
	// it is unavailable or not applied (root).
	nprocFlag string
}

var (
	probeOnce sync.Once
	probed    limits
)

// shellLimits probes /bin/sh once and logs, once, which protections are unavailable.
func shellLimits() limits {
	probeOnce.Do(func() {
		probed = probeShell()
		var missing []string
		if !probed.sh {
			missing = append(missing, "all ulimit limits (/bin/sh cannot set them)")
		}
		if probed.nprocFlag == "" {
			if os.Geteuid() == 0 {
				missing = append(missing, "process count limit (running as root; only the process-group kill bounds forks)")
			} else {
				missing = append(missing, "process count limit (the shell has no ulimit flag for it)")
			}
		}
		missing = append(missing,
			"network isolation (no network namespace)",
			"file writes outside the work dir (no mount namespace)",
			"cgroups (memory and CPU accounting of processes that leave the group)")
		slog.Warn("sandbox protections unavailable", "missing", strings.Join(missing, "; "))
	})
	return probed
}

func probeShell() limits {
	const script = `ulimit -f 1024 && ulimit -c 0 && ulimit -t 1000000000 || exit 1
grep '^Max file size' /proc/self/limits
if ulimit -u >/dev/null 2>&1; then echo nproc=-u; elif ulimit -p >/dev/null 2>&1; then echo nproc=-p; fi`
	out, err := exec.Command("/bin/sh", "-c", script).Output()
	if err != nil {
		return limits{}
	}
	l := limits{sh: true, fileBlock: 512} // the smaller unit errs on the safe side
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 4 && f[0] == "Max" && f[2] == "size":
			if n, err := strconv.ParseInt(f[3], 10, 64); err == nil && n > 0 && n%1024 == 0 {
				l.fileBlock = n / 1024
			}
		case strings.HasPrefix(line, "nproc="):
			if os.Geteuid() != 0 {
				l.nprocFlag = strings.TrimSpace(strings.TrimPrefix(line, "nproc="))
			}
		}
	}
	return l
}

// limitArgs wraps c.Args in a /bin/sh that sets the limits and execs the command. The
// optional limits are applied with `||:` once probed to work, so that a hard limit already
// lower than ours leaves the lower one; the address space limit, asked for explicitly,
// fails the command when it cannot be set.
func limitArgs(c Command) []string {
	l := shellLimits()
	if !l.sh {
		if c.MemoryLimitMB > 0 {
			// Keep the old behaviour: the memory limit is applied or the command fails.
			return append([]string{"/bin/sh", "-c", `ulimit -v "$0" && exec "$@"`, strconv.Itoa(c.MemoryLimitMB * 1024)}, c.Args...)
		}
		return c.Args
	}
	var script []string
	script = append(script, "ulimit -c 0 2>/dev/null")
	fileBytes := c.MaxFileBytes
	if fileBytes == 0 {
		fileBytes = DefaultMaxFileBytes
	}
	if fileBytes > 0 {
		script = append(script, fmt.Sprintf("ulimit -f %d 2>/dev/null", max(fileBytes/l.fileBlock, 1)))
	}
	if c.Timeout > 0 {
		script = append(script, fmt.Sprintf("ulimit -t %d 2>/dev/null", int64(math.Ceil(c.Timeout.Seconds()))))
	}
	if l.nprocFlag != "" {
		script = append(script, fmt.Sprintf("ulimit %s %d 2>/dev/null", l.nprocFlag, maxProcs))
	}
	for i := range script {
		script[i] += " || :"
	}
	if c.MemoryLimitMB > 0 {
		// RLIMIT_AS: the limit is in force before the command's first instruction and every
		// child inherits it, with no window in which it is not.
		script = append(script, fmt.Sprintf("ulimit -v %d || exit 126", c.MemoryLimitMB*1024))
	}
	// The shell exports PWD, which is not part of the clean environment.
	script = append(script, "unset PWD OLDPWD", `exec "$@"`)
	return append([]string{"/bin/sh", "-c", strings.Join(script, "\n"), "sh"}, c.Args...)
}
