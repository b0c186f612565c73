package lease

import "errors"

var (
	// ErrLost: the lease's entry is gone from the ledger, replaced, or past its expiry. The
	// holder must stop using the GPUs: they may already be someone else's.
	ErrLost = errors.New("gpu lease lost")
	// ErrNeverFits: no variant fits the host even with all its GPUs free, so waiting is futile.
	ErrNeverFits = errors.New("no variant fits this host")
	// ErrHeld: the client already holds a lease, or is claiming one; a holder holds at most one.
	ErrHeld = errors.New("client already holds a gpu lease")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("gpu lease client closed")
	// ErrNoLedger: the host has no ledger yet (nobody has claimed its GPUs).
	ErrNoLedger = errors.New("no gpu ledger for host")
	// ErrLedger: a ledger in the bucket cannot be read (unknown version, malformed, another host's).
	ErrLedger = errors.New("unreadable gpu ledger")
)
