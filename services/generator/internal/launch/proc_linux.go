package launch

import "syscall"

// sysProcAttr puts a model server in its own process group, and kills it if the generator
// dies without stopping it: an orphaned server would hold GPU memory that the ledger, once
// the lease expires, gives to someone else.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
