package generator

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/shoal-run/shoal/pkg/gpu"
)

// inventory finds this host's GPUs for launched models: declared with Config.GPUs (a spec
// such as "4x11GiB", or an inventory file), else discovered through NVML. A host without
// GPUs is not an error: the replica serves every other backend, and says why it cannot
// launch models in the rejections of their tasks.
func inventory(spec, host string, log *slog.Logger) (inv gpu.Inventory, noGPUs string, err error) {
	file := isFile(spec)
	if host == "" && !file {
		if host, err = os.Hostname(); err != nil {
			return gpu.Inventory{}, "", fmt.Errorf("%w: no --host given, and the hostname is unknown: %w", ErrConfig, err)
		}
	}
	switch {
	case spec == noGPUsSpec:
		return gpu.Inventory{}, "this generator was started with --gpus " + noGPUsSpec + "; models with backend launch need a replica with GPUs", nil
	case spec == "":
		inv, err = gpu.Discover(host)
		if errors.Is(err, gpu.ErrNoNVML) {
			log.Info("no NVML on this host; models with backend launch will be rejected (declare GPUs with --gpus, e.g. 2x24GiB)", "host", host, "err", err)
			return gpu.Inventory{}, fmt.Sprintf("this generator has no GPUs (%v); start it on a host with NVIDIA GPUs, or declare them with --gpus", err), nil
		}
		if err != nil {
			log.Warn("gpu discovery failed; models with backend launch will be rejected", "host", host, "err", err)
			return gpu.Inventory{}, fmt.Sprintf("this generator could not read its GPUs: %v", err), nil
		}
	case file:
		if inv, err = gpu.LoadInventoryFile(spec); err != nil {
			return gpu.Inventory{}, "", fmt.Errorf("%w: --gpus: %w", ErrConfig, err)
		}
		if host == "" {
			if host = inv.Host; host == "" {
				if host, err = os.Hostname(); err != nil {
					return gpu.Inventory{}, "", fmt.Errorf("%w: no --host given, no host in %s, and the hostname is unknown: %w", ErrConfig, spec, err)
				}
			}
		}
		switch {
		case inv.Host == "":
			inv.Host = host
		case inv.Host != host:
			return gpu.Inventory{}, "", fmt.Errorf("%w: --gpus: inventory file %s is for host %q, and this generator is host %q; set --host to match", ErrConfig, spec, inv.Host, host)
		}
	default:
		if inv, err = gpu.ParseDeclared(host, spec); err != nil {
			return gpu.Inventory{}, "", fmt.Errorf("%w: --gpus: %w (want a spec such as 4x11GiB, or an inventory file)", ErrConfig, err)
		}
	}
	if inv.DiscoveredAt.IsZero() {
		inv.DiscoveredAt = time.Now().UTC()
	}
	if len(inv.GPUs) == 0 {
		log.Info("no GPUs on this host; models with backend launch will be rejected", "host", host)
		return gpu.Inventory{}, "this generator's host has no GPUs; start it on a host with NVIDIA GPUs, or declare them with --gpus", nil
	}
	return inv, "", nil
}

// noGPUsSpec as Config.GPUs gives a replica no GPUs, without asking NVML.
const noGPUsSpec = "none"

func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}
