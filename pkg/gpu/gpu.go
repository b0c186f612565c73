// Package gpu is shoal's view of a host's GPUs: their inventory (from NVML or declared), and
// the plain types that placement, model-file sizing and leases share (memory, links, variants,
// shares and allocations). Its subpackages hold one job each: modelfile sizes a variant from
// its files, placement says where it fits next to the live leases (pure functions), and lease
// claims GPUs atomically in the gpu-leases KV bucket.
//
// Placement works on a ledger of claims, not on live memory readings: a card's free memory
// is its total, minus a reserve, minus the live leases on it.
package gpu

import "time"

// MiB is an amount of GPU memory in mebibytes.
type MiB int64

// GiB is 1024 MiB.
const GiB MiB = 1024

// Link is how directly two GPUs of a host are connected, best last (NVML topology levels).
type Link int

const (
	LinkUnknown     Link = iota
	LinkCrossCPU         // across CPU sockets (NVML SYSTEM)
	LinkSameCPU          // same NUMA node, through the CPU's host bridges (NVML NODE)
	LinkHostBridge       // through one host bridge (NVML HOSTBRIDGE)
	LinkMultiSwitch      // through several PCIe switches (NVML MULTIPLE)
	LinkSameSwitch       // behind one PCIe switch (NVML SINGLE)
	LinkSameBoard        // two GPUs of one board (NVML INTERNAL)
	LinkNVLink           // joined by NVLink
)

// GPU is one card as discovery sees it.
type GPU struct {
	Index    int    `json:"index"` // NVML (PCI) order
	UUID     string `json:"uuid"`  // what CUDA_VISIBLE_DEVICES names
	Name     string `json:"name"`
	TotalMiB MiB    `json:"total_mib"`
	// FreeMiB is what NVML read at discovery; placement uses the ledger, this is a check.
	FreeMiB MiB `json:"free_mib"`
}

// Inventory is one host's GPUs, published to the gpu-inventory bucket under the host's name.
type Inventory struct {
	Host string `json:"host"`
	GPUs []GPU  `json:"gpus"`
	// Links[i][j] connects GPUs[i] and GPUs[j]; symmetric; nil means all LinkUnknown.
	Links [][]Link `json:"links,omitempty"`
	// ReserveMiB stays free on every card (driver, CUDA context, fragmentation).
	ReserveMiB MiB `json:"reserve_mib"`
	// Source is "nvml" or "declared".
	Source       string    `json:"source"`
	DiscoveredAt time.Time `json:"discovered_at"`
}

// Share is the memory one lease holds on one GPU.
type Share struct {
	UUID string `json:"uuid"`
	MiB  MiB    `json:"mib"`
}

// LeaseState is a lease's lifecycle: a LOADING lease's GPUs take no second load.
type LeaseState string

const (
	LeaseLoading LeaseState = "loading"
	LeaseReady   LeaseState = "ready"
)

// Allocation is one live lease in a host's ledger.
type Allocation struct {
	Holder  string     `json:"holder"`  // generator replica id
	Model   string     `json:"model"`   // model name from the run config
	Variant string     `json:"variant"` // variant name
	Shares  []Share    `json:"shares"`  // all GPUs of the group, granted together
	State   LeaseState `json:"state"`
	Expires time.Time  `json:"expires"` // past this the entry is free
	// Revision is the ledger revision the granting write was made over, fixed for the
	// lease's life: with Holder it names one grant (fencing: a holder acts only while the
	// ledger holds its entry with this revision).
	Revision uint64 `json:"revision"`
}

// Variant is one way to serve a model, in the run config's order of preference (Q8 on two
// cards, then Q4 on one).
type Variant struct {
	Name string `json:"name"`
	// NeedMiB is the memory the whole variant needs: weights + KV cache for its context.
	NeedMiB MiB `json:"need_mib"`
	// PerGPUOverheadMiB is added on every GPU the variant spans (CUDA context, activations).
	PerGPUOverheadMiB MiB `json:"per_gpu_overhead_mib"`
	// GroupSizes are the GPU counts the server can split across (tensor parallel sizes);
	// empty means 1, 2, 4, 8.
	GroupSizes []int `json:"group_sizes,omitempty"`
}

// String names the link as inventory files spell it ("nvlink", "same-switch", …).
func (l Link) String() string { return linkName(l) }
