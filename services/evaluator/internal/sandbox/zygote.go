package sandbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

//go:embed zygote.py
var zygotePy []byte

// Launcher starts zygotes with one interpreter and remembers which protections this host
// allows, so that each missing one is logged once.
type Launcher struct {
	python string
	script string
	log    *slog.Logger
	// netMode is the namespace setup that worked last: 0 not tried, 1 a new network namespace,
	// 2 a user and network namespace (not root), 3 none.
	netMode atomic.Int32
	logged  sync.Map // missing protection → struct{}
	cgroup  string   // a delegated cgroup v2 dir for per-job cgroups, or ""
	// hostRoot: the service runs as root, so jobs get a uid of their own; otherwise they
	// keep the service's (without capabilities, in a user namespace where there is one).
	hostRoot bool
}

// NewLauncher installs zygote.py into cacheDir (once per version) and returns a launcher
// running it with python.
func NewLauncher(python, cacheDir string, log *slog.Logger) (*Launcher, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sum := sha256.Sum256(zygotePy)
	dir := filepath.Join(cacheDir, "sandbox-"+hex.EncodeToString(sum[:])[:16])
	script := filepath.Join(dir, "zygote.py")
	if _, err := os.Stat(script); err != nil {
		if err := os.MkdirAll(cacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("install sandbox: %w", err)
		}
		tmp, err := os.MkdirTemp(cacheDir, ".sandbox-")
		if err != nil {
			return nil, fmt.Errorf("install sandbox: %w", err)
		}
		if err := os.WriteFile(filepath.Join(tmp, "zygote.py"), zygotePy, 0o444); err != nil {
			os.RemoveAll(tmp)
			return nil, fmt.Errorf("install sandbox: %w", err)
		}
		_ = os.Chmod(tmp, 0o755)
		if err := os.Rename(tmp, dir); err != nil {
			os.RemoveAll(tmp)
			if _, serr := os.Stat(script); serr != nil {
				return nil, fmt.Errorf("install sandbox: %w", err)
			}
		}
	}
	l := &Launcher{python: python, script: script, log: log, hostRoot: os.Geteuid() == 0}
	var why string
	l.cgroup, why = findCgroup()
	if why != "" {
		l.missing("cgroups v2 (" + why + "); rlimits bound each job's processes instead")
	}
	return l, nil
}

// Dir is where zygote.py lives; jobs see it read-only.
func (l *Launcher) Dir() string { return filepath.Dir(l.script) }

// missing logs a protection that is unavailable, once per launcher.
func (l *Launcher) missing(what string) {
	if _, seen := l.logged.LoadOrStore(what, struct{}{}); seen {
		return
	}
	l.log.Warn("sandbox protection unavailable", "missing", what,
		"remaining", "wall-clock and CPU-time limits, file size, address space and core rlimits, clean environment, capped output, work dir removed afterwards")
}

// Prepare says what a zygote prepares before its first job.
type Prepare struct {
	// HarnessDir holds harness.py (and the openevolve package).
	HarnessDir string
	// Evaluator is the evaluator's Python file, imported once; empty for a zygote that only
	// execs commands.
	Evaluator string
	// Env holds variables added to the zygote's clean environment.
	Env []string
	// ReadOnly lists directories every job reads (the bundle, the harness): bound, read-only,
	// into the minimal root the zygote builds; nothing else of the host's but the
	// interpreter and system directories is there.
	ReadOnly []string
	// Roots are the directories under which the jobs' own work dirs (Box) are made: a job
	// sees a fresh tmpfs there (under /tmp: /tmp's).
	Roots []string
	// ScratchMB bounds the bytes a job may write to its work dir and /tmp (a tmpfs each job
	// gets); zero means DefaultScratchMB.
	ScratchMB int
	// Spares is how many jobs' processes wait on standby, namespaces and scratch prepared,
	// so that a job pays only for handing itself over; 0 prepares one when a job comes
	// (a zygote for one job: the cold path).
	Spares int
}

// ImportError is returned by Start when the evaluator failed to import.
type ImportError struct {
	Msg, Traceback string
}

func (e *ImportError) Error() string { return "evaluator import failed: " + e.Msg }

// ErrZygoteDied: the zygote ended (or was killed as hung) before the job's reply came.
var ErrZygoteDied = errors.New("sandbox zygote died")

// Zygote is a started zygote. Its methods may be called from many goroutines: jobs run
// concurrently, each in its own forked process, which the zygote supervises.
type Zygote struct {
	l      *Launcher
	cmd    *exec.Cmd
	ctl    *net.UnixConn
	pid    int
	output *lockedCapture
	waited chan struct{}

	mu      sync.Mutex
	pending map[uint64]chan reply
	dead    bool
	jobs    int
	nextID  uint64
	readerD chan struct{}
}

// reply is what the zygote sends, on start and for each job.
type reply struct {
	ID        uint64   `json:"id"`
	Ready     bool     `json:"ready"`
	Error     string   `json:"error"`
	Traceback string   `json:"traceback"`
	Missing   []string `json:"missing"`
	Exit      int      `json:"exit"`
	Signal    int      `json:"signal"`
	TimedOut  bool     `json:"timed_out"`
	Wall      float64  `json:"wall"`
	CPU       float64  `json:"cpu"`
	PID       int      `json:"pid"`
	UID       *int     `json:"uid"`
	Left      int      `json:"left"`
	OutputLim bool     `json:"output_limit"`
	died      bool
}

// readyTimeout bounds the evaluator's import in a new zygote.
const readyTimeout = 2 * time.Minute

// Start starts a zygote; with p it imports p.Evaluator first. An evaluator that fails to
// import is an *ImportError.
func (l *Launcher) Start(ctx context.Context, p *Prepare) (*Zygote, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sandbox: socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "zygote-control"), os.NewFile(uintptr(fds[1]), "zygote-control")
	defer theirs.Close()
	fc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, fmt.Errorf("sandbox: control socket: %w", err)
	}
	ctl := fc.(*net.UnixConn)
	z := &Zygote{l: l, ctl: ctl, output: &lockedCapture{c: newCapture(DefaultMaxOutputBytes)}, pending: map[uint64]chan reply{}, waited: make(chan struct{}), readerD: make(chan struct{})}
	args := []string{l.python, l.script, "--control", "3", "--keep", l.Dir()}
	if l.hostRoot {
		args = append(args, "--host-root")
	}
	if l.cgroup != "" {
		args = append(args, "--cgroup", l.cgroup)
	}
	env := zygoteEnv()
	scratch := DefaultScratchMB
	if p != nil {
		if p.ScratchMB > 0 {
			scratch = p.ScratchMB
		}
		if p.Evaluator != "" {
			args = append(args, "--harness", p.HarnessDir, "--evaluator", p.Evaluator)
		}
		for _, d := range p.ReadOnly {
			args = append(args, "--keep", d)
		}
		for _, d := range p.Roots {
			args = append(args, "--root", d)
		}
		args = append(args, "--spares", strconv.Itoa(p.Spares))
		env = append(env, p.Env...)
	}
	args = append(args, "--scratch-mb", strconv.Itoa(scratch))
	if err := z.start(args, env, theirs); err != nil {
		ctl.Close()
		return nil, err
	}
	go func() { _ = z.cmd.Wait(); close(z.waited) }()
	// The first packet says whether the evaluator imported.
	rctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	stop := context.AfterFunc(rctx, func() { _ = ctl.SetReadDeadline(time.Now()) })
	r, err := z.read(make([]byte, maxReplyBytes))
	stop()
	if err != nil {
		z.kill()
		close(z.readerD)
		if out := strings.TrimSpace(z.output.String()); out != "" {
			err = fmt.Errorf("%w: %s", err, lastLines(out, 5))
		}
		return nil, fmt.Errorf("sandbox: zygote did not start: %w", err)
	}
	_ = ctl.SetReadDeadline(time.Time{})
	for _, m := range r.Missing {
		l.missing(m)
	}
	if !r.Ready {
		z.kill()
		close(z.readerD)
		return nil, &ImportError{Msg: r.Error, Traceback: r.Traceback}
	}
	z.pid = z.cmd.Process.Pid // r.PID is 1: its own pid namespace's
	go z.readLoop()
	return z, nil
}

// start runs the zygote in a new network namespace, falling back to a user namespace
// (not root) and then to none, and remembers what worked.
func (z *Zygote) start(args, env []string, ctl *os.File) error {
	l := z.l
	for mode := max(l.netMode.Load(), 1); mode <= 3; mode++ {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = env
		cmd.Dir = "/"
		cmd.Stdout, cmd.Stderr = z.output, z.output
		cmd.ExtraFiles = []*os.File{ctl}
		attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		// A pid namespace of its own too: the zygote makes one per job below it, which it
		// may do only from a namespace its user namespace owns.
		switch mode {
		case 1:
			attr.Cloneflags = syscall.CLONE_NEWNET | syscall.CLONE_NEWPID
		case 2:
			attr.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNET | syscall.CLONE_NEWPID
			attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
			attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
		}
		cmd.SysProcAttr = attr
		if mode < 3 {
			cmd.Args = append(cmd.Args, "--netns")
		}
		err := cmd.Start()
		if err == nil {
			if l.netMode.Swap(mode) != mode && mode == 3 {
				l.missing("network isolation (no network namespace could be created)")
			}
			z.cmd = cmd
			return nil
		}
		var errno syscall.Errno
		if mode == 3 || !errors.As(err, &errno) || (errno != syscall.EPERM && errno != syscall.EINVAL && errno != syscall.ENOSPC && errno != syscall.EUSERS) {
			return fmt.Errorf("sandbox: start zygote: %w", err)
		}
	}
	return errors.New("sandbox: start zygote: no namespace setup worked")
}

func zygoteEnv() []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	return []string{"PATH=" + path, "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/nonexistent"}
}

// maxReplyBytes bounds one packet from the zygote. Replies are a few hundred bytes; a
// traceback in its ready message is the largest.
const maxReplyBytes = 1 << 20

// read reads one packet into buf, which the caller reuses: a reply is decoded out of it
// before the next read (a buffer per reply cost every candidate 1 MiB of allocation, zeroed,
// and the collector's cycles that came with it).
func (z *Zygote) read(buf []byte) (reply, error) {
	n, _, flags, _, err := z.ctl.ReadMsgUnix(buf, nil)
	if err != nil {
		return reply{}, err
	}
	if n == 0 {
		return reply{}, io.EOF
	}
	if flags&syscall.MSG_TRUNC != 0 {
		return reply{}, fmt.Errorf("zygote reply over %d bytes", len(buf))
	}
	var r reply
	if err := json.Unmarshal(buf[:n], &r); err != nil {
		return reply{}, fmt.Errorf("zygote reply: %w", err)
	}
	return r, nil
}

// readLoop hands each job's reply to its job; when the zygote ends, every pending job
// learns that it died.
func (z *Zygote) readLoop() {
	defer close(z.readerD)
	buf := make([]byte, maxReplyBytes)
	for {
		r, err := z.read(buf)
		if err != nil {
			z.mu.Lock()
			z.dead = true
			for id, ch := range z.pending {
				ch <- reply{died: true}
				delete(z.pending, id)
			}
			z.mu.Unlock()
			return
		}
		z.mu.Lock()
		ch := z.pending[r.ID]
		delete(z.pending, r.ID)
		z.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// PID is the zygote's process id.
func (z *Zygote) PID() int { return z.pid }

// Jobs is how many jobs the zygote was given.
func (z *Zygote) Jobs() int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.jobs
}

// Dead reports whether the zygote ended.
func (z *Zygote) Dead() bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.dead
}

// RSS is the zygote's resident memory in bytes, or 0 when it cannot be read.
func (z *Zygote) RSS() int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(z.pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Close stops the zygote: it exits when its control socket closes, and its jobs die with
// it (parent-death signals, and its pid namespace). A zygote that does not exit is killed.
func (z *Zygote) Close() error {
	_ = z.ctl.Close()
	select {
	case <-z.waited:
	case <-time.After(5 * time.Second):
		z.kill()
	}
	<-z.readerD
	return nil
}

func (z *Zygote) kill() {
	_ = syscall.Kill(-z.cmd.Process.Pid, syscall.SIGKILL)
	_ = z.ctl.Close()
	<-z.waited
}

// job is the packet a zygote receives.
type job struct {
	ID         uint64            `json:"id"`
	Kind       string            `json:"kind"`
	Argv       []string          `json:"argv,omitempty"`
	Program    string            `json:"program,omitempty"`
	Cascade    bool              `json:"cascade,omitempty"`
	Thresholds []float64         `json:"thresholds,omitempty"`
	Workdir    string            `json:"workdir"`
	Inputs     []string          `json:"inputs,omitempty"`
	Env        map[string]string `json:"env"`
	Rlimits    map[string]int64  `json:"rlimits"`
	MaxProcs   int               `json:"max_procs"`
	Timeout    float64           `json:"timeout"`
	Cgroup     string            `json:"cgroup,omitempty"`
	// UID is the job's own uid when the service is root: live jobs never share one.
	UID int `json:"uid,omitempty"`
}

// Jobs run as uidBase + a number that cycles through uidRange when the service is root, so
// that no two live jobs, of any zygote, share a uid: RLIMIT_NPROC is then per job, and no
// job can signal another.
const (
	uidBase  = 200000
	uidRange = 1 << 20
)

var uidSeq atomic.Uint64

// backstop is how long past its timeout a job's reply may be late before the zygote is
// taken for hung and killed; the zygote enforces the timeout itself.
const backstop = 10 * time.Second

// Run runs c in box on the zygote. It returns an error when the job could not run (ctx
// ended, the zygote died: ErrZygoteDied); a command that fails, crashes or times out is
// an Outcome.
func (z *Zygote) Run(ctx context.Context, box *Box, c Command) (*Outcome, error) {
	j, err := z.job(box, c)
	if err != nil {
		return nil, err
	}
	maxOut := c.MaxOutputBytes
	if maxOut <= 0 {
		maxOut = DefaultMaxOutputBytes
	}
	// Pipes 0-2 carry stdout, stderr and the report to us; on pipe 3 we ask the zygote
	// to kill the job (the output limit). The job gets the write ends of 0-2, the zygote
	// alone the read end of 3.
	var reads [4]*os.File
	var writes [4]*os.File
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			if f != nil {
				f.Close()
			}
		}
	}
	for i := range reads {
		if reads[i], writes[i], err = os.Pipe(); err != nil {
			closeAll(reads[:])
			closeAll(writes[:])
			return nil, fmt.Errorf("sandbox: %w", err)
		}
	}
	// The box's files travel as descriptors: init copies them into the job's work dir,
	// which the host's file system never sees.
	var inputs []*os.File
	for _, name := range box.inputs {
		f, err := os.Open(filepath.Join(box.Dir, name))
		if err != nil {
			closeAll(reads[:])
			closeAll(writes[:])
			closeAll(inputs)
			return nil, fmt.Errorf("sandbox: input %w", err)
		}
		inputs = append(inputs, f)
		j.Inputs = append(j.Inputs, name)
	}
	kill := writes[3]
	defer kill.Close()
	ours, theirs := reads[:3], append([]*os.File{writes[0], writes[1], writes[2], reads[3]}, inputs...)
	defer closeAll(ours)
	cg, cgErr := z.l.newCgroup(c)
	if cgErr != nil {
		z.l.missing("per-job cgroup (" + cgErr.Error() + ")")
	}
	defer cg.remove()
	j.Cgroup = cg.name()

	z.mu.Lock()
	if z.dead {
		z.mu.Unlock()
		closeAll(theirs)
		return nil, ErrZygoteDied
	}
	z.nextID++
	j.ID = z.nextID
	z.jobs++
	ch := make(chan reply, 1)
	z.pending[j.ID] = ch
	z.mu.Unlock()

	packet, _ := json.Marshal(j)
	fds := make([]int, len(theirs))
	for i, f := range theirs {
		fds[i] = int(f.Fd())
	}
	rights := syscall.UnixRights(fds...)
	_, _, err = z.ctl.WriteMsgUnix(packet, rights, nil)
	closeAll(theirs)
	if err != nil {
		z.mu.Lock()
		delete(z.pending, j.ID)
		z.mu.Unlock()
		return nil, fmt.Errorf("%w: send job: %w", ErrZygoteDied, err)
	}
	stdout, stderr := newCapture(maxOut), newCapture(maxOut)
	report := &limitedBuffer{max: MaxReportBytes}
	limit := &outputLimit{max: c.OutputLimitBytes, kill: kill}
	if limit.max == 0 {
		limit.max = DefaultOutputLimitBytes
	}
	var readers sync.WaitGroup
	readers.Go(func() { copyPooled(limit.counting(stdout), reads[0]) })
	readers.Go(func() { copyPooled(limit.counting(stderr), reads[1]) })
	readers.Go(func() { copyPooled(report, reads[2]) })

	var late <-chan time.Time
	if c.Timeout > 0 {
		t := time.NewTimer(c.Timeout + backstop)
		defer t.Stop()
		late = t.C
	}
	var r reply
	select {
	case r = <-ch:
	case <-late:
		z.l.log.Error("sandbox zygote hung; killing it", "zygote", z.cmd.Process.Pid)
		z.kill()
		r = <-ch
	case <-ctx.Done():
		z.kill()
		<-ch
		readers.Wait()
		return nil, fmt.Errorf("sandbox: %w", ctx.Err())
	}
	// The job's pid namespace is gone, so the pipes are at EOF; without one, a straggler
	// may hold them: stop reading after a grace.
	drained := make(chan struct{})
	go func() { readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(pipeGrace):
		closeAll(ours)
		<-drained
	}
	if r.died {
		return nil, ErrZygoteDied
	}
	if r.Error != "" {
		return nil, fmt.Errorf("sandbox: %s", r.Error)
	}
	for _, m := range r.Missing {
		z.l.missing(m)
	}
	o := &Outcome{
		ExitCode: r.Exit, TimedOut: r.TimedOut,
		Stdout: stdout.String(), Stderr: stderr.String(),
		Duration: time.Duration(r.Wall * float64(time.Second)), CPU: time.Duration(r.CPU * float64(time.Second)),
		PID: r.PID, Left: r.Left, OutputLimited: r.OutputLim,
	}
	if r.UID != nil {
		o.UID = *r.UID
	}
	if r.Signal != 0 {
		o.Signal = syscall.Signal(r.Signal).String()
	}
	if report.over {
		o.ReportTooLarge = true
	} else {
		o.Report = report.buf.Bytes()
	}
	return o, nil
}

func (z *Zygote) job(box *Box, c Command) (*job, error) {
	j := &job{Workdir: box.Dir, Env: map[string]string{}, Rlimits: map[string]int64{"RLIMIT_CORE": 0}, MaxProcs: maxProcs}
	if z.l.hostRoot {
		j.UID = uidBase + int(uidSeq.Add(1)%uidRange)
	}
	switch {
	case len(c.Args) > 0:
		bin := c.Args[0]
		if strings.Contains(bin, "/") && !filepath.IsAbs(bin) {
			bin = filepath.Join(box.Dir, bin)
		}
		// Looked up here, so that a command which cannot start is an error rather than an
		// exit status 127.
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("sandbox: start %s: %w", c.Args[0], err)
		}
		j.Kind, j.Argv = "exec", c.Args
	case c.Program != "":
		j.Kind, j.Program, j.Cascade, j.Thresholds = "evaluate", c.Program, c.Cascade, c.Thresholds
	default:
		return nil, errors.New("sandbox: empty command")
	}
	for _, kv := range append(box.Env(), c.Env...) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			j.Env[k] = v
		}
	}
	fileBytes := c.MaxFileBytes
	if fileBytes == 0 {
		fileBytes = DefaultMaxFileBytes
	}
	if fileBytes > 0 {
		j.Rlimits["RLIMIT_FSIZE"] = fileBytes
	}
	if c.Timeout > 0 {
		j.Timeout = c.Timeout.Seconds()
		// CPU time, so that a busy loop ignoring SIGTERM is killed even without us.
		j.Rlimits["RLIMIT_CPU"] = int64(math.Ceil(c.Timeout.Seconds()))
	}
	if mb := memoryLimit(c); mb > 0 {
		j.Rlimits["RLIMIT_AS"] = int64(mb) << 20
	}
	return j, nil
}

// memoryLimit is c's memory limit in MiB, 0 for none.
func memoryLimit(c Command) int {
	switch {
	case c.MemoryLimitMB == 0:
		return DefaultMemoryLimitMB
	case c.MemoryLimitMB < 0:
		return 0
	}
	return c.MemoryLimitMB
}

// outputLimit counts what a job writes to stdout and stderr together and, past max, asks its
// zygote (once) to kill it.
type outputLimit struct {
	max   int64
	kill  *os.File
	total atomic.Int64
	once  sync.Once
}

func (l *outputLimit) counting(w io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		if l.max > 0 && l.total.Add(int64(len(p))) > l.max {
			l.once.Do(func() { _, _ = l.kill.Write([]byte{'k'}) })
		}
		return w.Write(p)
	})
}

// copyBuffers are the buffers of copyPooled: each job reads three pipes, and io.Copy from
// an *os.File into a plain writer allocates 32 KiB for each.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyPooled copies src to dst through a pooled buffer until EOF or an error.
func copyPooled(dst io.Writer, src io.Reader) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	// Hidden behind a plain Reader, the file's WriteTo (which would allocate its own buffer
	// for a destination it cannot splice to) is not used. The destinations here (captures,
	// the report buffer) have no ReadFrom, so CopyBuffer reads through bp.
	_, _ = io.CopyBuffer(dst, struct{ io.Reader }{src}, *bp)
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// limitedBuffer keeps up to max bytes and notes when there was more, reading on so the
// writer is never blocked.
type limitedBuffer struct {
	max  int
	buf  bytes.Buffer
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if !b.over && b.buf.Len()+len(p) <= b.max {
		b.buf.Write(p)
	} else {
		b.over = true
		b.buf.Reset()
	}
	return len(p), nil
}

// lockedCapture is a capture the zygote's stdout and stderr (two exec goroutines) share.
type lockedCapture struct {
	mu sync.Mutex
	c  *capture
}

func (l *lockedCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c.Write(p)
}

func (l *lockedCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
