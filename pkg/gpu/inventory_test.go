package gpu

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseDeclared(t *testing.T) {
	tests := []struct {
		name    string
		spec    string
		wantMiB []MiB
		// nvlinked lists the pairs expected to be NVLink; nil links means Links must be nil.
		nvlinked [][2]int
		links    bool
	}{
		{name: "one GTX 1080 Ti", spec: "1x11GiB", wantMiB: []MiB{11264}},
		{name: "two RTX 3090", spec: "2x24GiB", wantMiB: []MiB{24576, 24576}},
		{name: "four 1080 Ti", spec: "4x11GiB", wantMiB: []MiB{11264, 11264, 11264, 11264}},
		{name: "one H100", spec: "1x80GiB", wantMiB: []MiB{81920}},
		{name: "mixed 3090s and a 1080 Ti", spec: "2x24GiB,1x11GiB", wantMiB: []MiB{24576, 24576, 11264}},
		{name: "spaces are forgiven", spec: " 2x24GiB , 1x11GiB ", wantMiB: []MiB{24576, 24576, 11264}},
		{name: "decimal GB", spec: "1x11GB", wantMiB: []MiB{10490}}, // 11e9 / 2^20 = 10490.45
		{name: "fractional GiB", spec: "2x10.5GiB", wantMiB: []MiB{10752, 10752}},
		{name: "MiB", spec: "1x12288MiB", wantMiB: []MiB{12288}},
		{name: "MB", spec: "1x80000MB", wantMiB: []MiB{76293}},
		{
			name: "DGX H100 with NVLink pairs", spec: "8x80GiB:nvlink-pairs",
			wantMiB:  []MiB{81920, 81920, 81920, 81920, 81920, 81920, 81920, 81920},
			nvlinked: [][2]int{{0, 1}, {2, 3}, {4, 5}, {6, 7}}, links: true,
		},
		{
			name: "4x3090 all NVLinked", spec: "4x24GiB:nvlink-all",
			wantMiB:  []MiB{24576, 24576, 24576, 24576},
			nvlinked: [][2]int{{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}}, links: true,
		},
		{
			name: "odd count leaves the last unpaired", spec: "2x24GiB,1x11GiB:nvlink-pairs",
			wantMiB:  []MiB{24576, 24576, 11264},
			nvlinked: [][2]int{{0, 1}}, links: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := ParseDeclared("box", tt.spec)
			if err != nil {
				t.Fatalf("ParseDeclared(%q) error: %v", tt.spec, err)
			}
			var got []MiB
			for i, g := range inv.GPUs {
				got = append(got, g.TotalMiB)
				if g.FreeMiB != g.TotalMiB {
					t.Errorf("gpu %d: free %d, want total %d", i, g.FreeMiB, g.TotalMiB)
				}
				if want := "GPU-declared-box-" + strconv.Itoa(i); g.UUID != want {
					t.Errorf("gpu %d: uuid %q, want %q", i, g.UUID, want)
				}
				if want := "declared-" + strconv.Itoa(i); g.Name != want {
					t.Errorf("gpu %d: name %q, want %q", i, g.Name, want)
				}
				if g.Index != i {
					t.Errorf("gpu %d: index %d", i, g.Index)
				}
			}
			if !reflect.DeepEqual(got, tt.wantMiB) {
				t.Errorf("totals = %v, want %v", got, tt.wantMiB)
			}
			if inv.Host != "box" || inv.Source != "declared" {
				t.Errorf("host, source = %q, %q; want box, declared", inv.Host, inv.Source)
			}
			if !tt.links {
				if inv.Links != nil {
					t.Errorf("links = %v, want nil (unknown)", inv.Links)
				}
				return
			}
			want := map[[2]int]bool{}
			for _, p := range tt.nvlinked {
				want[p] = true
			}
			for i := range inv.GPUs {
				for j := i + 1; j < len(inv.GPUs); j++ {
					wantLink := LinkSameCPU
					if want[[2]int{i, j}] {
						wantLink = LinkNVLink
					}
					if got := inv.LinkBetween(i, j); got != wantLink {
						t.Errorf("link %d-%d = %s, want %s", i, j, linkName(got), linkName(wantLink))
					}
				}
			}
		})
	}
}

func TestParseDeclaredErrors(t *testing.T) {
	tests := []struct {
		host, spec string
		want       string // in the error message
	}{
		{"box", "4x11XB", `"4x11XB": unknown unit "XB"`},
		{"box", "4x11", `has no unit`},
		{"box", "4xGiB", `has no number`},
		{"box", "4x", `has no number`},
		{"box", "x11GiB", `gpu count "" is not a positive whole number`},
		{"box", "0x11GiB", `gpu count "0"`},
		{"box", "-1x11GiB", `gpu count "-1"`},
		{"box", "four x11GiB", `gpu count`},
		{"box", "11GiB", `want <count>x<size><unit>`},
		{"box", "", `no gpus`},
		{"box", ":nvlink-pairs", `no gpus`},
		{"box", "2x24GiB,", `"": want <count>x<size><unit>`},
		{"box", "1x1.2.3GiB", `is not a number`},
		{"box", "1x0GiB", `less than 1 MiB`},
		{"box", "1x0.0001MiB", `less than 1 MiB`},
		{"box", "1x17000GiB", `more than 16 TiB`},
		{"box", "1x99999999999999999999999GiB", `more than 16 TiB`},
		{"box", "65x1GiB", `more than 64 gpus`},
		{"box", "40x1GiB,40x1GiB", `more than 64 gpus`},
		{"box", "1x80GiB:nvlink-ring", `unknown topology "nvlink-ring"`},
		{"", "1x80GiB", `empty host`},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			_, err := ParseDeclared(tt.host, tt.spec)
			if err == nil {
				t.Fatalf("ParseDeclared(%q, %q) = nil error, want one containing %q", tt.host, tt.spec, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalidInventory) {
				t.Errorf("error %q is not ErrInvalidInventory", err)
			}
		})
	}
}

func TestLoadInventoryFile(t *testing.T) {
	tests := []struct {
		name, file, text string
		want             Inventory
	}{
		{
			name: "yaml with link names and defaults", file: "inv.yaml",
			text: `
host: lab-3090
reserve_mib: 512
discovered_at: 2025-03-01T12:00:00Z
gpus:
  - uuid: GPU-aaaa
    name: NVIDIA GeForce RTX 3090
    total_mib: 24576
  - uuid: GPU-bbbb
    name: NVIDIA GeForce RTX 3090
    total_mib: 24576
    free_mib: 20000
links:
  - [unknown, nvlink]
  - [nvlink, unknown]
`,
			want: Inventory{
				Host: "lab-3090", ReserveMiB: 512, Source: "declared",
				DiscoveredAt: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
				GPUs: []GPU{
					{Index: 0, UUID: "GPU-aaaa", Name: "NVIDIA GeForce RTX 3090", TotalMiB: 24576, FreeMiB: 24576},
					{Index: 1, UUID: "GPU-bbbb", Name: "NVIDIA GeForce RTX 3090", TotalMiB: 24576, FreeMiB: 20000},
				},
				Links: [][]Link{{LinkUnknown, LinkNVLink}, {LinkNVLink, LinkUnknown}},
			},
		},
		{
			name: "json with numeric links", file: "inv.json",
			text: `{"host": "gtx", "source": "declared", "gpus": [
				{"index": 0, "uuid": "GPU-1", "name": "NVIDIA GeForce GTX 1080 Ti", "total_mib": 11264},
				{"index": 1, "uuid": "GPU-2", "name": "NVIDIA GeForce GTX 1080 Ti", "total_mib": 11264}],
				"links": [[0, 5], [5, 0]]}`,
			want: Inventory{
				Host: "gtx", Source: "declared",
				GPUs: []GPU{
					{Index: 0, UUID: "GPU-1", Name: "NVIDIA GeForce GTX 1080 Ti", TotalMiB: 11264, FreeMiB: 11264},
					{Index: 1, UUID: "GPU-2", Name: "NVIDIA GeForce GTX 1080 Ti", TotalMiB: 11264, FreeMiB: 11264},
				},
				Links: [][]Link{{0, LinkSameSwitch}, {LinkSameSwitch, 0}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tt.file)
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := LoadInventoryFile(path)
			if err != nil {
				t.Fatalf("LoadInventoryFile: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestLoadInventoryFileErrors(t *testing.T) {
	const two = `host: h
gpus:
  - {uuid: GPU-a, total_mib: 11264}
  - {uuid: GPU-b, total_mib: 11264}
`
	tests := []struct{ name, text, want string }{
		{"duplicate uuid", "host: h\ngpus:\n  - {uuid: GPU-a, total_mib: 1}\n  - {uuid: GPU-a, total_mib: 1}\n", "uuid GPU-a repeats gpu 0"},
		{"zero memory", "host: h\ngpus:\n  - {uuid: GPU-a}\n", "total memory 0 MiB is not positive"},
		{"negative memory", "host: h\ngpus:\n  - {uuid: GPU-a, total_mib: -5}\n", "total memory -5 MiB"},
		{"no uuid", "host: h\ngpus:\n  - {total_mib: 100}\n", "empty uuid"},
		{"no host", "gpus:\n  - {uuid: GPU-a, total_mib: 100}\n", "empty host"},
		{"reserve eats the card", "host: h\nreserve_mib: 11264\ngpus:\n  - {uuid: GPU-a, total_mib: 11264}\n", "leaves nothing"},
		{"free above total", "host: h\ngpus:\n  - {uuid: GPU-a, total_mib: 10, free_mib: 11}\n", "free memory 11 MiB is outside 0..10"},
		{"asymmetric links", two + "links: [[unknown, nvlink], [same-cpu, unknown]]\n", "not symmetric"},
		{"links not square", two + "links: [[0, 7], [7]]\n", "row 1 has 1 entries for 2 gpus"},
		{"links wrong rows", two + "links: [[0, 7]]\n", "links has 1 rows for 2 gpus"},
		{"link out of range", two + "links: [[0, 9], [9, 0]]\n", "no known link"},
		{"unknown link name", two + "links: [[0, pcie], [pcie, 0]]\n", `unknown link "pcie"`},
		{"unknown field", "host: h\nreserve_mb: 5\ngpus: []\n", `unknown field "reserve_mb"`},
		{"not a mapping", "- 1\n- 2\n", "want a mapping"},
		{"bad yaml", "host: [\n", "parse"},
		{"wrong type", "host: h\ngpus: 3\n", "parse"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "inv.yaml")
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadInventoryFile(path)
			if err == nil {
				t.Fatalf("no error, want one containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidInventory) {
				t.Errorf("error %q: want ErrInvalidInventory containing %q", err, tt.want)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := LoadInventoryFile(filepath.Join(t.TempDir(), "nope.yaml"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("error %v, want os.ErrNotExist", err)
		}
	})
	t.Run("huge file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "big.yaml")
		if err := os.WriteFile(path, make([]byte, maxInventoryFileBytes+1), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadInventoryFile(path); err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("error %v, want 'larger than'", err)
		}
	})
}

func TestValidateAcceptsEmptyHostInventory(t *testing.T) {
	// A CPU-only host that reaches models over an API has no GPUs; that is not an error.
	if err := (Inventory{Host: "cpu-only"}).Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}
}

func TestValidateIndices(t *testing.T) {
	inv := Inventory{Host: "h", GPUs: []GPU{
		{Index: 0, UUID: "GPU-a", TotalMiB: 1},
		{Index: 0, UUID: "GPU-b", TotalMiB: 1},
	}}
	if err := inv.Validate(); err == nil || !strings.Contains(err.Error(), "index 0 repeats gpu 0") {
		t.Errorf("Validate() = %v, want repeated index", err)
	}
	inv.GPUs[1].Index = -1
	if err := inv.Validate(); err == nil || !strings.Contains(err.Error(), "negative index") {
		t.Errorf("Validate() = %v, want negative index", err)
	}
	inv = Inventory{Host: "h", ReserveMiB: -1}
	if err := inv.Validate(); err == nil || !strings.Contains(err.Error(), "negative reserve") {
		t.Errorf("Validate() = %v, want negative reserve", err)
	}
}

func TestLinkBetween(t *testing.T) {
	dgx, err := ParseDeclared("dgx", "8x80GiB:nvlink-pairs")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		inv  Inventory
		i, j int
		want Link
	}{
		{"pair", dgx, 0, 1, LinkNVLink},
		{"pair reversed", dgx, 1, 0, LinkNVLink},
		{"across pairs", dgx, 1, 2, LinkSameCPU},
		{"itself", dgx, 3, 3, LinkUnknown},
		{"out of range", dgx, 0, 8, LinkUnknown},
		{"negative", dgx, -1, 0, LinkUnknown},
		{"nil links", Inventory{GPUs: make([]GPU, 4)}, 0, 1, LinkUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.inv.LinkBetween(tt.i, tt.j); got != tt.want {
				t.Errorf("LinkBetween(%d, %d) = %s, want %s", tt.i, tt.j, linkName(got), linkName(tt.want))
			}
		})
	}
}

func TestLinkScoreOrder(t *testing.T) {
	// Best to worst; unknown sits just above a pair known to cross sockets.
	order := []Link{LinkNVLink, LinkSameBoard, LinkSameSwitch, LinkMultiSwitch, LinkHostBridge, LinkSameCPU, LinkUnknown, LinkCrossCPU}
	for k := 1; k < len(order); k++ {
		if a, b := LinkScore(order[k-1]), LinkScore(order[k]); a <= b {
			t.Errorf("LinkScore(%s) = %d, not above LinkScore(%s) = %d", linkName(order[k-1]), a, linkName(order[k]), b)
		}
	}
	if got := LinkScore(LinkNVLink); got != 100 {
		t.Errorf("LinkScore(nvlink) = %d, want 100", got)
	}
	if got := LinkScore(Link(42)); got != LinkScore(LinkUnknown) {
		t.Errorf("LinkScore(42) = %d, want unknown's %d", got, LinkScore(LinkUnknown))
	}
}

func TestGroupScore(t *testing.T) {
	dgx, _ := ParseDeclared("dgx", "8x80GiB:nvlink-pairs")
	gtx, _ := ParseDeclared("gtx", "4x11GiB")
	tests := []struct {
		name string
		inv  Inventory
		idx  []int
		want int
	}{
		{"single gpu", dgx, []int{3}, 0},
		{"empty", dgx, nil, 0},
		{"NVLink pair", dgx, []int{0, 1}, 100},
		{"split pair", dgx, []int{1, 2}, 20},
		{"two pairs", dgx, []int{0, 1, 2, 3}, 100 + 100 + 4*20},
		{"pair and a stray", dgx, []int{0, 1, 2}, 100 + 20 + 20},
		{"unknown topology", gtx, []int{0, 1}, 10},
		{"unknown topology, four", gtx, []int{0, 1, 2, 3}, 6 * 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := GroupScore(tt.inv, tt.idx); got != tt.want {
				t.Errorf("GroupScore(%v) = %d, want %d", tt.idx, got, tt.want)
			}
		})
	}
	// Placement's question: among groups of two, the NVLink pair wins.
	if GroupScore(dgx, []int{2, 3}) <= GroupScore(dgx, []int{1, 2}) {
		t.Error("NVLink pair does not outscore a split pair")
	}
}

func TestUsableMiB(t *testing.T) {
	inv, _ := ParseDeclared("mixed", "2x24GiB,1x11GiB")
	inv.ReserveMiB = 512
	tests := []struct {
		i    int
		want MiB
	}{{0, 24576 - 512}, {2, 11264 - 512}, {3, 0}, {-1, 0}}
	for _, tt := range tests {
		if got := inv.UsableMiB(tt.i); got != tt.want {
			t.Errorf("UsableMiB(%d) = %d, want %d", tt.i, got, tt.want)
		}
	}
	inv.ReserveMiB = 20000 // larger than the 1080 Ti: never negative
	if got := inv.UsableMiB(2); got != 0 {
		t.Errorf("UsableMiB with reserve over total = %d, want 0", got)
	}
}
