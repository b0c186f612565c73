package gpu

import "errors"

// Sentinels of inventory, discovery and VRAM estimation; check them with errors.Is.
var (
	// ErrNoNVML means the NVML library or the NVIDIA driver is not on this machine: fall back
	// to a declared inventory.
	ErrNoNVML = errors.New("nvml not available")
	// ErrInvalidInventory means a declared spec, an inventory file or a discovered inventory
	// breaks a rule placement relies on (unique UUIDs, positive memory, symmetric links).
	ErrInvalidInventory = errors.New("invalid gpu inventory")
	// ErrModelFile means a model file is truncated, corrupt, or claims sizes past our limits.
	ErrModelFile = errors.New("unreadable model file")
	// ErrUnsupportedModel means a well-formed model file that cannot be sized: an unknown
	// tensor type, or no architecture metadata for the KV cache.
	ErrUnsupportedModel = errors.New("unsupported model")
)
