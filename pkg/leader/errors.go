package leader

import "errors"

var (
	// ErrLost: a renewal found another holder at the key, or no renewal got through within
	// the lease's time; the holder must stop acting as owner.
	ErrLost = errors.New("ownership lease lost")
	// ErrReleased: the holder gave the lease up with Release.
	ErrReleased = errors.New("ownership lease released")
	// ErrNoOwner: nobody holds the key.
	ErrNoOwner = errors.New("no owner")
)
