package main

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/shoal-run/shoal/deploy/standin"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
)

//go:embed testdata/polyfit
var polyfit embed.FS

// problem writes the polyfit problem into dir with its config filled in.
func problem(dir string, fields map[string]string) error {
	return fs.WalkDir(polyfit, "testdata/polyfit", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := polyfit.ReadFile(path)
		if err != nil {
			return err
		}
		text := string(data)
		for k, v := range fields {
			text = strings.ReplaceAll(text, "{{"+k+"}}", v)
		}
		return os.WriteFile(filepath.Join(dir, filepath.Base(path)), []byte(text), 0o644)
	})
}

// model is a stand-in model server listening on loopback.
type model struct {
	*standin.Server
	url string
	srv *http.Server
}

func startModel(cfg standin.Config) (*model, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &model{Server: standin.New(cfg), url: "http://" + ln.Addr().String() + "/v1"}
	m.srv = &http.Server{Handler: m.Server, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = m.srv.Serve(ln) }()
	return m, nil
}

func (m *model) close() { _ = m.srv.Close() }

// e2eResult is one run of `shoal up`, timed from outside.
type e2eResult struct {
	rate   float64 // evaluations per second in the steady state
	wall   time.Duration
	budget []hops
	best   string
	sizes  [3]int
	msgs   []kindCount   // messages per candidate by kind (full tap only)
	busy   standin.Stats // the model server's, from the first task to the end
	// cpu is the CPU time (user and system) of the `shoal up` process over the whole run:
	// on a shared machine a steadier measure of its own cost than its rate.
	cpu time.Duration
	// cpuPerEval is the CPU milliseconds (user + system) of the `shoal up` process, its
	// NATS server included, and of this process (the no-op evaluator and the tap), per
	// result in the steady state (as busy).
	cpuPerEval float64
}

// upShape is how a measured `shoal up` is put together.
type upShape struct {
	iterations  int
	concurrency int // the model's concurrency in the run config
	// noop replaces the evaluator service with noopEvaluator.
	noop bool
	// light taps results only (see startTap); the budget and the body sizes stay empty.
	light bool
	// generators is the number of generator replicas: the one in `shoal up` and the others
	// as `shoal up --only generator` processes of their own.
	generators int
	// env is added to `shoal up`'s environment (OTEL_* for figure (t)).
	env []string
}

// runUp runs `shoal up` on the polyfit problem the way a user does, with a stand-in model,
// until the budget of iterations is spent, and times it from a second connection.
func runUp(ctx context.Context, shoal string, shape upShape, mdl standin.Config, evaluate time.Duration) (*e2eResult, error) {
	iterations, concurrency := shape.iterations, shape.concurrency
	m, err := startModel(mdl)
	if err != nil {
		return nil, err
	}
	defer m.close()
	dir, err := os.MkdirTemp("", "shoal-bench-pipeline-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	prob := filepath.Join(dir, "polyfit")
	if err := os.Mkdir(prob, 0o755); err != nil {
		return nil, err
	}
	if err := problem(prob, map[string]string{"iterations": strconv.Itoa(iterations), "seed": "42",
		"api_base": m.url, "concurrency": strconv.Itoa(concurrency)}); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	state := filepath.Join(dir, "state")
	args := []string{"up", "--fresh", "--state-dir", state, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--run", "bench"}
	if shape.noop {
		args = append(args, "--only", "planner,generator,archive")
	}
	cmd := exec.CommandContext(ctx, shoal, append(args, prob)...)
	cmd.Env = append(os.Environ(), shape.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	nc, err := dialUp(ctx, port, state, natsauth.Admin, exited)
	if err != nil {
		return nil, fmt.Errorf("%w\n%s", err, out.String())
	}
	defer nc.Close()
	// The services provision the streams and buckets as they start.
	var t *tap
	for tries := 0; ; tries++ {
		if t, err = startTap(ctx, nc, protocol.NewNames(""), "bench", !shape.light); err == nil {
			break
		}
		if tries == 500 {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer t.stop()
	svcCtx, stopServices := context.WithCancel(ctx)
	defer stopServices()
	if shape.noop {
		enc, err := dialUp(ctx, port, state, natsauth.Evaluator, exited)
		if err != nil {
			return nil, err
		}
		defer enc.Close()
		go func() {
			if err := noopEvaluator(svcCtx, enc, protocol.NewNames("")); err != nil && svcCtx.Err() == nil {
				fmt.Fprintln(os.Stderr, "no-op evaluator:", err)
			}
		}()
	}
	for i := 1; i < shape.generators; i++ {
		g := exec.CommandContext(svcCtx, shoal, "up", "--only", "generator", "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", port),
			"--state-dir", filepath.Join(dir, fmt.Sprintf("generator-%d", i)),
			"--user", "generator", "--password-file", natsauth.PasswordFile(filepath.Join(state, "credentials"), natsauth.Generator))
		g.Stdout, g.Stderr = &out, &out
		g.Cancel = func() error { return g.Process.Signal(syscall.SIGTERM) }
		g.WaitDelay = 30 * time.Second
		if err := g.Start(); err != nil {
			return nil, err
		}
		defer func() { _ = g.Wait() }()
	}
	// The model's busy fraction is read over the steady state: from the first tenth of the
	// results to nine tenths, leaving out the start and the drain at the end.
	// So is the CPU time per result of the `shoal up` process and of this one (the no-op
	// evaluator, when there is one, and the tap).
	busy := make(chan standin.Stats, 1)
	steadyCPU := make(chan float64, 1)
	go func() {
		skip, end := max(iterations/10, 5), iterations*9/10
		reset := false
		var cpu0 time.Duration
		var n0 int
		for svcCtx.Err() == nil {
			n := t.resultCount()
			if !reset && n >= skip {
				m.Reset()
				cpu0, n0 = procCPU(cmd.Process.Pid)+processCPU(), n
				reset = true
			}
			if n >= end {
				busy <- m.Stats()
				if cpu1 := procCPU(cmd.Process.Pid) + processCPU(); cpu1 > 0 && cpu0 > 0 && n > n0 {
					steadyCPU <- float64((cpu1 - cpu0).Microseconds()) / 1000 / float64(n-n0)
				}
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	if err := <-exited; err != nil {
		return nil, fmt.Errorf("shoal up: %w\n%s", err, tail(out.String(), 2000))
	}
	r := &e2eResult{wall: time.Since(start), rate: t.rate(max(iterations/10, 5)), budget: t.budget(evaluate), sizes: t.sizes(), msgs: t.perCandidate()}
	if ps := cmd.ProcessState; ps != nil {
		r.cpu = ps.UserTime() + ps.SystemTime()
	}

	select {
	case r.busy = <-busy:
	default:
	}
	select {
	case r.cpuPerEval = <-steadyCPU:
	default:
	}
	if i := strings.LastIndex(out.String(), "best score"); i >= 0 {
		r.best = strings.TrimSpace(strings.SplitN(out.String()[i:], "\n", 2)[0])
	}
	if n := t.resultCount(); n < iterations {
		return nil, fmt.Errorf("the tap saw %d results of %d\n%s", n, iterations, tail(out.String(), 2000))
	}
	return r, nil
}

// dialUp connects as role to the NATS server of a starting `shoal up`, once `up` has made
// its credentials and started its server.
func dialUp(ctx context.Context, port int, stateDir string, role natsauth.Role, exited <-chan error) (*nats.Conn, error) {
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		opts, err := roleOptions(stateDir, role)
		if errors.Is(err, fs.ErrNotExist) {
			// No credentials (yet): a build of shoal from before the bus authenticated
			// accepts anyone, and a newer one refuses until `up` has made them.
			opts, err = []nats.Option{nats.Name("bench-pipeline-" + string(role))}, nil
		}
		if err == nil {
			var nc *nats.Conn
			if nc, err = nats.Connect(url, opts...); err == nil {
				return nc, nil
			}
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("shoal up exited before its server was reachable: %v", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect %s: %w", url, err)
		}
	}
}

// roleOptions are the options a client connects to the `shoal up` in stateDir with as role,
// with the password that `up` made for it, as shoal's CLI does.
func roleOptions(stateDir string, role natsauth.Role) ([]nats.Option, error) {
	pw, err := natsauth.ReadPassword(filepath.Join(stateDir, "credentials"), role)
	if err != nil {
		return nil, err
	}
	opts, err := natsx.Auth{User: string(role), Password: pw, InboxPrefix: role.InboxPrefix()}.Options()
	return append(opts, nats.Name("bench-pipeline-"+string(role))), err
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// evaluateTime is what the polyfit evaluator's cascade costs per call on this machine in a
// warm interpreter, outside shoal: what OpenEvolve's evaluate() of the same program costs.
func evaluateTime(ctx context.Context, python string) (time.Duration, error) {
	dir, err := os.MkdirTemp("", "shoal-bench-evaluate-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	if err := problem(dir, nil); err != nil {
		return 0, err
	}
	script := `
import sys, time
sys.path.insert(0, sys.argv[1])
import evaluator
p = sys.argv[1] + "/initial_program.py"
for _ in range(50): evaluator.evaluate_stage1(p); evaluator.evaluate_stage2(p)
n = 500
t = time.perf_counter()
for _ in range(n): evaluator.evaluate_stage1(p); evaluator.evaluate_stage2(p)
print((time.perf_counter() - t) / n)
`
	out, err := exec.CommandContext(ctx, python, "-c", script, dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return 0, fmt.Errorf("time evaluate(): %w", err)
	}
	s, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, fmt.Errorf("time evaluate(): %q: %w", out, err)
	}
	return time.Duration(s * float64(time.Second)), nil
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// procCPU is the CPU time (user + system) process pid has used so far, from /proc; 0 when it
// cannot be read.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; the fields after it are plain.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	const ticks = 100 // USER_HZ, 100 on every Linux architecture Go builds for
	return time.Duration(utime+stime) * time.Second / ticks
}
