// Package proctest reads /proc for the evaluator's tests: which processes of a process group,
// or running as a uid, are still alive after an evaluation.
package proctest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Live lists the processes of process group pgid that are not dead; zombies, waiting for an
// init that may not reap them in a container, count as dead.
func Live(pgid int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces, so read after the last ')'.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 3 || fields[0] == "Z" || fields[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(fields[2]); g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// LiveUID lists the processes running as uid that are not dead (zombies count as dead).
func LiveUID(uid int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var state, real string
		for line := range strings.Lines(string(status)) {
			f := strings.Fields(line)
			switch {
			case len(f) >= 2 && f[0] == "State:":
				state = f[1]
			case len(f) >= 2 && f[0] == "Uid:":
				real = f[1]
			}
		}
		if state == "Z" || state == "X" {
			continue
		}
		if real == strconv.Itoa(uid) {
			pids = append(pids, pid)
		}
	}
	return pids
}
