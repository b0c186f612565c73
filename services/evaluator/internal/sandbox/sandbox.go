// Package sandbox runs one evaluation under confinement. A Launcher starts zygotes: Python
// processes (zygote.py) in network and pid namespaces of their own, moved into a minimal
// read-only root (the interpreter, system libraries, the bundle and harness; no host homes,
// state or logs), that fork each job's process as pid 1 of a fresh pid namespace, in a
// private mount namespace (a size-limited tmpfs for /tmp and the work dir, its own /proc),
// with rlimits (CPU time, file size, address space, processes, no core), a uid of its own
// or no capabilities, no_new_privs and a clean environment. The zygote supervises its jobs
// and enforces the wall-clock limit; when a job's pid 1 ends the kernel kills every process
// of its namespace, setsid or not. stdout, stderr and the evaluator's report travel over
// pipes this package reads with a cap.
//
// A zygote prepared with an evaluator has imported it once and keeps standby jobs (forked,
// namespaces made, scratch mounted), so each job costs handing it over instead of a
// fresh interpreter: that is the warm path. A zygote used for one job is the
// cold path; both run the same confinement code.
//
// Protections the kernel or the privileges at hand do not allow are logged once each, with
// the ones that remain (see docs/sandbox.md).
package sandbox

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Command is one job to run inside a Box.
type Command struct {
	// Args is the argv of a command to exec; Args[0] is looked up on the sandbox's PATH when
	// it has no slash. Empty for an evaluation on a zygote prepared with an evaluator.
	Args []string
	// Program, Cascade and Thresholds describe an evaluation: evaluate(Program), or the
	// cascade evaluate_stage1/2/3 with the thresholds.
	Program    string
	Cascade    bool
	Thresholds []float64
	// Env holds variables added to the clean environment (e.g. PYTHONPATH=...).
	Env []string
	// Timeout is the wall-clock limit; zero or less means no limit besides ctx.
	Timeout time.Duration
	// MemoryLimitMB sets RLIMIT_AS for the process and its children, and memory.max of its
	// cgroup where there is one; zero means DefaultMemoryLimitMB, less than zero no limit.
	MemoryLimitMB int
	// MaxOutputBytes caps what is kept of each of stdout and stderr; default 64 KiB.
	MaxOutputBytes int
	// MaxFileBytes caps the size of any file the command writes (RLIMIT_FSIZE); zero means
	// DefaultMaxFileBytes, less than zero no cap.
	MaxFileBytes int64
	// OutputLimitBytes is how much the job may write to stdout and stderr together before it
	// is killed (Outcome.OutputLimited); zero means DefaultOutputLimitBytes, less than zero
	// no limit.
	OutputLimitBytes int64
}

// Outcome is what happened to a Command.
type Outcome struct {
	// ExitCode is the process' exit status, or -1 when a signal ended it.
	ExitCode int
	// Signal names the signal that ended the process ("killed"), if any.
	Signal string
	// TimedOut is set when the Timeout was reached and the job killed.
	TimedOut bool
	// Stdout and Stderr hold each stream, or its head and a short tail around a note saying
	// how much was cut when it was over MaxOutputBytes.
	Stdout, Stderr string
	// Report is what an evaluation wrote to its report pipe; ReportTooLarge is set when it
	// was over MaxReportBytes (Report is then empty).
	Report         []byte
	ReportTooLarge bool
	// Duration is the job's wall-clock time from fork to exit; CPU its CPU time.
	Duration, CPU time.Duration
	// PID is the job's process as the host sees it; UID the uid it ran as (0: the
	// service's own, when it is not root).
	PID, UID int
	// Left is how many processes an evaluation left running when it returned, counted by
	// the zygote before they were killed (evaluations only: a command's are not counted).
	Left int
	// OutputLimited is set when the job wrote more than OutputLimitBytes and was killed.
	OutputLimited bool
}

// Success reports whether the command exited with status 0 on its own.
func (o *Outcome) Success() bool { return o.ExitCode == 0 && !o.TimedOut && o.Signal == "" }

// DefaultMaxFileBytes is the largest file a command may write when it sets no MaxFileBytes.
const DefaultMaxFileBytes = 64 << 20

// DefaultMemoryLimitMB bounds a job's memory when a Command sets no MemoryLimitMB: enough
// for an interpreter with numpy and scipy, far from what a shared host can lose.
const DefaultMemoryLimitMB = 2048

// DefaultScratchMB bounds what a job may write to its work dir and /tmp together when a
// Prepare sets no ScratchMB.
const DefaultScratchMB = 256

// maxInputs is how many files a Box may pass to its job (zygote.py's MAX_INPUTS).
const maxInputs = 4

// DefaultOutputLimitBytes is how much a job may write to stdout and stderr together when a
// Command sets no OutputLimitBytes.
const DefaultOutputLimitBytes = 64 << 20

// DefaultMaxOutputBytes is the cap on each captured stream when a Command sets none.
const DefaultMaxOutputBytes = 64 << 10

// MaxReportBytes bounds an evaluation's report; artifacts are capped later anyway.
const MaxReportBytes = 16 << 20

// maxProcs is RLIMIT_NPROC for a job running as a uid of its own: it stops a fork bomb
// long before the timeout kills its namespace.
const maxProcs = 256

// pipeGrace is how long captured output may keep flowing after the job ended; only a
// process outside the job's pid namespace (where there is none) can hold a pipe that long.
const pipeGrace = time.Second

// Box is a private work directory for one evaluation: the command's cwd, HOME and TMPDIR.
// Where the job has a mount namespace, it sees a fresh tmpfs at Dir's path, holding copies
// of the files written with WriteFile; what it writes there never reaches the host's disk.
type Box struct {
	Dir    string
	inputs []string
}

// WriteFile writes a file the job finds in its work dir (the candidate's program).
func (b *Box) WriteFile(name string, data []byte) error {
	if filepath.Base(name) != name || name == "." || name == ".." {
		return fmt.Errorf("sandbox: input %q must be a plain file name", name)
	}
	if len(b.inputs) == maxInputs {
		return fmt.Errorf("sandbox: more than %d inputs", maxInputs)
	}
	if err := os.WriteFile(filepath.Join(b.Dir, name), data, 0o644); err != nil {
		return fmt.Errorf("sandbox: write %s: %w", name, err)
	}
	b.inputs = append(b.inputs, name)
	return nil
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
