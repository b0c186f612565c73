// Package launchtest holds what the tests of launched model servers share, in the launch
// package and in the generator that drives it: the stand-in server, commands that record
// the processes they start, profiles files, and checks that no server outlives a test.
package launchtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/runconfig"
)

// Standin is the path of the stand-in model server of deploy/standin: a real
// OpenAI-compatible server on Python's standard library, which reports its
// CUDA_VISIBLE_DEVICES. It is found from the test's directory up to the repository's root.
func Standin(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		path := filepath.Join(dir, "deploy", "standin", "server.py")
		if _, err := os.Stat(path); err == nil {
			return path
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("the stand-in model server deploy/standin/server.py is missing")
		}
		dir = up
	}
}

// Recorded wraps a server command in a shell that appends its pid (which is also its process
// group: each server is started in a group of its own) to dir/pids and writes its
// CUDA_VISIBLE_DEVICES to dir/cvd and its STANDIN_NOTE (a profile's env) to dir/note, then
// execs the server under the same pid.
func Recorded(dir, server string) []string {
	return []string{"sh", "-c", fmt.Sprintf(`echo $$ >> %s/pids; printf %%s "$CUDA_VISIBLE_DEVICES" > %s/cvd; printf %%s "$STANDIN_NOTE" > %s/note; exec %s`, dir, dir, dir, server)}
}

// Profile is one entry of a generator's profiles file; extra holds its other keys, indented
// by four spaces.
func Profile(name string, command []string, extra string) string {
	quoted := make([]string, len(command))
	for i, a := range command {
		quoted[i] = strconv.Quote(a)
	}
	return fmt.Sprintf("  %s:\n    command: [%s]\n%s", name, strings.Join(quoted, ", "), extra)
}

// Profiles reads entries as the generator reads its --profiles file.
func Profiles(t testing.TB, entries ...string) runconfig.Profiles {
	t.Helper()
	ps, warnings, err := runconfig.ParseProfiles([]byte("profiles:\n" + strings.Join(entries, "")))
	if err != nil || len(warnings) > 0 {
		t.Fatalf("profiles: %v %v", err, warnings)
	}
	return ps
}

// PIDs are the pids Recorded wrote to dir/pids, in the order the servers started.
func PIDs(t testing.TB, dir string) []int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "pids"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pids file: %v", err)
		}
		out = append(out, pid)
	}
	return out
}

// WaitFor polls cond until it holds, and fails the test after limit.
func WaitFor(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// GroupGone reports whether no process of the process group pgid is left.
func GroupGone(pgid int) bool {
	return errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH)
}

// KillGroups makes sure no server recorded in dirs outlives a failing test: one still
// running when the test ends is an error, and is killed.
func KillGroups(t testing.TB, dirs ...string) {
	t.Cleanup(func() {
		for _, dir := range dirs {
			for _, pid := range PIDs(t, dir) {
				if !GroupGone(pid) {
					t.Errorf("server process group %d outlived the test", pid)
					_ = syscall.Kill(-pid, syscall.SIGKILL)
				}
			}
		}
	})
}

// NoLeaks fails the test if goroutines started during it outlive it. Call it first, so that
// its check runs after every other cleanup.
func NoLeaks(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines before the test, %d after:\n%s", before, runtime.NumGoroutine(), buf)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// Log is a writer into the test's log, a line a write: for a logger the test shows only
// when it fails.
type Log struct{ T testing.TB }

func (w Log) Write(p []byte) (int, error) {
	w.T.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
