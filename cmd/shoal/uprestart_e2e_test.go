package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestUpRestartWarnsOfNoMissingArchive: up started, and restarted on a run in progress,
// runs without a warning: the planner's first samples, sent before the archive answers, are
// not news.
func TestUpRestartWarnsOfNoMissingArchive(t *testing.T) {
	state, dir := t.TempDir(), exampleDir(t)
	args := []string{"--backend", "mutate", "--iterations", "100000", "--run", "again"}
	progressed := regexp.MustCompile(`again: ([1-9][0-9]*)/100000`)
	// evaluated waits for a progress line past n evaluations and returns its count.
	evaluated := func(out *syncBuffer, n int) int {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			for _, m := range progressed.FindAllStringSubmatch(out.String(), -1) {
				if got, _ := strconv.Atoi(m[1]); got > n {
					return got
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no progress past %d evaluations:\n%s", n, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var printed []string
	for i, after := range []string{"a fresh start", "a restart"} {
		out, stop := startUpRun(t, dir, state, args...)
		n := evaluated(out, 0)
		if i > 0 {
			evaluated(out, n) // the planner sampled after the restart, and the archive answered
		}
		if err := stop(); err != nil {
			t.Fatalf("up after %s: %v\n%s", after, err, out.String())
		}
		printed = append(printed, out.String())
		if strings.Contains(out.String(), "no responders") {
			t.Errorf("up after %s warned that no archive answered:\n%s", after, out.String())
		}
	}
	t.Logf("up printed:\n%s", strings.Join(printed, "\n---- restarted ----\n"))
}
