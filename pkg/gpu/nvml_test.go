//go:build cgo

package gpu

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// TestDiscoverHere runs the real library: on a machine without NVML (CI, this one) it must
// say so with ErrNoNVML; on a GPU machine it must find at least one GPU with a UUID.
func TestDiscoverHere(t *testing.T) {
	inv, err := Discover("here")
	if err != nil {
		if !errors.Is(err, ErrNoNVML) {
			t.Fatalf("Discover() = %v, want success or ErrNoNVML", err)
		}
		t.Logf("no NVML here: %v", err)
		return
	}
	if len(inv.GPUs) == 0 || inv.GPUs[0].UUID == "" {
		t.Fatalf("Discover() found %+v, want at least one GPU with a UUID", inv.GPUs)
	}
	t.Logf("found %d GPUs: %+v, links %v", len(inv.GPUs), inv.GPUs, inv.Links)
	for _, g := range inv.GPUs {
		used, err := UsedByProcesses(g.UUID)
		if err != nil {
			t.Errorf("UsedByProcesses(%s): %v", g.UUID, err)
		}
		t.Logf("%s: %d MiB used by compute processes", g.UUID, used)
	}
}

func TestProcessMemoryHere(t *testing.T) {
	if _, err := UsedByProcesses("GPU-00000000-0000-0000-0000-000000000000"); err == nil {
		t.Fatal("UsedByProcesses(made-up uuid) = nil error")
	} else if !errors.Is(err, ErrNoNVML) {
		t.Logf("NVML present: %v", err) // a real NVML rejects the made-up UUID
	}
}

// The DGX H100 mock: eight H100 80GB whose 18 NVLinks each end at an NVSwitch; the two halves
// hang off different CPUs. The mock wires identity and memory; topology, PCI addresses and
// NVLink are set here.
func newDGXH100(t *testing.T) *server.Server {
	t.Helper()
	s := dgxh100.New()
	for i, d := range s.Devices {
		dev := d.(*server.Device)
		dev.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
			return nvml.PciInfo{Bus: uint32(0x18 + 0x10*i)}, nvml.SUCCESS
		}
		dev.GetTopologyCommonAncestorFunc = func(other nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
			if i/4 == other.(*server.Device).Index/4 {
				return nvml.TOPOLOGY_NODE, nvml.SUCCESS
			}
			return nvml.TOPOLOGY_SYSTEM, nvml.SUCCESS
		}
		dev.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
			if link >= 18 {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return nvml.FEATURE_ENABLED, nvml.SUCCESS
		}
		dev.GetNvLinkRemotePciInfoFunc = func(link int) (nvml.PciInfo, nvml.Return) {
			return nvml.PciInfo{Bus: uint32(0xe0 + link%4)}, nvml.SUCCESS // one of four NVSwitches
		}
		dev.GetNvLinkRemoteDeviceTypeFunc = func(int) (nvml.IntNvLinkDeviceType, nvml.Return) {
			return nvml.NVLINK_DEVICE_TYPE_SWITCH, nvml.SUCCESS
		}
	}
	return s
}

func TestDiscoverWithDGXH100(t *testing.T) {
	s := newDGXH100(t)
	inv, err := DiscoverWith(s, "dgx")
	if err != nil {
		t.Fatalf("DiscoverWith: %v", err)
	}
	if len(inv.GPUs) != 8 {
		t.Fatalf("found %d GPUs, want 8", len(inv.GPUs))
	}
	uuids := map[string]bool{}
	for i, g := range inv.GPUs {
		want := s.Devices[i].(*server.Device).UUID
		if g.UUID != want || g.Index != i || g.Name != "NVIDIA H100 80GB HBM3" || g.TotalMiB != 80*GiB {
			t.Errorf("gpu %d = %+v, want uuid %s, H100 80GB HBM3, %d MiB", i, g, want, 80*GiB)
		}
		uuids[g.UUID] = true
	}
	if len(uuids) != 8 {
		t.Errorf("%d distinct UUIDs, want 8", len(uuids))
	}
	if inv.Source != "nvml" || inv.Host != "dgx" || inv.DiscoveredAt.IsZero() {
		t.Errorf("source %q host %q discovered %v", inv.Source, inv.Host, inv.DiscoveredAt)
	}
	for i := range 8 {
		for j := range 8 {
			want := LinkNVLink
			if i == j {
				want = LinkUnknown
			}
			if got := inv.LinkBetween(i, j); got != want {
				t.Errorf("link %d-%d = %s, want %s (NVSwitch joins all)", i, j, linkName(got), linkName(want))
			}
		}
	}
	if n := len(s.ShutdownCalls()); n != 1 {
		t.Errorf("Shutdown called %d times, want 1", n)
	}
}

// fakeCard is a mock PCIe card at a PCI bus number.
type fakeCard struct {
	name string
	mib  uint64
	bus  uint32
	// peerLinks maps NVLink number to the bus of the GPU at its far end (an NVLink bridge).
	peerLinks map[int]uint32
}

// newMachine builds a mock host from cards and a topology function over card indices.
func newMachine(cards []fakeCard, topo func(i, j int) nvml.GpuTopologyLevel) *mock.Interface {
	devs := make([]*mock.Device, len(cards))
	for i, c := range cards {
		d := &mock.Device{}
		d.GetUUIDFunc = func() (string, nvml.Return) {
			return fmt.Sprintf("GPU-%08x-0000-0000-0000-%012d", c.bus, i), nvml.SUCCESS
		}
		d.GetNameFunc = func() (string, nvml.Return) { return c.name, nvml.SUCCESS }
		d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: c.mib << 20, Free: (c.mib - 300) << 20, Used: 300 << 20}, nvml.SUCCESS
		}
		d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return nvml.PciInfo{Bus: c.bus}, nvml.SUCCESS }
		d.GetNvLinkStateFunc = func(link int) (nvml.EnableState, nvml.Return) {
			if c.peerLinks == nil {
				return 0, nvml.ERROR_NOT_SUPPORTED
			}
			if _, ok := c.peerLinks[link]; ok {
				return nvml.FEATURE_ENABLED, nvml.SUCCESS
			}
			if link < 4 {
				return nvml.FEATURE_DISABLED, nvml.SUCCESS
			}
			return 0, nvml.ERROR_INVALID_ARGUMENT
		}
		d.GetNvLinkRemotePciInfoFunc = func(link int) (nvml.PciInfo, nvml.Return) {
			return nvml.PciInfo{Bus: c.peerLinks[link]}, nvml.SUCCESS
		}
		devs[i] = d
	}
	index := func(d nvml.Device) int {
		for i, x := range devs {
			if x == d {
				return i
			}
		}
		return -1
	}
	for i, d := range devs {
		d.GetTopologyCommonAncestorFunc = func(other nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
			return topo(i, index(other)), nvml.SUCCESS
		}
	}
	return &mock.Interface{
		InitFunc:           func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:       func() nvml.Return { return nvml.SUCCESS },
		DeviceGetCountFunc: func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= len(devs) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devs[i], nvml.SUCCESS
		},
		DeviceGetHandleByUUIDFunc: func(uuid string) (nvml.Device, nvml.Return) {
			for _, d := range devs {
				if u, _ := d.GetUUID(); u == uuid {
					return d, nvml.SUCCESS
				}
			}
			return nil, nvml.ERROR_NOT_FOUND
		},
	}
}

func TestDiscoverWithMachines(t *testing.T) {
	const (
		gtx1080ti = "NVIDIA GeForce GTX 1080 Ti"
		rtx3090   = "NVIDIA GeForce RTX 3090"
	)
	tests := []struct {
		name     string
		cards    []fakeCard
		topo     func(i, j int) nvml.GpuTopologyLevel
		wantMiB  []MiB
		wantLink map[[2]int]Link // every pair i<j
	}{
		{
			name:     "one GTX 1080 Ti",
			cards:    []fakeCard{{name: gtx1080ti, mib: 11264, bus: 0x01}},
			wantMiB:  []MiB{11264},
			wantLink: map[[2]int]Link{},
		},
		{
			name: "two RTX 3090 with an NVLink bridge",
			cards: []fakeCard{
				{name: rtx3090, mib: 24576, bus: 0x01, peerLinks: map[int]uint32{0: 0x21, 1: 0x21, 2: 0x21, 3: 0x21}},
				{name: rtx3090, mib: 24576, bus: 0x21, peerLinks: map[int]uint32{0: 0x01, 1: 0x01, 2: 0x01, 3: 0x01}},
			},
			topo:     func(i, j int) nvml.GpuTopologyLevel { return nvml.TOPOLOGY_HOSTBRIDGE },
			wantMiB:  []MiB{24576, 24576},
			wantLink: map[[2]int]Link{{0, 1}: LinkNVLink},
		},
		{
			name: "two RTX 3090 without a bridge",
			cards: []fakeCard{
				{name: rtx3090, mib: 24576, bus: 0x01},
				{name: rtx3090, mib: 24576, bus: 0x21},
			},
			topo:     func(i, j int) nvml.GpuTopologyLevel { return nvml.TOPOLOGY_NODE },
			wantMiB:  []MiB{24576, 24576},
			wantLink: map[[2]int]Link{{0, 1}: LinkSameCPU},
		},
		{
			// Two PCIe switches of two cards each, on one socket's two root ports.
			name: "four GTX 1080 Ti behind two PCIe switches",
			cards: []fakeCard{
				{name: gtx1080ti, mib: 11264, bus: 0x02},
				{name: gtx1080ti, mib: 11264, bus: 0x03},
				{name: gtx1080ti, mib: 11264, bus: 0x82},
				{name: gtx1080ti, mib: 11264, bus: 0x83},
			},
			topo: func(i, j int) nvml.GpuTopologyLevel {
				if i/2 == j/2 {
					return nvml.TOPOLOGY_SINGLE
				}
				return nvml.TOPOLOGY_SYSTEM
			},
			wantMiB: []MiB{11264, 11264, 11264, 11264},
			wantLink: map[[2]int]Link{
				{0, 1}: LinkSameSwitch, {2, 3}: LinkSameSwitch,
				{0, 2}: LinkCrossCPU, {0, 3}: LinkCrossCPU, {1, 2}: LinkCrossCPU, {1, 3}: LinkCrossCPU,
			},
		},
		{
			name: "every topology level",
			cards: []fakeCard{
				{name: "a", mib: 1024, bus: 1}, {name: "b", mib: 1024, bus: 2}, {name: "c", mib: 1024, bus: 3},
				{name: "d", mib: 1024, bus: 4}, {name: "e", mib: 1024, bus: 5},
			},
			topo: func(i, j int) nvml.GpuTopologyLevel {
				return map[[2]int]nvml.GpuTopologyLevel{
					{0, 1}: nvml.TOPOLOGY_INTERNAL, {0, 2}: nvml.TOPOLOGY_SINGLE, {0, 3}: nvml.TOPOLOGY_MULTIPLE,
					{0, 4}: nvml.TOPOLOGY_HOSTBRIDGE, {1, 2}: nvml.TOPOLOGY_NODE, {1, 3}: nvml.TOPOLOGY_SYSTEM,
					{1, 4}: 77, // a level this code does not know
				}[[2]int{min(i, j), max(i, j)}]
			},
			wantMiB: []MiB{1024, 1024, 1024, 1024, 1024},
			wantLink: map[[2]int]Link{
				{0, 1}: LinkSameBoard, {0, 2}: LinkSameSwitch, {0, 3}: LinkMultiSwitch, {0, 4}: LinkHostBridge,
				{1, 2}: LinkSameCPU, {1, 3}: LinkCrossCPU, {1, 4}: LinkUnknown,
				{2, 3}: LinkSameBoard, {2, 4}: LinkSameBoard, {3, 4}: LinkSameBoard, // map's zero: INTERNAL
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lib := newMachine(tt.cards, tt.topo)
			inv, err := DiscoverWith(lib, "box")
			if err != nil {
				t.Fatalf("DiscoverWith: %v", err)
			}
			var got []MiB
			for i, g := range inv.GPUs {
				got = append(got, g.TotalMiB)
				if g.Name != tt.cards[i].name || g.FreeMiB != g.TotalMiB-300 || !strings.HasPrefix(g.UUID, "GPU-") {
					t.Errorf("gpu %d = %+v", i, g)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantMiB) {
				t.Errorf("totals %v, want %v", got, tt.wantMiB)
			}
			if len(tt.cards) == 1 && inv.Links != nil {
				t.Errorf("one GPU has links %v, want nil", inv.Links)
			}
			for i := range inv.GPUs {
				for j := i + 1; j < len(inv.GPUs); j++ {
					if got, want := inv.LinkBetween(i, j), tt.wantLink[[2]int{i, j}]; got != want {
						t.Errorf("link %d-%d = %s, want %s", i, j, linkName(got), linkName(want))
					}
				}
			}
		})
	}
}

func TestDiscoverWithInitFailures(t *testing.T) {
	tests := []struct {
		ret    nvml.Return
		noNVML bool
	}{
		{nvml.ERROR_LIBRARY_NOT_FOUND, true},
		{nvml.ERROR_DRIVER_NOT_LOADED, true},
		{nvml.ERROR_NO_PERMISSION, false},
		{nvml.ERROR_LIB_RM_VERSION_MISMATCH, false},
	}
	for _, tt := range tests {
		t.Run(tt.ret.Error(), func(t *testing.T) {
			lib := &mock.Interface{InitFunc: func() nvml.Return { return tt.ret }}
			_, err := DiscoverWith(lib, "box")
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, ErrNoNVML) != tt.noNVML {
				t.Errorf("errors.Is(%q, ErrNoNVML) = %v, want %v", err, !tt.noNVML, tt.noNVML)
			}
			if !errors.Is(err, tt.ret) {
				t.Errorf("error %q does not wrap %v", err, tt.ret)
			}
			if len(lib.ShutdownCalls()) != 0 {
				t.Error("Shutdown after a failed Init")
			}
			if _, err := ProcessMemoryWith(lib, "GPU-x"); errors.Is(err, ErrNoNVML) != tt.noNVML {
				t.Errorf("ProcessMemoryWith: %v, want ErrNoNVML %v", err, tt.noNVML)
			}
		})
	}
}

func TestDiscoverWithDeviceErrors(t *testing.T) {
	cards := []fakeCard{{name: "a", mib: 1024, bus: 1}, {name: "b", mib: 1024, bus: 2}}
	same := func(i, j int) nvml.GpuTopologyLevel { return nvml.TOPOLOGY_SINGLE }
	tests := []struct {
		name    string
		breakIt func(lib *mock.Interface)
		want    string
	}{
		{"count", func(lib *mock.Interface) {
			lib.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
		}, "device count"},
		{"handle", func(lib *mock.Interface) {
			lib.DeviceGetHandleByIndexFunc = func(int) (nvml.Device, nvml.Return) { return nil, nvml.ERROR_GPU_IS_LOST }
		}, "gpu 0: handle"},
		{"uuid", func(lib *mock.Interface) {
			d, _ := lib.DeviceGetHandleByIndex(1)
			d.(*mock.Device).GetUUIDFunc = func() (string, nvml.Return) { return "", nvml.ERROR_GPU_IS_LOST }
		}, "gpu 1: uuid"},
		{"memory", func(lib *mock.Interface) {
			d, _ := lib.DeviceGetHandleByIndex(1)
			d.(*mock.Device).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_UNKNOWN }
		}, "gpu 1: memory of GPU-"},
		{"same uuid twice", func(lib *mock.Interface) {
			d, _ := lib.DeviceGetHandleByIndex(1)
			d.(*mock.Device).GetUUIDFunc = func() (string, nvml.Return) { return "GPU-00000001-0000-0000-0000-000000000000", nvml.SUCCESS }
		}, "repeats gpu 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lib := newMachine(cards, same)
			tt.breakIt(lib)
			_, err := DiscoverWith(lib, "box")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if n := len(lib.ShutdownCalls()); n != 1 {
				t.Errorf("Shutdown called %d times, want 1", n)
			}
		})
	}
}

// Topology is advice: a driver that cannot describe it leaves links unknown, not discovery
// failed; and PCI addresses NVML does not give cannot match NVLink peers.
func TestDiscoverWithPartialTopology(t *testing.T) {
	cards := []fakeCard{
		{name: "a", mib: 1024, bus: 1, peerLinks: map[int]uint32{0: 2}},
		{name: "b", mib: 1024, bus: 2, peerLinks: map[int]uint32{0: 1}},
	}
	lib := newMachine(cards, nil)
	for i := range 2 {
		d, _ := lib.DeviceGetHandleByIndex(i)
		md := d.(*mock.Device)
		md.GetTopologyCommonAncestorFunc = func(nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
			return 0, nvml.ERROR_NOT_SUPPORTED
		}
		md.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return nvml.PciInfo{}, nvml.ERROR_NOT_SUPPORTED }
		// The far end is then no GPU we know; the driver says it is a CPU, not a switch.
		md.GetNvLinkRemoteDeviceTypeFunc = func(int) (nvml.IntNvLinkDeviceType, nvml.Return) {
			return nvml.NVLINK_DEVICE_TYPE_IBMNPU, nvml.SUCCESS
		}
	}
	inv, err := DiscoverWith(lib, "box")
	if err != nil {
		t.Fatalf("DiscoverWith: %v", err)
	}
	if got := inv.LinkBetween(0, 1); got != LinkUnknown {
		t.Errorf("link = %s, want unknown", linkName(got))
	}
}

func TestProcessMemoryWith(t *testing.T) {
	s := newDGXH100(t)
	dev := s.Devices[3].(*server.Device)
	dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{
			{Pid: 4242, UsedGpuMemory: 70 << 30},                  // a vLLM server
			{Pid: 5150, UsedGpuMemory: 1<<20 + 1},                 // rounds up to 2 MiB
			{Pid: 5150, UsedGpuMemory: 3 << 20, GpuInstanceId: 1}, // same process, second context
		}, nvml.SUCCESS
	}
	got, err := ProcessMemoryWith(s, dev.UUID)
	if err != nil {
		t.Fatalf("ProcessMemoryWith: %v", err)
	}
	want := map[int]MiB{4242: 70 * GiB, 5150: 5}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ProcessMemoryWith = %v, want %v", got, want)
	}
	sum, err := UsedByProcessesWith(s, dev.UUID)
	if err != nil || sum != 70*GiB+5 {
		t.Errorf("UsedByProcessesWith = %d, %v; want %d", sum, err, 70*GiB+5)
	}

	idle := s.Devices[0].(*server.Device)
	idle.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
	if sum, err := UsedByProcessesWith(s, idle.UUID); err != nil || sum != 0 {
		t.Errorf("idle gpu: %d, %v; want 0, nil", sum, err)
	}

	hidden := s.Devices[1].(*server.Device)
	hidden.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{{Pid: 7, UsedGpuMemory: ^uint64(0)}}, nvml.SUCCESS
	}
	if _, err := UsedByProcessesWith(s, hidden.UUID); err == nil || !strings.Contains(err.Error(), "pid 7") {
		t.Errorf("unreported memory: %v, want an error naming pid 7", err)
	}

	broken := s.Devices[2].(*server.Device)
	broken.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_GPU_IS_LOST }
	if _, err := ProcessMemoryWith(s, broken.UUID); !errors.Is(err, nvml.ERROR_GPU_IS_LOST) {
		t.Errorf("lost gpu: %v, want ERROR_GPU_IS_LOST", err)
	}

	if _, err := ProcessMemoryWith(s, "GPU-nope"); err == nil || !strings.Contains(err.Error(), "find gpu") {
		t.Errorf("unknown uuid: %v, want 'find gpu'", err)
	}
	if n, m := len(s.InitCalls()), len(s.ShutdownCalls()); n != m {
		t.Errorf("%d Init calls but %d Shutdown calls", n, m)
	}
}
