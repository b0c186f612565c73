package archive

import "errors"

// ErrReplaying: the archive has not folded RESULTS up to where the stream stood when it
// started, so it serves no samples and takes no snapshots yet; ask again shortly.
var ErrReplaying = errors.New("archive is replaying results; try again shortly")

// ErrConfig: the replica's own configuration is unusable (Config.Validate).
var ErrConfig = errors.New("invalid archive config")
