//go:build !cgo

package gpu

import "fmt"

// Without cgo go-nvml cannot be built, so a static binary (CGO_ENABLED=0, as in a scratch
// container image) discovers no GPUs and uses a declared inventory instead.

// Discover reports ErrNoNVML: this binary was built without cgo.
func Discover(host string) (Inventory, error) {
	return Inventory{}, fmt.Errorf("discover GPUs of %s: %w (built without cgo)", host, ErrNoNVML)
}

// ProcessMemory reports ErrNoNVML: this binary was built without cgo.
func ProcessMemory(uuid string) (map[int]MiB, error) {
	return nil, fmt.Errorf("process memory on %s: %w (built without cgo)", uuid, ErrNoNVML)
}

// UsedByProcesses reports ErrNoNVML: this binary was built without cgo.
func UsedByProcesses(uuid string) (MiB, error) {
	return 0, fmt.Errorf("process memory on %s: %w (built without cgo)", uuid, ErrNoNVML)
}
