package gpu

import "errors"

// Sentinels of inventory and discovery; check them with errors.Is.
var (
	// ErrNoNVML means the NVML library or the NVIDIA driver is not on this machine: fall back
	// to a declared inventory.
	ErrNoNVML = errors.New("nvml not available")
	// ErrInvalidInventory means a declared spec, an inventory file or a discovered inventory
	// breaks a rule placement relies on (unique UUIDs, positive memory, symmetric links).
	ErrInvalidInventory = errors.New("invalid gpu inventory")
)
