package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/services/evaluator/internal/proctest"
)

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
	cases := []struct {
		name  string
		cmd   Command
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
			name: "timeout kills the whole group",
			cmd:  Command{Args: []string{"sh", "-c", "sleep 600 & sleep 600 & echo $$; wait"}, Timeout: 300 * time.Millisecond},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if !o.TimedOut || o.Success() || o.Signal != "killed" {
					t.Errorf("timed out %v signal %q, want true \"killed\"", o.TimedOut, o.Signal)
				}
				if o.Duration > 5*time.Second {
					t.Errorf("duration %v, want about 300ms", o.Duration)
				}
				if got := strings.TrimSpace(o.Stdout); got != strconv.Itoa(o.PGID) {
					t.Errorf("shell pid %s, want the group leader %d", got, o.PGID)
				}
				waitGroupGone(t, o.PGID)
			},
		},
		{
			name: "a background child holding the pipes does not hold up the result",
			cmd:  Command{Args: []string{"sh", "-c", "sleep 600 & echo started"}, Timeout: time.Minute},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if !o.Success() || o.Duration > 5*time.Second {
					t.Errorf("success %v after %v, want true at once", o.Success(), o.Duration)
				}
				waitGroupGone(t, o.PGID)
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
			name: "memory limit",
			cmd:  Command{Args: []string{"sh", "-c", "ulimit -v"}, MemoryLimitMB: 300},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if got := strings.TrimSpace(o.Stdout); got != strconv.Itoa(300*1024) {
					t.Errorf("ulimit -v = %q, want %d", got, 300*1024)
				}
			},
		},
		{
			name: "read-only leftovers are removed",
			cmd:  Command{Args: []string{"sh", "-c", "mkdir -p d/e && touch d/e/f && chmod 0500 d/e d"}},
			check: func(t *testing.T, b *Box, o *Outcome) {
				if _, err := os.Stat(filepath.Join(b.Dir, "d", "e", "f")); err != nil {
					t.Errorf("command's file: %v", err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBox(t)
			o, err := b.Run(context.Background(), tc.cmd)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			tc.check(t, b, o)
		})
	}
}

func TestRunCancelled(t *testing.T) {
	b := newBox(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	o, err := b.Run(ctx, Command{Args: []string{"sleep", "600"}})
	if err == nil {
		t.Fatalf("run = %+v, want an error once ctx ends", o)
	}
}

func TestRunNotFound(t *testing.T) {
	b := newBox(t)
	if _, err := b.Run(context.Background(), Command{Args: []string{"no-such-command-here"}}); err == nil {
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

// waitGroupGone waits for every process of the group to die. Zombies count as dead: in a
// container, nobody may reap a killed grandchild.
func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		live := proctest.Live(pgid)
		if len(live) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes %v of group %d still alive", live, pgid)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
