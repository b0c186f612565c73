package evaluator

import "errors"

// ErrConfig: the replica's own configuration is unusable (Config.Validate).
var ErrConfig = errors.New("invalid evaluator config")
