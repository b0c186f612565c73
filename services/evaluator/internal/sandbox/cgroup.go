package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// findCgroup returns the cgroup v2 directory under which this process may create a cgroup
// per job, or why there is none. It must be a pure v2 hierarchy (cgroup.controllers at the
// root: hybrid v1 systems fall back to rlimits), the process' own cgroup must be writable
// and delegate the memory and pids controllers to its children.
func findCgroup() (string, string) {
	const root = "/sys/fs/cgroup"
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
		return "", "no unified cgroup v2 hierarchy at " + root
	}
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", "cannot read /proc/self/cgroup"
	}
	var own string
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			own = rest
		}
	}
	if own == "" {
		return "", "no cgroup v2 entry in /proc/self/cgroup"
	}
	dir := filepath.Join(root, own)
	ctl, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return "", "cannot read " + dir + "/cgroup.subtree_control"
	}
	for _, c := range []string{"memory", "pids"} {
		if !strings.Contains(" "+strings.TrimSpace(string(ctl))+" ", " "+c+" ") {
			return "", "the " + c + " controller is not delegated to " + dir
		}
	}
	probe, err := os.MkdirTemp(dir, "shoal-probe-")
	if err != nil {
		return "", dir + " is not writable"
	}
	_ = os.Remove(probe)
	return dir, ""
}

var cgroupSeq atomic.Uint64

// jobCgroup is one job's cgroup; nil when there is none.
type jobCgroup struct{ path string }

// newCgroup creates a cgroup for one job with its memory and process limits; the job's
// zygote moves the job into it before the job runs.
func (l *Launcher) newCgroup(c Command) (*jobCgroup, error) {
	if l.cgroup == "" {
		return nil, nil
	}
	path := filepath.Join(l.cgroup, fmt.Sprintf("shoal-%d-%d", os.Getpid(), cgroupSeq.Add(1)))
	if err := os.Mkdir(path, 0o755); err != nil {
		return nil, err
	}
	cg := &jobCgroup{path: path}
	writes := map[string]string{"pids.max": strconv.Itoa(maxProcs), "memory.swap.max": "0"}
	if mb := memoryLimit(c); mb > 0 {
		writes["memory.max"] = strconv.Itoa(mb << 20)
	}
	for name, v := range writes {
		if err := os.WriteFile(filepath.Join(path, name), []byte(v), 0o644); err != nil && name != "memory.swap.max" {
			cg.remove()
			return nil, err
		}
	}
	return cg, nil
}

// name is the cgroup's path below the launcher's, which the zygote holds open.
func (cg *jobCgroup) name() string {
	if cg == nil {
		return ""
	}
	return filepath.Base(cg.path)
}

// remove kills whatever is left in the cgroup and removes it.
func (cg *jobCgroup) remove() {
	if cg == nil {
		return
	}
	_ = os.WriteFile(filepath.Join(cg.path, "cgroup.kill"), []byte("1"), 0o644)
	for range 50 {
		if err := os.Remove(cg.path); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
