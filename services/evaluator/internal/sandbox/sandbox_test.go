package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/services/evaluator/internal/proctest"
)

// newZygote starts an exec-only zygote (the cold path's) that the test closes.
func newZygote(t *testing.T) *Zygote {
	t.Helper()
	l, err := NewLauncher("python3", t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	z, err := l.Start(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = z.Close() })
	return z
}

func newBox(t *testing.T) *Box {
	t.Helper()
	b, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(b.Dir); !os.IsNotExist(err) {
			t.Errorf("work dir %s still there after Close (%v)", b.Dir, err)
		}
	})
	return b
}

func TestRun(t *testing.T) {
	t.Setenv("SECRET", "hunter2")
	// A file of the host's beside the work dirs, which no job may see.
	outside := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(outside, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		cmd   Command
		input string // written to the box as input.txt when set
		check func(t *testing.T, b *Box, o *Outcome)
	}{
		{
			name: "exit status and streams",
			cmd:  Command{Args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if o.ExitCode != 3 || o.Success() || o.TimedOut {
					t.Errorf("exit %d success %v timed out %v, want 3 false false", o.ExitCode, o.Success(), o.TimedOut)
				}
				if o.Stdout != "out\n" || o.Stderr != "err\n" {
					t.Errorf("stdout %q stderr %q, want \"out\\n\" \"err\\n\"", o.Stdout, o.Stderr)
				}
			},
		},
		{
			name: "clean environment, cwd and home in the work dir",
			cmd:  Command{Args: []string{"sh", "-c", "env | sort; pwd"}, Env: []string{"EXTRA=1"}},
			check: func(t *testing.T, b *Box, o *Outcome) {
				var names []string
				for _, line := range strings.Split(strings.TrimSpace(o.Stdout), "\n") {
					if k, v, ok := strings.Cut(line, "="); ok {
						names = append(names, k)
						if (k == "HOME" || k == "TMPDIR") && v != b.Dir {
							t.Errorf("%s = %s, want %s", k, v, b.Dir)
						}
					} else if line != b.Dir {
						t.Errorf("cwd = %s, want %s", line, b.Dir)
					}
				}
				// sh itself adds PWD.
				want := "EXTRA HOME LANG PATH PWD PYTHONDONTWRITEBYTECODE PYTHONUNBUFFERED TMPDIR"
				if got := strings.Join(names, " "); got != want {
					t.Errorf("environment = %s, want %s", got, want)
				}
			},
		},
		{
			name: "timeout kills every descendant, setsid or not",
			cmd:  Command{Args: []string{"sh", "-c", "sleep 600 & setsid sleep 600 & echo $$; wait"}, Timeout: 300 * time.Millisecond},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if !o.TimedOut || o.Success() || o.Signal != "killed" {
					t.Errorf("timed out %v signal %q, want true \"killed\"", o.TimedOut, o.Signal)
				}
				if o.Duration > 5*time.Second {
					t.Errorf("duration %v, want about 300ms", o.Duration)
				}
				if got := strings.TrimSpace(o.Stdout); got != "1" {
					t.Errorf("shell pid %s, want 1 (init of its own pid namespace)", got)
				}
				waitUIDGone(t, o.UID)
			},
		},
		{
			name: "a background child holding the pipes does not hold up the result",
			cmd:  Command{Args: []string{"sh", "-c", "setsid sleep 600 & echo started"}, Timeout: time.Minute},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if !o.Success() || o.Duration > 5*time.Second {
					t.Errorf("success %v after %v, want true at once", o.Success(), o.Duration)
				}
				waitUIDGone(t, o.UID)
			},
		},
		{
			name: "no network, private /tmp, read-only file system",
			cmd: Command{Args: []string{"sh", "-c", `
(exec 3<>/dev/tcp/1.1.1.1/80) 2>/dev/null && echo net=open || echo net=closed
python3 -c 'import socket; socket.create_connection(("1.1.1.1", 80), timeout=2)' 2>/dev/null && echo py=open || echo py=closed
echo x > /tmp/shoal-sandbox-escape && echo tmp=written

touch /usr/shoal-escape 2>/dev/null && echo usr=written || echo usr=refused
touch ./inside && echo work=written
ls /proc | grep -c '^[0-9]' | sed 's/^/procs=/'
id -u | sed 's/^/uid=/'`}, Timeout: 10 * time.Second},
			check: func(t *testing.T, b *Box, o *Outcome) {
				for _, want := range []string{"py=closed", "tmp=written", "usr=refused", "work=written"} {
					if !strings.Contains(o.Stdout, want) {
						t.Errorf("stdout %q lacks %q", o.Stdout, want)
					}
				}
				if _, err := os.Stat("/tmp/shoal-sandbox-escape"); err == nil {
					os.Remove("/tmp/shoal-sandbox-escape")
					t.Error("the command wrote the host's /tmp")
				}
				if _, err := os.Stat("/usr/shoal-escape"); err == nil {
					os.Remove("/usr/shoal-escape")
					t.Error("the command wrote /usr")
				}
				if os.Geteuid() == 0 && !strings.Contains(o.Stdout, "uid="+strconv.Itoa(o.UID)) || o.UID == 0 {
					t.Logf("uid: outcome %d, stdout %q", o.UID, o.Stdout)
				}
				t.Logf("inside: %s", strings.ReplaceAll(o.Stdout, "\n", " "))
			},
		},
		{
			name: "output over the cap keeps head and tail",
			cmd:  Command{Args: []string{"sh", "-c", "echo first; head -c 100000 /dev/zero | tr '\\0' x; echo; echo last"}, MaxOutputBytes: 1024},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if !strings.HasPrefix(o.Stdout, "first\n") || !strings.HasSuffix(o.Stdout, "last\n") {
					t.Errorf("stdout = %q, want its head and tail", o.Stdout)
				}
				if !strings.Contains(o.Stdout, "[output truncated: 100012 bytes in all") || len(o.Stdout) > 1024+100 {
					t.Errorf("stdout is %d bytes: %q", len(o.Stdout), o.Stdout)
				}
			},
		},
		{
			name: "output over the limit kills the job",
			cmd:  Command{Args: []string{"sh", "-c", "echo first; yes; echo never"}, OutputLimitBytes: 1 << 20, MaxOutputBytes: 1024, Timeout: time.Minute},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if !o.OutputLimited || o.Success() || o.TimedOut || o.Signal != "killed" {
					t.Errorf("output limited %v, success %v, timed out %v, signal %q; want true false false \"killed\"", o.OutputLimited, o.Success(), o.TimedOut, o.Signal)
				}
				if !strings.HasPrefix(o.Stdout, "first\ny\n") || !strings.Contains(o.Stdout, "[output truncated") {
					t.Errorf("stdout = %.100q, want its capped head", o.Stdout)
				}
				waitUIDGone(t, o.UID)
			},
		},
		{
			name: "output within the limit",
			cmd:  Command{Args: []string{"sh", "-c", "head -c 100000 /dev/zero"}, OutputLimitBytes: 200000},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if o.OutputLimited || !o.Success() {
					t.Errorf("output limited %v, success %v; want false true", o.OutputLimited, o.Success())
				}
			},
		},
		{
			name: "memory limit",
			cmd:  Command{Args: []string{"sh", "-c", "ulimit -v"}, MemoryLimitMB: 300},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if got := strings.TrimSpace(o.Stdout); got != strconv.Itoa(300*1024) {
					t.Errorf("ulimit -v = %q, want %d", got, 300*1024)
				}
			},
		},
		{
			name: "the work dir is a tmpfs of its own, off the host's disk",
			cmd:  Command{Args: []string{"sh", "-c", "mkdir -p d/e && touch d/e/f && chmod 0500 d/e d && stat -f -c %T . && ls"}},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if !o.Success() || !strings.HasPrefix(o.Stdout, "tmpfs\n") || !strings.Contains(o.Stdout, "d\n") {
					t.Errorf("success %v, stdout %q; want tmpfs and d", o.Success(), o.Stdout)
				}
				if _, err := os.Stat(filepath.Join(b.Dir, "d")); err == nil {
					t.Error("the command's file reached the host's work dir")
				}
			},
		},
		{
			name:  "the box's files are copied in",
			cmd:   Command{Args: []string{"sh", "-c", "cat input.txt && echo more >> input.txt"}},
			input: "hello from the box",
			check: func(t *testing.T, b *Box, o *Outcome) {
				if !o.Success() || o.Stdout != "hello from the box" {
					t.Errorf("success %v, stdout %q; want the input", o.Success(), o.Stdout)
				}
				if data, _ := os.ReadFile(filepath.Join(b.Dir, "input.txt")); string(data) != "hello from the box" {
					t.Errorf("host's copy = %q, want it untouched", data)
				}
			},
		},
		{
			name: "a minimal root: no host homes, state or logs",
			cmd:  Command{Args: []string{"sh", "-c", "ls / | tr '\\n' ' '; for p in /home /var/log /work /root/.bashrc /etc/shadow \"$SHOAL_OUTSIDE\"; do test -e \"$p\" && echo \"seen $p\"; done; echo done"}, Env: []string{"SHOAL_OUTSIDE=" + outside}},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if !o.Success() || strings.Contains(o.Stdout, "seen") || !strings.Contains(o.Stdout, "done") {
					t.Errorf("success %v, stdout %q; want nothing seen", o.Success(), o.Stdout)
				}
				t.Logf("root: %s", o.Stdout)
			},
		},
	}
	z := newZygote(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBox(t)
			if tc.input != "" {
				if err := b.WriteFile("input.txt", []byte(tc.input)); err != nil {
					t.Fatal(err)
				}
			}
			o, err := z.Run(context.Background(), b, tc.cmd)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			tc.check(t, b, o)
		})
	}
}

func TestRunCancelled(t *testing.T) {
	b := newBox(t)
	z := newZygote(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	o, err := z.Run(ctx, b, Command{Args: []string{"sleep", "600"}})
	if err == nil {
		t.Fatalf("run = %+v, want an error once ctx ends", o)
	}
}

func TestRunNotFound(t *testing.T) {
	b := newBox(t)
	if _, err := newZygote(t).Run(context.Background(), b, Command{Args: []string{"no-such-command-here"}}); err == nil {
		t.Fatal("run of a missing command: want an error")
	}
}

func TestCapture(t *testing.T) {
	c := newCapture(16) // 14 bytes of head, 2 of tail
	for _, s := range []string{"0123456789", "abcdef", "ghij", "k"} {
		c.Write([]byte(s))
	}
	want := "0123456789abcd\n[output truncated: 21 bytes in all, 5 cut here]\njk"
	if got := c.String(); got != want {
		t.Errorf("capture = %q, want %q", got, want)
	}
	c = newCapture(16)
	c.Write([]byte("0123456789abcdef"))
	if got := c.String(); got != "0123456789abcdef" {
		t.Errorf("capture at the cap = %q, want it whole", got)
	}
}

// waitUIDGone waits for every process running as uid to die; zombies count as dead.
func waitUIDGone(t *testing.T, uid int) {
	t.Helper()
	if uid == 0 {
		t.Log("the job ran as the service's uid (not root): nothing to look for by uid")
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		live := proctest.LiveUID(uid)
		if len(live) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes %v of uid %d still alive", live, uid)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestJobAllocatesLittle: what a job costs the evaluator's process in memory is what it reads
// (output, report, reply), not fixed buffers. A 1 MiB buffer per zygote reply and 32 KiB per
// pipe made every candidate allocate over 1 MiB, zeroed, and brought the collector round
// every few candidates on a path where each millisecond of CPU counts.
func TestJobAllocatesLittle(t *testing.T) {
	z := newZygote(t)
	run := func() {
		b := newBox(t)
		if _, err := z.Run(context.Background(), b, Command{Args: []string{"true"}}); err != nil {
			t.Fatalf("run: %v", err)
		}
	}
	run() // the first job warms what is made once
	const jobs = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range jobs {
		run()
	}
	runtime.ReadMemStats(&after)
	per := (after.TotalAlloc - before.TotalAlloc) / jobs
	t.Logf("%d bytes allocated per job", per)
	if per > 256<<10 {
		t.Errorf("a job allocates %d KiB, want under 256 KiB", per>>10)
	}
}
