package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// chromium returns the path of a Chromium or Chrome binary, or "" when there is none.
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestBrowserShowsALiveRun starts a real `shoal up --ui` (in this process: the embedded NATS
// server, the four services, the mutate backend on the function_minimization example),
// claims a GPU lease on a declared host as a generator would, and opens the UI in headless
// Chromium: the runs list, then the run's page, where the score chart, the island grids and
// the lease map must fill in from the live event stream. It saves screenshots in
// $SHOAL_SCREENSHOTS (`make screenshots` points it at docs/), or in a temporary directory.
func TestBrowserShowsALiveRun(t *testing.T) {
	chrome := chromium()
	if chrome == "" {
		t.Skip("no chromium binary on PATH (chromium, chromium-browser, google-chrome, headless-shell): " +
			"install one (Debian: apt-get install -y chromium) to run the browser test")
	}
	shots := os.Getenv("SHOAL_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	natsPort, uiPort := freePort(t), freePort(t)
	state := t.TempDir()
	t.Setenv("TMPDIR", t.TempDir()) // the evaluator's cache and work dirs

	// A run long enough to be watched while it goes on; the test stops it when done.
	upCtx, stopUp := context.WithCancel(context.Background())
	root := rootCmd()
	root.SetArgs([]string{"up", "--state-dir", state, "--listen", fmt.Sprintf("127.0.0.1:%d", natsPort),
		"--ui", fmt.Sprintf("127.0.0.1:%d", uiPort), "--gpus", "none", "--iterations", "600", "--stay"})
	var out syncBuffer // read while up writes to it
	root.SetOut(&out)
	root.SetErr(&out)
	upDone := make(chan error, 1)
	go func() { upDone <- root.ExecuteContext(upCtx) }()
	t.Cleanup(func() {
		stopUp()
		select {
		case <-upDone:
		case <-time.After(2 * time.Minute):
			t.Errorf("shoal up did not stop:\n%s", out.String())
		}
	})

	// The UI answers with the seeder's password from the state dir.
	url := fmt.Sprintf("http://127.0.0.1:%d/", uiPort)
	var password string
	eventually(t, 2*time.Minute, func() string {
		pw, err := os.ReadFile(natsauth.PasswordFile(credentialsDir(state), natsauth.Seeder))
		if err != nil {
			return "no seeder password yet"
		}
		password = strings.TrimSpace(string(pw))
		req, _ := http.NewRequest(http.MethodGet, url+"api/runs", nil)
		req.SetBasicAuth(string(natsauth.Seeder), password)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Sprintf("UI not up: %v", err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Sprintf("GET api/runs: %s", res.Status)
		}
		return ""
	})
	if !strings.Contains(out.String(), "web UI (read-only) on "+url) {
		t.Errorf("shoal up does not say where the UI is:\n%s", out.String())
	}

	// A generator's GPU lease on a declared host, through the generator's credentials.
	genPW, err := os.ReadFile(natsauth.PasswordFile(credentialsDir(state), natsauth.Generator))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
		nats.UserInfo(string(natsauth.Generator), strings.TrimSpace(string(genPW))), nats.CustomInboxPrefix(natsauth.Generator.InboxPrefix()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), protocol.NewNames("").GPULeasesBucket())
	if err != nil {
		t.Fatal(err)
	}
	// Two hosts: one with a declared inventory (no readings), one that NVML (go-nvml's mock
	// of two H100s, some memory in use) discovered and the generator published. A small model
	// shares a card with a larger one, and a model too large for what is free waits.
	declared, err := gpu.ParseDeclared("gpu-host-a", "2x11GiB")
	if err != nil {
		t.Fatal(err)
	}
	h100 := mockNVMLInventory(t, "gpu-host-b", []gpu.MiB{57 << 10, 3 << 10})
	inventories, err := js.KeyValue(t.Context(), protocol.NewNames("").GPUInventoryBucket())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(h100)
	if _, err := inventories.Put(t.Context(), lease.Key(h100.Host), data); err != nil {
		t.Fatal(err)
	}
	claimLease(t, t.Context(), kv, declared, "generator-gpu-host-a-1", "qwen3-8b", 9000)
	claimLease(t, t.Context(), kv, declared, "generator-gpu-host-a-2", "qwen3-0.6b", 1500)
	claimLease(t, t.Context(), kv, h100, "generator-gpu-host-b-1", "llama-70b", 120<<10)
	waitForLease(t, kv, declared, "generator-gpu-host-a-3", "qwen3-32b", 20<<10)

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1360, 1000))...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	// The first call starts the browser, and its context must have no deadline: the
	// browser lives as long as it. Every request of the page logs in.
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(string(natsauth.Seeder)+":"+password))
	if _, err := chromedp.Call(browser, network.Enable, network.EnableParams{}); err != nil {
		t.Fatalf("start chromium (%s): %v", chrome, err)
	}
	if _, err := chromedp.Call(browser, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}}); err != nil {
		t.Fatal(err)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(browser, steps...); err != nil {
			t.Fatalf("%s: %v\nshoal up said:\n%s", what, err, out.String())
		}
	}
	// waitFor polls a JavaScript condition, with a generous limit: the machine may be loaded.
	waitFor := func(what, js string) {
		t.Helper()
		do("waiting for "+what, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
			_, err := chromedp.Poll[bool](js, chromedp.WithPollingInterval(250*time.Millisecond), chromedp.WithPollingTimeout(2*time.Minute))(ctx, tgt)
			return err
		}))
	}
	eval := func(js string) int {
		t.Helper()
		n, err := chromedp.Run(browser, chromedp.Evaluate[int](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return n
	}
	shot := func(name string, a chromedp.Action[[]byte]) {
		t.Helper()
		png, err := chromedp.Run(browser, a)
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 5<<10 {
			t.Errorf("%s: %d bytes, not a PNG of a page", name, len(png))
			return
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	do("open the runs list", chromedp.Navigate(url))
	waitFor("the run in the runs list", `document.querySelector('#runs-table tr[data-run="function-minimization"]') !== null`)
	waitFor("the lease map's holders and waiter", `document.querySelectorAll('#leases rect.holder').length >= 4 && document.querySelectorAll('#leases .waiting').length > 0 && document.querySelectorAll('#leases line.used').length > 0`)
	waitFor("a live connection", `document.getElementById('live').textContent === 'live'`)
	do("settle", chromedp.Sleep(500*time.Millisecond))
	shot("ui-runs.png", chromedp.FullScreenshot(100))

	do("open the run", chromedp.Navigate(url+"#/run/function-minimization"))
	waitFor("the score chart", `document.querySelectorAll('#chart-evals circle.dot').length >= 2 && document.querySelector('#chart-time path.line') !== null`)
	waitFor("the island grids", `document.querySelectorAll('#grid svg.heat').length >= 1 && document.querySelectorAll('#grid rect.cell.filled').length >= 5`)
	waitFor("the lease map on the run's page", `document.querySelectorAll('#leases rect.holder').length > 0`)
	before := eval(`state.run.evaluations`)
	// Live: the page moves on as results arrive, until the run is done.
	waitFor("more results or the run's end", fmt.Sprintf(
		`state.run.evaluations > %d || (state.run.summary !== null && state.run.summary.status === 'done')`, before+5))
	// The screenshots show the run well on, or ended.
	waitFor("300 results or the run's end", `state.run.evaluations >= 300 || (state.run.summary !== null && state.run.summary.status === 'done')`)
	waitFor("the best program and its lineage", `document.querySelector('#best-diff') !== null && document.querySelectorAll('#lineage-list li').length > 0`)
	after := eval(`state.run.evaluations`)
	do("settle", chromedp.Sleep(time.Second))
	shot("ui-run.png", chromedp.FullScreenshot(100))
	shot("ui-grid.png", chromedp.Screenshot(`#grid`, chromedp.NodeVisible))
	shot("ui-leases.png", chromedp.Screenshot(`#leases`, chromedp.NodeVisible))
	if after <= 0 || after < before {
		t.Errorf("evaluations on the page went from %d to %d", before, after)
	}
	t.Logf("screenshots in %s", shots)
}

// mockNVMLInventory discovers host's GPUs through go-nvml's mock of H100 cards, each with
// used MiB in use as NVML reads it, on one PCIe switch without NVLink.
func mockNVMLInventory(t *testing.T, host string, used []gpu.MiB) gpu.Inventory {
	t.Helper()
	s := dgxh100.NewWithGPUs(gpus.Multiple(len(used), gpus.H100_SXM5_80GB)...)
	for i, d := range s.Devices {
		dev := d.(*server.Device)
		dev.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) { return nvml.PciInfo{Bus: uint32(0x18 + 0x10*i)}, nvml.SUCCESS }
		dev.GetTopologyCommonAncestorFunc = func(nvml.Device) (nvml.GpuTopologyLevel, nvml.Return) {
			return nvml.TOPOLOGY_MULTIPLE, nvml.SUCCESS
		}
		dev.GetNvLinkStateFunc = func(int) (nvml.EnableState, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
		dev.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) {
			total := uint64(80) << 30
			u := uint64(used[i]) << 20
			return nvml.Memory{Total: total, Used: u, Free: total - u}, nvml.SUCCESS
		}
	}
	inv, err := gpu.DiscoverWith(s, host)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// waitForLease queues a claim that cannot be granted yet, as a generator whose model does
// not fit beside the live leases does; it leaves the queue at cleanup.
func waitForLease(t *testing.T, kv jetstream.KeyValue, inv gpu.Inventory, holder, model string, need gpu.MiB) {
	t.Helper()
	c, err := lease.New(kv, lease.Config{Host: inv.Host, Holder: holder, Model: model, TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Claim(ctx, inv, []gpu.Variant{{Name: "q4", NeedMiB: need}})
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("queued claim of %s ended with %v; want it still waiting", holder, err)
		}
		c.Close()
	})
}
