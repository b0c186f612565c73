package launch

import "errors"

// ErrStopping: the replica is shutting down, so a task waiting for a launched server is
// handed back for another replica rather than rejected.
var ErrStopping = errors.New("generator is stopping")

// ErrHandBack: the task waited on a server still queued for GPUs while another replica on the
// host serves its model; it goes back to the queue for that replica. `make chaos` found a
// replica holding eight tasks for minutes behind a claim that could not be granted.
var ErrHandBack = errors.New("handed back: another replica serves this model now")

// errIdle: a launched server stopped because no task used it for Config.Idle.
var errIdle = errors.New("launched server idle")
