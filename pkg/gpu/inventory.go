package gpu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ParseDeclared builds the inventory of a host whose GPUs NVML cannot see (this machine, CI,
// a laptop) from a spec such as "4x11GiB", "2x24GiB,1x11GiB" or "8x80GiB:nvlink-pairs".
//
// A spec is comma-separated groups "<count>x<size><unit>", units GiB, GB (10^9 bytes), MiB
// or MB (10^6 bytes); sizes may have a decimal point ("10.5GiB"). An optional topology
// follows a colon: "nvlink-pairs" joins GPUs 0-1, 2-3, … by NVLink, "nvlink-all" joins every
// pair; other pairs are LinkSameCPU. Without a topology Links is nil (all LinkUnknown): a
// declared machine should not invent a preference it cannot know.
//
// ParseDeclared is pure: DiscoveredAt and ReserveMiB stay zero for the caller to set.
func ParseDeclared(host, spec string) (Inventory, error) {
	if host == "" {
		return Inventory{}, fmt.Errorf("declared gpus %q: empty host name: %w", spec, ErrInvalidInventory)
	}
	body, topology, hasTopology := strings.Cut(strings.TrimSpace(spec), ":")
	if strings.TrimSpace(body) == "" {
		return Inventory{}, fmt.Errorf("declared gpus %q: no gpus (want e.g. 2x24GiB): %w", spec, ErrInvalidInventory)
	}
	inv := Inventory{Host: host, Source: "declared"}
	for part := range strings.SplitSeq(body, ",") {
		part = strings.TrimSpace(part)
		count, size, err := parseDeclaredGroup(part)
		if err != nil {
			return Inventory{}, fmt.Errorf("declared gpus %q: %q: %w", spec, part, err)
		}
		if len(inv.GPUs)+count > maxDeclaredGPUs {
			return Inventory{}, fmt.Errorf("declared gpus %q: more than %d gpus on one host: %w", spec, maxDeclaredGPUs, ErrInvalidInventory)
		}
		for range count {
			i := len(inv.GPUs)
			inv.GPUs = append(inv.GPUs, GPU{
				Index:    i,
				UUID:     fmt.Sprintf("GPU-declared-%s-%d", host, i),
				Name:     fmt.Sprintf("declared-%d", i),
				TotalMiB: size,
				FreeMiB:  size,
			})
		}
	}
	if hasTopology {
		links, err := declaredLinks(len(inv.GPUs), strings.TrimSpace(topology))
		if err != nil {
			return Inventory{}, fmt.Errorf("declared gpus %q: %w", spec, err)
		}
		inv.Links = links
	}
	if err := inv.Validate(); err != nil {
		return Inventory{}, fmt.Errorf("declared gpus %q: %w", spec, err)
	}
	return inv, nil
}

// Limits of a declared spec: high enough for any one host sold today, low enough that a typo
// ("1000x24GiB", "24TiB") is caught before placement believes it.
const (
	maxDeclaredGPUs           = 64
	maxDeclaredMiB        MiB = 16 << 20 // 16 TiB per card
	bytesPerMiB               = 1 << 20
	maxInventoryFileBytes     = 4 << 20
)

// declaredUnits are a spec's memory units in bytes. GiB and MiB are binary, as NVML and
// nvidia-smi report memory; GB and MB are decimal (10^9, 10^6 bytes), for a size copied from a
// spec sheet or a cloud listing that means it that way.
var declaredUnits = map[string]int64{
	"GiB": 1 << 30,
	"GB":  1_000_000_000,
	"MiB": 1 << 20,
	"MB":  1_000_000,
}

func parseDeclaredGroup(part string) (int, MiB, error) {
	countText, sizeText, ok := strings.Cut(part, "x")
	if !ok {
		return 0, 0, fmt.Errorf("want <count>x<size><unit> such as 2x24GiB: %w", ErrInvalidInventory)
	}
	count, err := strconv.Atoi(countText)
	if err != nil || count < 1 {
		return 0, 0, fmt.Errorf("gpu count %q is not a positive whole number: %w", countText, ErrInvalidInventory)
	}
	// The number ends where the unit begins.
	end := strings.IndexFunc(sizeText, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if end == 0 || sizeText == "" {
		return 0, 0, fmt.Errorf("size %q has no number: %w", sizeText, ErrInvalidInventory)
	}
	if end < 0 {
		return 0, 0, fmt.Errorf("size %q has no unit (want GiB, GB, MiB or MB): %w", sizeText, ErrInvalidInventory)
	}
	number, unit := sizeText[:end], sizeText[end:]
	unitBytes, ok := declaredUnits[unit]
	if !ok {
		return 0, 0, fmt.Errorf("unknown unit %q (want GiB, GB, MiB or MB): %w", unit, ErrInvalidInventory)
	}
	// Exact decimal arithmetic: 11GB is 10490 MiB, not 10489 after a float rounds down.
	value, ok := new(big.Rat).SetString(number)
	if !ok || strings.Count(number, ".") > 1 {
		return 0, 0, fmt.Errorf("size %q is not a number: %w", number, ErrInvalidInventory)
	}
	mib := new(big.Int).Quo(
		new(big.Int).Mul(value.Num(), big.NewInt(unitBytes)),
		new(big.Int).Mul(value.Denom(), big.NewInt(bytesPerMiB)))
	if mib.Cmp(big.NewInt(int64(maxDeclaredMiB))) > 0 {
		return 0, 0, fmt.Errorf("size %s is more than %d TiB per gpu: %w", sizeText, maxDeclaredMiB>>20, ErrInvalidInventory)
	}
	if mib.Sign() <= 0 {
		return 0, 0, fmt.Errorf("size %s is less than 1 MiB: %w", sizeText, ErrInvalidInventory)
	}
	return count, MiB(mib.Int64()), nil
}

func declaredLinks(n int, topology string) ([][]Link, error) {
	var joined func(i, j int) bool
	switch topology {
	case "nvlink-pairs":
		joined = func(i, j int) bool { return i/2 == j/2 }
	case "nvlink-all":
		joined = func(i, j int) bool { return true }
	default:
		return nil, fmt.Errorf("unknown topology %q (want nvlink-pairs or nvlink-all): %w", topology, ErrInvalidInventory)
	}
	links := make([][]Link, n)
	for i := range links {
		links[i] = make([]Link, n)
		for j := range links[i] {
			switch {
			case i == j:
				links[i][j] = LinkUnknown
			case joined(i, j):
				links[i][j] = LinkNVLink
			default:
				links[i][j] = LinkSameCPU
			}
		}
	}
	return links, nil
}

// LoadInventoryFile reads a declared inventory from a JSON or YAML file with the Inventory's
// fields (host, gpus, links, reserve_mib, …) and validates it. Links may be numbers or names
// ("nvlink", "same-switch", "cross-cpu", …). A GPU's free_mib defaults to its total_mib, its
// index to its position, and source to "declared". Unknown fields are errors: a misspelt
// "reserve_mb" must not silently reserve nothing.
func LoadInventoryFile(path string) (Inventory, error) {
	f, err := os.Open(path)
	if err != nil {
		return Inventory{}, fmt.Errorf("inventory file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxInventoryFileBytes+1))
	if err != nil {
		return Inventory{}, fmt.Errorf("inventory file %s: %w", path, err)
	}
	if len(data) > maxInventoryFileBytes {
		return Inventory{}, fmt.Errorf("inventory file %s: larger than %d MiB: %w", path, maxInventoryFileBytes>>20, ErrInvalidInventory)
	}
	inv, err := parseInventory(data)
	if err != nil {
		return Inventory{}, fmt.Errorf("inventory file %s: %w", path, err)
	}
	return inv, nil
}

// parseInventory decodes YAML (JSON is YAML) into a generic tree, turns link names into
// numbers, and decodes that through encoding/json so the json tags of gpu.go are the one
// spelling of every field in both formats.
func parseInventory(data []byte) (Inventory, error) {
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		return Inventory{}, fmt.Errorf("parse: %v: %w", err, ErrInvalidInventory)
	}
	top, ok := tree.(map[string]any)
	if !ok {
		return Inventory{}, fmt.Errorf("want a mapping with host and gpus at the top: %w", ErrInvalidInventory)
	}
	if err := nameLinks(top); err != nil {
		return Inventory{}, err
	}
	asJSON, err := json.Marshal(top)
	if err != nil {
		return Inventory{}, fmt.Errorf("parse: %v: %w", err, ErrInvalidInventory)
	}
	dec := json.NewDecoder(bytes.NewReader(asJSON))
	dec.DisallowUnknownFields()
	var inv Inventory
	if err := dec.Decode(&inv); err != nil {
		return Inventory{}, fmt.Errorf("parse: %v: %w", err, ErrInvalidInventory)
	}
	if inv.Source == "" {
		inv.Source = "declared"
	}
	for i := range inv.GPUs {
		g := &inv.GPUs[i]
		if g.Index == 0 {
			g.Index = i
		}
		if g.FreeMiB == 0 {
			g.FreeMiB = g.TotalMiB
		}
	}
	if err := inv.Validate(); err != nil {
		return Inventory{}, err
	}
	return inv, nil
}

// linkNames are the names an inventory file may use for links, and what errors print.
var linkNames = map[string]Link{
	"unknown":      LinkUnknown,
	"cross-cpu":    LinkCrossCPU,
	"same-cpu":     LinkSameCPU,
	"host-bridge":  LinkHostBridge,
	"multi-switch": LinkMultiSwitch,
	"same-switch":  LinkSameSwitch,
	"same-board":   LinkSameBoard,
	"nvlink":       LinkNVLink,
}

func linkName(l Link) string {
	for name, v := range linkNames {
		if v == l {
			return name
		}
	}
	return strconv.Itoa(int(l))
}

func nameLinks(top map[string]any) error {
	rows, ok := top["links"].([]any)
	if !ok {
		return nil // absent, null, or a shape json decoding reports
	}
	for i, row := range rows {
		cells, ok := row.([]any)
		if !ok {
			continue
		}
		for j, cell := range cells {
			name, ok := cell.(string)
			if !ok {
				continue
			}
			l, ok := linkNames[name]
			if !ok {
				return fmt.Errorf("links[%d][%d]: unknown link %q (want nvlink, same-board, same-switch, multi-switch, host-bridge, same-cpu, cross-cpu or unknown): %w", i, j, name, ErrInvalidInventory)
			}
			cells[j] = int(l)
		}
	}
	return nil
}

// Validate checks what placement relies on: a host name, unique non-empty UUIDs (they become
// CUDA_VISIBLE_DEVICES), unique indices, positive memory with free within total, a reserve
// that leaves every card something, and Links either nil or square, symmetric and known.
func (inv Inventory) Validate() error {
	if inv.Host == "" {
		return fmt.Errorf("inventory: empty host name: %w", ErrInvalidInventory)
	}
	if inv.ReserveMiB < 0 {
		return fmt.Errorf("inventory of %s: negative reserve %d MiB: %w", inv.Host, inv.ReserveMiB, ErrInvalidInventory)
	}
	byUUID := make(map[string]int, len(inv.GPUs))
	byIndex := make(map[int]int, len(inv.GPUs))
	for i, g := range inv.GPUs {
		switch {
		case g.UUID == "":
			return fmt.Errorf("inventory of %s: gpu %d: empty uuid: %w", inv.Host, i, ErrInvalidInventory)
		case g.Index < 0:
			return fmt.Errorf("inventory of %s: gpu %d: negative index %d: %w", inv.Host, i, g.Index, ErrInvalidInventory)
		case g.TotalMiB <= 0:
			return fmt.Errorf("inventory of %s: gpu %d (%s): total memory %d MiB is not positive: %w", inv.Host, i, g.UUID, g.TotalMiB, ErrInvalidInventory)
		case g.FreeMiB < 0 || g.FreeMiB > g.TotalMiB:
			return fmt.Errorf("inventory of %s: gpu %d (%s): free memory %d MiB is outside 0..%d: %w", inv.Host, i, g.UUID, g.FreeMiB, g.TotalMiB, ErrInvalidInventory)
		case inv.ReserveMiB >= g.TotalMiB:
			return fmt.Errorf("inventory of %s: gpu %d (%s): reserve %d MiB leaves nothing of %d MiB: %w", inv.Host, i, g.UUID, inv.ReserveMiB, g.TotalMiB, ErrInvalidInventory)
		}
		if j, dup := byUUID[g.UUID]; dup {
			return fmt.Errorf("inventory of %s: gpu %d: uuid %s repeats gpu %d: %w", inv.Host, i, g.UUID, j, ErrInvalidInventory)
		}
		if j, dup := byIndex[g.Index]; dup {
			return fmt.Errorf("inventory of %s: gpu %d: index %d repeats gpu %d: %w", inv.Host, i, g.Index, j, ErrInvalidInventory)
		}
		byUUID[g.UUID], byIndex[g.Index] = i, i
	}
	if inv.Links == nil {
		return nil
	}
	n := len(inv.GPUs)
	if len(inv.Links) != n {
		return fmt.Errorf("inventory of %s: links has %d rows for %d gpus: %w", inv.Host, len(inv.Links), n, ErrInvalidInventory)
	}
	for i, row := range inv.Links {
		if len(row) != n {
			return fmt.Errorf("inventory of %s: links row %d has %d entries for %d gpus: %w", inv.Host, i, len(row), n, ErrInvalidInventory)
		}
		for j, l := range row {
			if l < LinkUnknown || l > LinkNVLink {
				return fmt.Errorf("inventory of %s: links[%d][%d] = %d is no known link: %w", inv.Host, i, j, l, ErrInvalidInventory)
			}
			if j < i && inv.Links[j][i] != l {
				return fmt.Errorf("inventory of %s: links not symmetric: [%d][%d] is %s, [%d][%d] is %s: %w",
					inv.Host, i, j, linkName(l), j, i, linkName(inv.Links[j][i]), ErrInvalidInventory)
			}
		}
	}
	return nil
}

// LinkBetween is how GPUs[i] and GPUs[j] are connected; LinkUnknown where Links is nil, i or j
// is out of range, or i == j (a card is not linked to itself).
func (inv Inventory) LinkBetween(i, j int) Link {
	if i == j || i < 0 || j < 0 || i >= len(inv.Links) || j >= len(inv.Links[i]) {
		return LinkUnknown
	}
	return inv.Links[i][j]
}

// UsableMiB is what placement may ever lease on GPUs[i]: its total minus the host's reserve
// (driver, display, fragmentation), never negative. Out of range is 0.
func (inv Inventory) UsableMiB(i int) MiB {
	if i < 0 || i >= len(inv.GPUs) {
		return 0
	}
	return max(inv.GPUs[i].TotalMiB-inv.ReserveMiB, 0)
}

// LinkScore ranks a link for tensor parallelism, whose all-reduce after every layer runs at the
// speed of the slowest pair in the group. The points follow peer-to-peer bandwidth:
//   - NVLink 100: a direct GPU-GPU link (or NVSwitch), several times PCIe bandwidth.
//   - same board 90: two GPUs of one card talk through the board's own switch.
//   - same switch 60: P2P through one PCIe switch at full PCIe speed.
//   - multi switch 40: still P2P, through more hops.
//   - host bridge 30: through the CPU's root complex, where P2P is often slow or disabled.
//   - same CPU 20: across host bridges of one socket, staged through host memory.
//   - cross CPU 0: over the socket interconnect, the slowest path.
//   - unknown 10: above a pair known to be worst, below any pair known to be better, so a
//     machine that reports nothing gets no invented preference and a known-good group wins.
func LinkScore(l Link) int {
	switch l {
	case LinkNVLink:
		return 100
	case LinkSameBoard:
		return 90
	case LinkSameSwitch:
		return 60
	case LinkMultiSwitch:
		return 40
	case LinkHostBridge:
		return 30
	case LinkSameCPU:
		return 20
	case LinkCrossCPU:
		return 0
	default:
		return 10
	}
}

// GroupScore is the sum of LinkScore over every pair of the group (indices into inv.GPUs), so
// placement can prefer the best-connected group among groups of one size. A single GPU scores 0.
func GroupScore(inv Inventory, idx []int) int {
	score := 0
	for a := range idx {
		for b := a + 1; b < len(idx); b++ {
			score += LinkScore(inv.LinkBetween(idx[a], idx[b]))
		}
	}
	return score
}
