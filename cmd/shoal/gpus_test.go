package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/shoal-run/shoal/pkg/gpu"
)

// TestGPUsOnThisHost: `shoal gpus` answers on any machine and exits 0: on one without GPUs
// (no NVML, as on the CI hosts) it says there are none, on one with GPUs it lists them.
func TestGPUsOnThisHost(t *testing.T) {
	out, err := runShoal("gpus", "--host", "box")
	if err != nil {
		t.Fatalf("shoal gpus = %v, want exit 0\n%s", err, out)
	}
	none := strings.Contains(out, "host box has no GPUs that NVML sees")
	if !none && !strings.Contains(out, "INDEX") {
		t.Errorf("shoal gpus printed neither that there are no GPUs nor a table of them:\n%s", out)
	}
	t.Logf("shoal gpus: %s", out)

	out, err = runShoal("gpus", "--host", "box", "--json")
	var inv gpu.Inventory
	if err != nil || json.Unmarshal([]byte(out), &inv) != nil || inv.Host != "box" || inv.GPUs == nil {
		t.Fatalf("shoal gpus --json = %v, want an inventory of host box with a list of GPUs (empty or not)\n%s", err, out)
	}
	if none != (len(inv.GPUs) == 0) {
		t.Errorf("gpus says none: %v; --json lists %d", none, len(inv.GPUs))
	}
}
