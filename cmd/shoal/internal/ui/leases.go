package ui

import (
	"slices"
	"strings"
	"time"

	"github.com/shoal-run/shoal/pkg/gpu"
)

// hostView is one host of the GPU lease map: its cards with their holders, its queue, its
// expired entries and its live generator replicas.
type hostView struct {
	Host       string          `json:"host"`
	Source     string          `json:"source"` // nvml or declared
	GPUs       []gpuView       `json:"gpus"`
	Waiters    []waiterView    `json:"waiters"`
	Expired    []holderView    `json:"expired"`
	Generators []generatorView `json:"generators"`
	UpdatedAt  time.Time       `json:"updated_at"`
}

type gpuView struct {
	Index     int     `json:"index"`
	UUID      string  `json:"uuid"`
	Name      string  `json:"name"`
	TotalMiB  gpu.MiB `json:"total_mib"`
	UsableMiB gpu.MiB `json:"usable_mib"` // total − reserve
	LeasedMiB gpu.MiB `json:"leased_mib"`
	// UsedMiB is what NVML read in use when the host published its inventory; -1 when
	// the inventory is declared (no reading).
	UsedMiB gpu.MiB      `json:"used_mib"`
	Holders []holderView `json:"holders"`
}

type holderView struct {
	Holder    string  `json:"holder"`
	Model     string  `json:"model"`
	Variant   string  `json:"variant"`
	MiB       gpu.MiB `json:"mib"`
	State     string  `json:"state"`
	ExpiresIn float64 `json:"expires_in_s"`
}

type waiterView struct {
	Holder  string    `json:"holder"`
	Model   string    `json:"model"`
	Variant string    `json:"variant"`
	NeedMiB gpu.MiB   `json:"need_mib"`
	Since   time.Time `json:"since"`
}

type generatorView struct {
	ID          string   `json:"id"`
	Models      []string `json:"models,omitempty"`
	Concurrency int      `json:"concurrency"`
	InFlight    int64    `json:"in_flight"`
}

// leaseMap returns every host that has a ledger or an inventory, by name; f.mu must be held.
func (f *feed) leaseMap(now time.Time) []hostView {
	hosts := map[string]*hostView{}
	view := func(host string) *hostView {
		h := hosts[host]
		if h == nil {
			h = &hostView{Host: host, GPUs: []gpuView{}, Waiters: []waiterView{}, Expired: []holderView{}, Generators: []generatorView{}}
			hosts[host] = h
		}
		return h
	}
	readings := map[string]gpu.GPU{} // by UUID: what NVML read
	for _, inv := range f.inventory {
		if inv.Source != "nvml" {
			continue
		}
		for _, g := range inv.GPUs {
			readings[g.UUID] = g
		}
	}
	for _, inv := range f.inventory {
		h := view(inv.Host)
		if len(h.GPUs) == 0 {
			h.Source, h.UpdatedAt = inv.Source, inv.DiscoveredAt
			h.GPUs = gpuViews(inv, readings)
		}
	}
	for _, led := range f.ledgers {
		h := view(led.Host)
		h.Source, h.UpdatedAt = led.Inventory.Source, led.UpdatedAt
		h.GPUs = gpuViews(led.Inventory, readings)
		byUUID := map[string]*gpuView{}
		for i := range h.GPUs {
			byUUID[h.GPUs[i].UUID] = &h.GPUs[i]
		}
		for _, a := range led.Live(now) {
			for _, s := range a.Shares {
				if g := byUUID[s.UUID]; g != nil {
					g.LeasedMiB += s.MiB
					g.Holders = append(g.Holders, holderView{Holder: a.Holder, Model: a.Model, Variant: a.Variant, MiB: s.MiB, State: string(a.State), ExpiresIn: a.Expires.Sub(now).Seconds()})
				}
			}
		}
		for _, a := range led.Expired(now) {
			h.Expired = append(h.Expired, holderView{Holder: a.Holder, Model: a.Model, Variant: a.Variant, State: string(a.State)})
		}
		for _, w := range led.Waiters(now) {
			h.Waiters = append(h.Waiters, waiterView{Holder: w.Holder, Model: w.Model, Variant: w.Variant.Name, NeedMiB: w.Variant.NeedMiB, Since: w.Since})
		}
	}
	for id, g := range f.generators {
		if h, ok := hosts[g.Host]; ok {
			h.Generators = append(h.Generators, generatorView{ID: id, Models: g.Models, Concurrency: g.Concurrency, InFlight: g.InFlight})
		}
	}
	out := []hostView{}
	for _, h := range hosts {
		slices.SortFunc(h.Generators, func(a, b generatorView) int { return strings.Compare(a.ID, b.ID) })
		out = append(out, *h)
	}
	slices.SortFunc(out, func(a, b hostView) int { return strings.Compare(a.Host, b.Host) })
	return out
}

func gpuViews(inv gpu.Inventory, readings map[string]gpu.GPU) []gpuView {
	out := []gpuView{}
	for i, g := range inv.GPUs {
		v := gpuView{Index: g.Index, UUID: g.UUID, Name: g.Name, TotalMiB: g.TotalMiB, UsableMiB: inv.UsableMiB(i), UsedMiB: -1, Holders: []holderView{}}
		if r, ok := readings[g.UUID]; ok {
			v.UsedMiB = r.TotalMiB - r.FreeMiB
		}
		out = append(out, v)
	}
	return out
}
