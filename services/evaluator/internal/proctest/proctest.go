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
	return scan("stat", func(stat string) bool {
		// pid (comm) state ppid pgrp ...; comm may hold spaces, so read after the last ')'.
		fields := strings.Fields(stat[strings.LastIndexByte(stat, ')')+1:])
		if len(fields) < 3 || fields[0] == "Z" || fields[0] == "X" {
			return false
		}
		g, _ := strconv.Atoi(fields[2])
		return g == pgid
	})
}

// LiveUID lists the processes running as uid that are not dead (zombies count as dead).
func LiveUID(uid int) []int {
	return scan("status", func(status string) bool {
		var state, real string
		for line := range strings.Lines(status) {
			f := strings.Fields(line)
			switch {
			case len(f) >= 2 && f[0] == "State:":
				state = f[1]
			case len(f) >= 2 && f[0] == "Uid:":
				real = f[1]
			}
		}
		return state != "Z" && state != "X" && real == strconv.Itoa(uid)
	})
}

// scan lists the pids whose /proc/<pid>/<file> keep accepts; processes that end meanwhile
// are skipped.
func scan(file string, keep func(string) bool) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), file))
		if err != nil {
			continue
		}
		if keep(string(data)) {
			pids = append(pids, pid)
		}
	}
	return pids
}
