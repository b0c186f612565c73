//go:build cgo

package gpu

import (
	"fmt"
	"math"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Discover reads this host's GPUs through NVML: UUIDs, names, memory, and how each pair is
// connected. Where NVML or the driver is absent it returns an error matching ErrNoNVML, and
// the caller falls back to a declared inventory. ReserveMiB is left for the caller to set.
//
// go-nvml loads libnvidia-ml at run time, so this builds (with cgo) and runs on machines
// without a GPU.
func Discover(host string) (Inventory, error) {
	return DiscoverWith(nvml.New(), host)
}

// nvmlLib is the part of go-nvml that discovery uses; nvml.New() and go-nvml's mock servers
// (pkg/nvml/mock/dgxh100 …) satisfy it. Of each nvml.Device it calls only GetUUID, GetName,
// GetMemoryInfo, GetPciInfo, GetTopologyCommonAncestor, GetNvLinkState,
// GetNvLinkRemotePciInfo, GetNvLinkRemoteDeviceType and GetComputeRunningProcesses: a mock
// must wire those Func fields.
type nvmlLib interface {
	Init() nvml.Return
	Shutdown() nvml.Return
	DeviceGetCount() (int, nvml.Return)
	DeviceGetHandleByIndex(int) (nvml.Device, nvml.Return)
	DeviceGetHandleByUUID(string) (nvml.Device, nvml.Return)
}

// DiscoverWith is Discover over a given library (a mock in tests). It initializes and shuts
// down the library itself.
func DiscoverWith(lib nvmlLib, host string) (inv Inventory, err error) {
	if err := initNVML(lib); err != nil {
		return Inventory{}, fmt.Errorf("discover gpus of %s: %w", host, err)
	}
	// A failed shutdown leaves a library handle open in this process; the inventory is still
	// right, so it is not worth failing discovery for.
	defer lib.Shutdown()

	count, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return Inventory{}, fmt.Errorf("discover gpus of %s: device count: %w", host, ret)
	}
	inv = Inventory{Host: host, Source: "nvml", DiscoveredAt: time.Now().UTC(), GPUs: make([]GPU, 0, count)}
	devs := make([]nvml.Device, 0, count)
	for i := range count {
		dev, g, err := readDevice(lib, i)
		if err != nil {
			return Inventory{}, fmt.Errorf("discover gpus of %s: gpu %d: %w", host, i, err)
		}
		devs = append(devs, dev)
		inv.GPUs = append(inv.GPUs, g)
	}
	if count > 1 {
		inv.Links = readLinks(devs)
	}
	if err := inv.Validate(); err != nil {
		return Inventory{}, fmt.Errorf("discover gpus of %s: %w", host, err)
	}
	return inv, nil
}

// initNVML maps the two ways a machine lacks NVIDIA GPUs, no library and a library without a
// loaded driver (a container image built for GPUs running on a CPU node), to ErrNoNVML.
func initNVML(lib nvmlLib) error {
	switch ret := lib.Init(); ret {
	case nvml.SUCCESS:
		return nil
	case nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED:
		return fmt.Errorf("nvml init: %w: %w", ret, ErrNoNVML)
	default:
		return fmt.Errorf("nvml init: %w", ret)
	}
}

func readDevice(lib nvmlLib, i int) (nvml.Device, GPU, error) {
	dev, ret := lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return nil, GPU{}, fmt.Errorf("handle: %w", ret)
	}
	uuid, ret := dev.GetUUID()
	if ret != nvml.SUCCESS {
		return nil, GPU{}, fmt.Errorf("uuid: %w", ret)
	}
	name, ret := dev.GetName()
	if ret != nvml.SUCCESS {
		return nil, GPU{}, fmt.Errorf("name of %s: %w", uuid, ret)
	}
	mem, ret := dev.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return nil, GPU{}, fmt.Errorf("memory of %s: %w", uuid, ret)
	}
	return dev, GPU{
		Index:    i,
		UUID:     uuid,
		Name:     name,
		TotalMiB: MiB(mem.Total / bytesPerMiB),
		FreeMiB:  MiB(mem.Free / bytesPerMiB),
	}, nil
}

// readLinks fills the link matrix from the PCIe topology, then raises NVLinked pairs to
// LinkNVLink. Topology is a preference, not a requirement: a pair NVML cannot describe is
// LinkUnknown rather than a failed discovery.
func readLinks(devs []nvml.Device) [][]Link {
	n := len(devs)
	links := make([][]Link, n)
	for i := range links {
		links[i] = make([]Link, n)
	}
	for i := range n {
		for j := i + 1; j < n; j++ {
			level, ret := devs[i].GetTopologyCommonAncestor(devs[j])
			if ret == nvml.SUCCESS {
				links[i][j] = linkFromTopology(level)
				links[j][i] = links[i][j]
			}
		}
	}
	nvlinked, onSwitch := readNVLinks(devs)
	for i := range n {
		for j := i + 1; j < n; j++ {
			// On NVSwitch machines (DGX/HGX) each GPU's links end at a switch, never at a
			// peer, and every GPU on the switches reaches every other at full NVLink speed.
			if nvlinked[i][j] || nvlinked[j][i] || (onSwitch[i] && onSwitch[j]) {
				links[i][j], links[j][i] = LinkNVLink, LinkNVLink
			}
		}
	}
	return links
}

// linkFromTopology maps NVML's common-ancestor levels to Links.
func linkFromTopology(level nvml.GpuTopologyLevel) Link {
	switch level {
	case nvml.TOPOLOGY_INTERNAL:
		return LinkSameBoard
	case nvml.TOPOLOGY_SINGLE:
		return LinkSameSwitch
	case nvml.TOPOLOGY_MULTIPLE:
		return LinkMultiSwitch
	case nvml.TOPOLOGY_HOSTBRIDGE:
		return LinkHostBridge
	case nvml.TOPOLOGY_NODE:
		return LinkSameCPU
	case nvml.TOPOLOGY_SYSTEM:
		return LinkCrossCPU
	default:
		return LinkUnknown
	}
}

type pciAddr struct{ domain, bus, device uint32 }

// readNVLinks walks every active NVLink of every GPU: a link whose far end is another GPU of
// the host joins that pair; a link ending at an NVSwitch puts the GPU on the switch fabric.
// Links to CPUs (IBM NPU) are not GPU peers and are ignored.
func readNVLinks(devs []nvml.Device) (nvlinked [][]bool, onSwitch []bool) {
	n := len(devs)
	nvlinked = make([][]bool, n)
	for i := range nvlinked {
		nvlinked[i] = make([]bool, n)
	}
	onSwitch = make([]bool, n)

	// Peers are found by PCI address; if NVML reports none, or the same one twice, no link
	// end can be matched to a GPU and only the switch test is left.
	byAddr := make(map[pciAddr]int, n)
	for i, d := range devs {
		pci, ret := d.GetPciInfo()
		if ret != nvml.SUCCESS {
			byAddr = nil
			break
		}
		a := pciAddr{pci.Domain, pci.Bus, pci.Device}
		if _, dup := byAddr[a]; dup {
			byAddr = nil
			break
		}
		byAddr[a] = i
	}

	for i, d := range devs {
		for link := range nvml.NVLINK_MAX_LINKS {
			state, ret := d.GetNvLinkState(link)
			if ret == nvml.ERROR_NOT_SUPPORTED {
				break // this GPU has no NVLink at all (GeForce, most PCIe cards)
			}
			if ret != nvml.SUCCESS || state != nvml.FEATURE_ENABLED {
				continue // past the GPU's last link, or a link that is down
			}
			remote, ret := d.GetNvLinkRemotePciInfo(link)
			if ret != nvml.SUCCESS {
				continue
			}
			if j, ok := byAddr[pciAddr{remote.Domain, remote.Bus, remote.Device}]; ok && j != i {
				nvlinked[i][j] = true
				continue
			}
			// Not a GPU of ours: an NVSwitch, unless NVML says it is something else. Drivers
			// too old to say are treated as switch ports, the common case on multi-GPU boxes.
			kind, ret := d.GetNvLinkRemoteDeviceType(link)
			if ret != nvml.SUCCESS || kind == nvml.NVLINK_DEVICE_TYPE_SWITCH {
				onSwitch[i] = true
			}
		}
	}
	return nvlinked, onSwitch
}

// ProcessMemory is the GPU memory each compute process uses on the GPU with this UUID, by
// PID, rounded up to whole MiB. The launch backend checks a model server's real use against
// its lease with it (the lesson of Ollama's estimates: check, then correct). PIDs are in the
// host's PID namespace, as NVML reports them.
func ProcessMemory(uuid string) (map[int]MiB, error) {
	return ProcessMemoryWith(nvml.New(), uuid)
}

// ProcessMemoryWith is ProcessMemory over a given library (a mock in tests).
func ProcessMemoryWith(lib nvmlLib, uuid string) (map[int]MiB, error) {
	if err := initNVML(lib); err != nil {
		return nil, fmt.Errorf("process memory on %s: %w", uuid, err)
	}
	defer lib.Shutdown()
	dev, ret := lib.DeviceGetHandleByUUID(uuid)
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("process memory on %s: find gpu: %w", uuid, ret)
	}
	procs, ret := dev.GetComputeRunningProcesses()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("process memory on %s: %w", uuid, ret)
	}
	used := make(map[int]MiB, len(procs))
	for _, p := range procs {
		// NVML_VALUE_NOT_AVAILABLE (Windows WDDM, some vGPU): an unknown is not zero, and a
		// sum that silently skipped it would approve an overrun.
		if p.UsedGpuMemory == math.MaxUint64 { // (unsigned long long)NVML_VALUE_NOT_AVAILABLE
			return nil, fmt.Errorf("process memory on %s: pid %d: driver does not report its memory", uuid, p.Pid)
		}
		used[int(p.Pid)] += MiB((p.UsedGpuMemory + bytesPerMiB - 1) / bytesPerMiB)
	}
	return used, nil
}

// UsedByProcesses is the memory all compute processes use on the GPU with this UUID.
func UsedByProcesses(uuid string) (MiB, error) {
	return UsedByProcessesWith(nvml.New(), uuid)
}

// UsedByProcessesWith is UsedByProcesses over a given library (a mock in tests).
func UsedByProcessesWith(lib nvmlLib, uuid string) (MiB, error) {
	byPID, err := ProcessMemoryWith(lib, uuid)
	if err != nil {
		return 0, err
	}
	var sum MiB
	for _, m := range byPID {
		sum += m
	}
	return sum, nil
}
