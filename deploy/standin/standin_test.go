package standin_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-run/shoal/deploy/standin"
)

const prompt = "# Current Program\n```python\n# EVOLVE-BLOCK-START\ndef f():\n    # 9.0 in a comment\n    return 1.5 * 2\n# EVOLVE-BLOCK-END\nprint(7.25)\n```\n"

func complete(t *testing.T, url string, seed int64) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "m", "seed": seed, "messages": []map[string]string{{"role": "user", "content": prompt}}})
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.Choices) != 1 {
		t.Fatalf("reply %v: %v", out, err)
	}
	return out.Choices[0].Message.Content
}

// TestPerturbEditsOneLiteralInsideTheBlock: the reply is a SEARCH/REPLACE edit of a line of
// the current program's EVOLVE-BLOCK (never a comment, never outside the block) that changes
// one number, and the same request gets the same reply.
func TestPerturbEditsOneLiteralInsideTheBlock(t *testing.T) {
	srv := httptest.NewServer(standin.New(standin.Config{Seed: 1}))
	defer srv.Close()
	for seed := range int64(20) {
		reply := complete(t, srv.URL, seed)
		search, replace, ok := strings.Cut(reply, "=======\n")
		if !ok || !strings.Contains(search, "<<<<<<< SEARCH\n    return 1.5 * 2\n") {
			t.Fatalf("seed %d: reply %q does not search the block's only numeric line", seed, reply)
		}
		replace = strings.TrimSuffix(replace, "\n>>>>>>> REPLACE\n")
		if replace == "    return 1.5 * 2" || !strings.HasPrefix(replace, "    return ") {
			t.Fatalf("seed %d: replacement %q", seed, replace)
		}
		if again := complete(t, srv.URL, seed); again != reply {
			t.Fatalf("seed %d: two replies to one request differ: %q, %q", seed, reply, again)
		}
	}
}

// TestBusyFractionCountsSlotTime: three 100 ms requests on a one-slot server keep its slot
// busy for at least 300 ms of the window, and the requests beyond the slot wait in its queue.
func TestBusyFractionCountsSlotTime(t *testing.T) {
	s := standin.New(standin.Config{Slots: 1, Latency: 100 * time.Millisecond})
	srv := httptest.NewServer(s)
	defer srv.Close()
	s.Reset()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); complete(t, srv.URL, 0) }()
	}
	wg.Wait()
	st := s.Stats()
	if st.Requests != 3 {
		t.Fatalf("requests %d; want 3", st.Requests)
	}
	// The requests' latency is a floor on the slot time, however slow the machine.
	busy := st.BusyFraction * st.Elapsed * float64(st.Slots)
	if busy < 0.3 || st.BusyFraction > 1.0001 {
		t.Fatalf("busy %.3f s of %.3f s (fraction %.3f); want at least the 0.3 s three requests took, at most the window",
			busy, st.Elapsed, st.BusyFraction)
	}
	if st.MeanQueueMS < 50 {
		t.Fatalf("mean queue %.1f ms; want the second and third requests to have waited for the slot", st.MeanQueueMS)
	}
}
