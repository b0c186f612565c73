package generator

import "errors"

// ErrConfig: the replica's own configuration is unusable (Config.Validate).
var ErrConfig = errors.New("invalid generator config")

// errStopping: the replica is shutting down, so a task waiting for a launched server is
// handed back for another replica rather than rejected.
var errStopping = errors.New("generator is stopping")

// errIdle: a launched server stopped because no task used it for Config.LaunchIdle.
var errIdle = errors.New("launched server idle")

// errHandBack: the task waited on a server still queued for GPUs while another replica on the
// host serves its model; it goes back to the queue for that replica. `make chaos` found a
// replica holding eight tasks for minutes behind a claim that could not be granted.
var errHandBack = errors.New("handed back: another replica serves this model now")
