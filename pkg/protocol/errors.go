package protocol

import "errors"

var (
	// ErrTooLarge: a body is over MaxBodyBytes.
	ErrTooLarge = errors.New("message body too large")
	// ErrMalformed: a body is not the JSON object its subject expects.
	ErrMalformed = errors.New("malformed message body")
	// ErrUnknownVersion: a body's "v" is not Version.
	ErrUnknownVersion = errors.New("unknown message version")
	// ErrBadRunID: a run id does not match [a-z0-9-]{1,64}.
	ErrBadRunID = errors.New("invalid run id")
	// ErrBadPrefix: a subject prefix is not dot-separated tokens.
	ErrBadPrefix = errors.New("invalid subject prefix")
)
