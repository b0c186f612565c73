package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/cmd/shoal/internal/ui"
	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// uiRun is what the UI's JSON says of one run (the fields the tests check).
type uiRun struct {
	Run     string `json:"run"`
	Summary struct {
		Status      string  `json:"status"`
		Evaluations int64   `json:"evaluations"`
		Budget      int64   `json:"budget"`
		Failed      int64   `json:"failed"`
		Best        float64 `json:"best"`
	} `json:"summary"`
	Evaluations int64 `json:"evaluations"`
	From        int   `json:"from"`
	Points      []struct {
		N    int64   `json:"n"`
		T    int64   `json:"t"`
		Best float64 `json:"best"`
	} `json:"points"`
	Grid *struct {
		Dimensions []struct {
			Name string `json:"name"`
			Bins int    `json:"bins"`
		} `json:"dimensions"`
		Islands []struct {
			Island int `json:"island"`
			Cells  []struct {
				Coords  []int   `json:"coords"`
				Program string  `json:"program"`
				Score   float64 `json:"score"`
			} `json:"cells"`
		} `json:"islands"`
	} `json:"grid"`
	Best *struct {
		ID       string  `json:"id"`
		ParentID string  `json:"parent_id"`
		Score    float64 `json:"score"`
		Code     string  `json:"code"`
		Diff     []struct {
			Op   string `json:"op"`
			Text string `json:"text"`
		} `json:"diff"`
		Lineage []struct {
			ID         string `json:"id"`
			ParentID   string `json:"parent_id"`
			Generation int    `json:"generation"`
			Copy       bool   `json:"copy"`
		} `json:"lineage"`
	} `json:"best"`
	Failures []struct {
		Status  string `json:"status"`
		Reason  string `json:"reason"`
		Count   int64  `json:"count"`
		Example string `json:"example"`
	} `json:"failures"`
	Throughput *struct {
		ByGenerator []struct {
			Name    string `json:"name"`
			Results int64  `json:"results"`
		} `json:"by_generator"`
		ByModel []struct {
			Name    string `json:"name"`
			Results int64  `json:"results"`
			OK      int64  `json:"ok"`
		} `json:"by_model"`
	} `json:"throughput"`
}

type uiHost struct {
	Host string `json:"host"`
	GPUs []struct {
		UUID      string `json:"uuid"`
		TotalMiB  int64  `json:"total_mib"`
		LeasedMiB int64  `json:"leased_mib"`
		Holders   []struct {
			Holder string `json:"holder"`
			Model  string `json:"model"`
			MiB    int64  `json:"mib"`
		} `json:"holders"`
	} `json:"gpus"`
}

// uiClient is an HTTP client of the UI that logs in.
type uiClient struct {
	url, user, password string
}

func (c uiClient) get(t *testing.T, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.url+path, nil)
	req.SetBasicAuth(c.user, c.password)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode == http.StatusOK && v != nil {
		if err := json.NewDecoder(res.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
	}
	return res.StatusCode
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name string
	data []byte
}

// subscribe reads the UI's event stream into events until ctx ends.
func (c uiClient) subscribe(ctx context.Context, t *testing.T, query string) <-chan sseEvent {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"api/events"+query, nil)
	req.SetBasicAuth(c.user, c.password)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET api/events: %s %s", res.Status, res.Header.Get("Content-Type"))
	}
	out := make(chan sseEvent, 1024)
	go func() {
		defer close(out)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = []byte(strings.TrimPrefix(line, "data: "))
			case line == "" && ev.name != "":
				out <- ev
				ev = sseEvent{}
			}
		}
	}()
	return out
}

// startUI serves the UI over the stack's bus, logged in as the seeder (its permissions as
// the real server gives them: a request the role may not make fails the test).
func startUI(t *testing.T, env *natstest.TestEnv) uiClient {
	t.Helper()
	nc := env.ConnectAs(t, natsauth.Seeder)
	pw := env.Passwords[natsauth.Seeder]
	srv, err := ui.New(ui.Config{Names: env.Names, Addr: "127.0.0.1:0", User: string(natsauth.Seeder), Password: pw}, nc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ui returned %v after shutdown", err)
		}
	})
	return uiClient{url: srv.URL(), user: string(natsauth.Seeder), password: pw}
}

// claimLease claims GPU memory on inv's host as a generator replica does (the lease client,
// with the generator's credentials), and marks the lease ready as a replica does once its
// model server is healthy; the lease is released at cleanup.
func claimLease(t *testing.T, ctx context.Context, kv jetstream.KeyValue, inv gpu.Inventory, holder, model string, need gpu.MiB) {
	t.Helper()
	c, err := lease.New(kv, lease.Config{Host: inv.Host, Holder: holder, Model: model, TTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	l, err := c.Claim(cctx, inv, []gpu.Variant{{Name: "q4", NeedMiB: need}})
	if err != nil {
		t.Fatalf("claim %d MiB on %s: %v", need, inv.Host, err)
	}
	if err := l.Ready(cctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.Release(rctx); err != nil {
			t.Errorf("release: %v", err)
		}
		c.Close()
	})
}

// eventually polls check every 200 ms until it returns "" or limit passes.
func eventually(t *testing.T, limit time.Duration, check func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		why := check()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", limit, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestUIShowsARunAsTheArchiveFoldsIt runs a real stack with the mutate backend and the UI
// beside it, logged in as the seeder, and checks that what the UI shows is what the archive
// and RESULTS hold: the runs list, the best score's steps (sent live, each point once), the
// islands' grids, the best program with a diff that rebuilds both it and its parent, its
// lineage to the seed, failures counted by reason, throughput, and a GPU lease.
func TestUIShowsARunAsTheArchiveFoldsIt(t *testing.T) {
	s := startStack(t)
	c := startUI(t, s.env)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var streamed []uiRun
	var mu sync.Mutex
	events := c.subscribe(ctx, t, "?run=fm")
	go func() {
		for ev := range events {
			if ev.name != "run" {
				continue
			}
			var d uiRun
			if err := json.Unmarshal(ev.data, &d); err != nil {
				t.Errorf("run event: %v", err)
				continue
			}
			mu.Lock()
			streamed = append(streamed, d)
			mu.Unlock()
		}
	}()

	const iterations = 40
	cfg := s.seed("fm", exampleDir(t), fmt.Sprintf(mutateConfig, iterations))
	st := s.waitDone("fm", 3*time.Minute)
	results := s.results("fm")
	kv, err := s.env.JS.KeyValue(ctx, s.env.Names.GPULeasesBucket())
	if err != nil {
		t.Fatal(err)
	}
	inv, err := gpu.ParseDeclared("gpu-host-a", "2x11GiB")
	if err != nil {
		t.Fatal(err)
	}
	claimLease(t, ctx, kv, inv, "generator-test-1", "qwen", 6000)

	var d uiRun
	eventually(t, time.Minute, func() string {
		d = uiRun{}
		if code := c.get(t, "api/runs/fm", &d); code != http.StatusOK {
			return fmt.Sprintf("GET api/runs/fm: %d", code)
		}
		if d.Evaluations != int64(len(results)) || d.Summary.Status != string(protocol.RunDone) {
			return fmt.Sprintf("UI has %d results, status %q; want %d, done", d.Evaluations, d.Summary.Status, len(results))
		}
		return ""
	})

	var list []struct {
		Run         string  `json:"run"`
		Status      string  `json:"status"`
		Evaluations int64   `json:"evaluations"`
		Budget      int64   `json:"budget"`
		Best        float64 `json:"best"`
	}
	c.get(t, "api/runs", &list)
	if len(list) != 1 || list[0].Run != "fm" || list[0].Evaluations != iterations || list[0].Budget != iterations || list[0].Best != st.BestScore {
		t.Errorf("runs list %+v; want fm with %d/%d evaluations and best %g", list, iterations, iterations, st.BestScore)
	}

	// Best score over evaluations: rising steps from the seed's score to the archive's best.
	if len(d.Points) == 0 || d.Points[0].Best != st.SeedScore || d.Points[len(d.Points)-1].Best != st.BestScore {
		t.Fatalf("score points %+v; want from the seed's %g to the best %g", d.Points, st.SeedScore, st.BestScore)
	}
	for i := 1; i < len(d.Points); i++ {
		if d.Points[i].N <= d.Points[i-1].N || d.Points[i].Best <= d.Points[i-1].Best || d.Points[i].T < d.Points[i-1].T {
			t.Errorf("score points %d and %d do not rise: %+v %+v", i-1, i, d.Points[i-1], d.Points[i])
		}
	}

	// The grid is the archive's: as many cells per island as its state counts.
	if d.Grid == nil || len(d.Grid.Islands) != cfg.Database.NumIslands || len(st.Islands) != cfg.Database.NumIslands {
		t.Fatalf("grid %+v; want %d islands (state has %d)", d.Grid, cfg.Database.NumIslands, len(st.Islands))
	}
	top := 0.0
	for i, isl := range d.Grid.Islands {
		if len(isl.Cells) != st.Islands[i].Cells {
			t.Errorf("island %d: UI shows %d cells, the archive counts %d", i, len(isl.Cells), st.Islands[i].Cells)
		}
		for _, cell := range isl.Cells {
			if len(cell.Coords) != len(d.Grid.Dimensions) {
				t.Errorf("cell %+v has %d coordinates for %d dimensions", cell, len(cell.Coords), len(d.Grid.Dimensions))
			}
			top = max(top, cell.Score)
		}
	}
	if top != st.BestScore {
		t.Errorf("best cell score %g; want the best score %g", top, st.BestScore)
	}

	// The best program, its diff against its parent, its lineage.
	best, err := s.client.runs.Best(ctx, "fm")
	if err != nil {
		t.Fatal(err)
	}
	if d.Best == nil || d.Best.ID != st.BestID || d.Best.Code != best.Program.Code || d.Best.Score != st.BestScore {
		t.Fatalf("best %+v; want %s with the archive's code and score %g", d.Best, st.BestID, st.BestScore)
	}
	byID := map[string]protocol.Result{}
	for _, r := range results {
		byID[r.Candidate.ID] = r
	}
	if d.Best.ParentID != "" {
		var parent, child []string
		for _, l := range d.Best.Diff {
			if l.Op != "+" {
				parent = append(parent, l.Text)
			}
			if l.Op != "-" {
				child = append(child, l.Text)
			}
		}
		if got, want := strings.Join(child, "\n"), strings.TrimSuffix(best.Program.Code, "\n"); got != want {
			t.Errorf("the diff's new side is not the best program:\n%s", got)
		}
		if got, want := strings.Join(parent, "\n"), strings.TrimSuffix(byID[d.Best.ParentID].Candidate.Code, "\n"); got != want {
			t.Errorf("the diff's old side is not the parent %s:\n%s", d.Best.ParentID, got)
		}
		if len(parent) == len(d.Best.Diff) && len(child) == len(d.Best.Diff) {
			t.Error("the diff against the parent changes nothing")
		}
	}
	lin := d.Best.Lineage
	if len(lin) == 0 || lin[0].ID != st.BestID || lin[len(lin)-1].Generation != 0 {
		t.Errorf("lineage %+v; want the best first and a seed last", lin)
	}
	for i := 1; i < len(lin); i++ {
		if lin[i-1].ParentID != lin[i].ID {
			t.Errorf("lineage breaks between %s (parent %s) and %s", lin[i-1].ID, lin[i-1].ParentID, lin[i].ID)
		}
	}

	// Failures by reason count every result that was not ok.
	var failed int64
	for _, r := range results {
		if r.Status != protocol.StatusOK {
			failed++
		}
	}
	var grouped int64
	for _, f := range d.Failures {
		grouped += f.Count
		if r, ok := byID[f.Example]; !ok || string(r.Status) != f.Status {
			t.Errorf("failure group %q: example %s is not a %s result", f.Reason, f.Example, f.Status)
		}
	}
	if grouped != failed {
		t.Errorf("failure groups count %d failures; RESULTS holds %d", grouped, failed)
	}

	// Throughput: every generated candidate, by model and by generator replica.
	if d.Throughput == nil || len(d.Throughput.ByModel) != 1 || d.Throughput.ByModel[0].Name != "mutate" || d.Throughput.ByModel[0].Results != iterations {
		t.Errorf("throughput %+v; want %d results of model mutate", d.Throughput, iterations)
	}

	// Live: the stream, opened before the run existed, pushed the run to its end without being
	// asked again, each score point once and in order.
	eventually(t, time.Minute, func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(streamed) == 0 || streamed[len(streamed)-1].Evaluations != int64(len(results)) {
			return fmt.Sprintf("%d run events; the last does not show all %d results", len(streamed), len(results))
		}
		return ""
	})
	mu.Lock()
	var pts int
	for _, ev := range streamed {
		if ev.From != pts {
			t.Errorf("an event's points start at %d; %d were sent before", ev.From, pts)
		}
		pts += len(ev.Points)
	}
	mu.Unlock()
	if pts != len(d.Points) {
		t.Errorf("the stream sent %d score points; the run has %d", pts, len(d.Points))
	}

	// The lease map.
	eventually(t, 30*time.Second, func() string {
		var hosts []uiHost
		c.get(t, "api/leases", &hosts)
		for _, h := range hosts {
			for _, g := range h.GPUs {
				for _, ho := range g.Holders {
					if h.Host == "gpu-host-a" && ho.Holder == "generator-test-1" && ho.Model == "qwen" && ho.MiB == 6000 && g.LeasedMiB == 6000 {
						return ""
					}
				}
			}
		}
		return fmt.Sprintf("lease map %+v lacks generator-test-1's 6000 MiB on gpu-host-a", hosts)
	})
}

// TestUIIsReadOnlyAndLogsIn: every request needs the NATS user and password, and nothing but
// GET and HEAD is answered.
func TestUIIsReadOnlyAndLogsIn(t *testing.T) {
	env := natstest.StartTestEnv(t, natstest.WithRoles())
	c := startUI(t, env)
	for _, tc := range []struct {
		name, method, user, password string
		want                         int
	}{
		{"no credentials", http.MethodGet, "", "", http.StatusUnauthorized},
		{"wrong password", http.MethodGet, c.user, "guess", http.StatusUnauthorized},
		{"another role", http.MethodGet, string(natsauth.Admin), env.Passwords[natsauth.Admin], http.StatusUnauthorized},
		{"the seeder", http.MethodGet, c.user, c.password, http.StatusOK},
		{"HEAD", http.MethodHead, c.user, c.password, http.StatusOK},
		{"POST", http.MethodPost, c.user, c.password, http.StatusMethodNotAllowed},
		{"PUT", http.MethodPut, c.user, c.password, http.StatusMethodNotAllowed},
		{"DELETE", http.MethodDelete, c.user, c.password, http.StatusMethodNotAllowed},
		{"PATCH", http.MethodPatch, c.user, c.password, http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"", "app.js", "api/runs", "api/leases"} {
				req, _ := http.NewRequest(tc.method, c.url+path, strings.NewReader("{}"))
				if tc.user != "" {
					req.SetBasicAuth(tc.user, tc.password)
				}
				res, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != tc.want {
					t.Errorf("%s /%s: %d, want %d", tc.method, path, res.StatusCode, tc.want)
				}
			}
		})
	}
}

// TestShoalUICommand runs `shoal ui` as a user does beside a deployment: it finds the
// seeder's password where `shoal up` keeps it, refuses to serve beyond loopback without a
// certificate, serves HTTPS with one, and says where it is and how to log in.
func TestShoalUICommand(t *testing.T) {
	env := natstest.StartTestEnv(t, natstest.WithRoles())
	state := t.TempDir()
	if err := os.CopyFS(credentialsDir(state), os.DirFS(env.CredentialsDir)); err != nil {
		t.Fatal(err)
	}
	out, err := runShoal("ui", "--nats-url", env.Server.URL(), "--state-dir", state, "--addr", "0.0.0.0:0")
	if !errors.Is(err, ui.ErrConfig) || !strings.Contains(err.Error(), "without TLS") {
		t.Fatalf("shoal ui --addr 0.0.0.0:0 = %v; want a refusal that says why\n%s", err, out)
	}

	ca, cert, key := selfSignedCert(t)
	port := freePort(t)
	var buf syncBuffer
	cmd := rootCmd()
	cmd.SetArgs([]string{"ui", "--nats-url", env.Server.URL(), "--state-dir", state,
		"--addr", fmt.Sprintf("0.0.0.0:%d", port), "--ui-tls-cert", cert, "--ui-tls-key", key})
	cmd.SetOut(&buf)
	cmd.SetErr(&buf)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("shoal ui returned %v when interrupted", err)
		}
	}()

	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	url := fmt.Sprintf("https://127.0.0.1:%d/api/runs", port)
	get := func(user, password string) (int, error) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.SetBasicAuth(user, password)
		res, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	eventually(t, time.Minute, func() string {
		code, err := get(string(natsauth.Seeder), env.Passwords[natsauth.Seeder])
		if err != nil || code != http.StatusOK {
			return fmt.Sprintf("GET %s as the seeder: %d %v", url, code, err)
		}
		return ""
	})
	if code, err := get(string(natsauth.Seeder), "guess"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("a wrong password: %d %v; want 401", code, err)
	}
	want := fmt.Sprintf("web UI (read-only) on https://0.0.0.0:%d/: log in with user seeder, the password in %s", port,
		natsauth.PasswordFile(credentialsDir(state), natsauth.Seeder))
	if got := buf.String(); !strings.Contains(got, want) {
		t.Errorf("shoal ui said:\n%s\nwant: %s", got, want)
	}
}
