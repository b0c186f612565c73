package planner

import "errors"

// ErrConfig: the replica's own configuration is unusable (Config.Validate).
var ErrConfig = errors.New("invalid planner config")
