// Package standin is a stand-in for an OpenAI-compatible model server, for measuring shoal
// rather than a model. It has what a serving engine has that matters to a client: a fixed
// number of batch slots (requests beyond them wait in a queue), a latency per request before
// the first token, a decode rate per slot and a reply length. It reports its own busy
// fraction, so a benchmark can tell how much of the server's capacity a client kept in use.
//
// Its replies are real edits. In "perturb" mode it finds the program the prompt asks to
// change (the block under "# Current Program") and answers with a SEARCH/REPLACE block that
// moves one numeric literal inside the EVOLVE-BLOCK by a Gaussian step, so a search driven by
// it makes progress. In "noise" mode it answers with an edit that applies but rarely helps.
package standin

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config shapes the server's timing and replies.
type Config struct {
	// Model is the name /v1/models lists; requests for any name are served.
	Model string
	// Slots is how many requests run at once (a serving engine's batch); default 64.
	Slots int
	// Latency is the time before the first token of every request.
	Latency time.Duration
	// TokensPerSec is the decode rate of one slot; 0 decodes instantly.
	TokensPerSec float64
	// ReplyTokens pads each reply to about this many tokens (4 bytes a token); 0: no padding.
	ReplyTokens int
	// Mode is "perturb" (default) or "noise".
	Mode string
	// Step is the relative standard deviation of a perturbation; default 0.1.
	Step float64
	// Digits is how many significant digits a moved literal is written with; default 6.
	// Fewer make many edits land on a value already tried: duplicates, as a model that
	// rounds its constants proposes.
	Digits int
	// Seed makes replies repeatable: a reply depends on the seed and the prompt.
	Seed uint64
}

// Server is the stand-in. Its zero value is not usable; call New.
type Server struct {
	cfg   Config
	slots chan struct{}

	mu       sync.Mutex
	since    time.Time     // start of the measuring window
	busy     time.Duration // slot time used in the window by requests that ended
	running  map[uint64]time.Time
	next     uint64
	requests int64
	waited   time.Duration // time requests spent queued for a slot
}

// New returns a stand-in with cfg's defaults filled in.
func New(cfg Config) *Server {
	if cfg.Slots <= 0 {
		cfg.Slots = 64
	}
	if cfg.Model == "" {
		cfg.Model = "standin"
	}
	if cfg.Mode == "" {
		cfg.Mode = "perturb"
	}
	if cfg.Step <= 0 {
		cfg.Step = 0.1
	}
	if cfg.Digits <= 0 {
		cfg.Digits = 6
	}
	s := &Server{cfg: cfg, slots: make(chan struct{}, cfg.Slots), since: time.Now(), running: map[uint64]time.Time{}}
	return s
}

// Stats is what the server reports of itself since the last reset.
type Stats struct {
	Slots    int     `json:"slots"`
	Requests int64   `json:"requests"`
	Elapsed  float64 `json:"elapsed_s"`
	// BusyFraction is the slot time used by requests over slots × elapsed: 1 means every
	// slot served a request all the time.
	BusyFraction float64 `json:"busy_fraction"`
	// MeanQueueMS is how long a request waited for a free slot, on average.
	MeanQueueMS float64 `json:"mean_queue_ms"`
}

// Stats reports the window since the last Reset (or New).
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	busy := s.busy
	for _, start := range s.running {
		busy += now.Sub(later(start, s.since))
	}
	elapsed := now.Sub(s.since)
	st := Stats{Slots: s.cfg.Slots, Requests: s.requests, Elapsed: elapsed.Seconds()}
	if elapsed > 0 {
		st.BusyFraction = busy.Seconds() / (elapsed.Seconds() * float64(s.cfg.Slots))
	}
	if s.requests > 0 {
		st.MeanQueueMS = float64(s.waited.Microseconds()) / 1000 / float64(s.requests)
	}
	return st
}

// Reset starts a new measuring window; requests running now count from now on.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.since, s.busy, s.requests, s.waited = time.Now(), 0, 0, 0
}

func (s *Server) begin(queued time.Duration) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	s.running[s.next] = time.Now()
	s.requests++
	s.waited += queued
	return s.next
}

func (s *Server) end(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.busy += time.Since(later(s.running[id], s.since))
	delete(s.running, id)
}

// ServeHTTP answers /v1/chat/completions, /v1/models, /health and /stats (GET reports,
// POST /stats/reset starts a new window).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v1/chat/completions" && r.Method == http.MethodPost:
		s.complete(w, r)
	case r.URL.Path == "/v1/models":
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{map[string]string{"id": s.cfg.Model, "object": "model"}}})
	case r.URL.Path == "/health":
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case r.URL.Path == "/stats" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, s.Stats())
	case r.URL.Path == "/stats/reset" && r.Method == http.MethodPost:
		s.Reset()
		writeJSON(w, http.StatusOK, s.Stats())
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]string{"message": "not found: " + r.URL.Path}})
	}
}

type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	Seed *int64 `json:"seed"`
}

func (s *Server) complete(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(&req); err != nil || len(req.Messages) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{"message": fmt.Sprintf("bad request: %v", err)}})
		return
	}
	arrived := time.Now()
	select {
	case s.slots <- struct{}{}:
	case <-r.Context().Done():
		return
	}
	id := s.begin(time.Since(arrived))
	defer func() { <-s.slots; s.end(id) }()

	prompt := req.Messages[len(req.Messages)-1].Content
	content := s.reply(prompt, req.Seed)
	tokens := len(content) / 4
	if s.cfg.ReplyTokens > tokens {
		content += "\n" + strings.Repeat("pad ", s.cfg.ReplyTokens-tokens)
		tokens = s.cfg.ReplyTokens
	}
	work := s.cfg.Latency
	if s.cfg.TokensPerSec > 0 {
		work += time.Duration(float64(tokens) / s.cfg.TokensPerSec * float64(time.Second))
	}
	if work > 0 {
		t := time.NewTimer(work)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	model := req.Model
	if model == "" {
		model = s.cfg.Model
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id": "standin", "object": "chat.completion", "model": model,
		"choices": []any{map[string]any{"index": 0, "message": map[string]string{"role": "assistant", "content": content}, "finish_reason": "stop"}},
		"usage":   map[string]int{"prompt_tokens": len(prompt) / 4, "completion_tokens": tokens, "total_tokens": len(prompt)/4 + tokens},
	})
}

var (
	currentProgram = regexp.MustCompile("(?s)# Current Program\\n```[^\\n]*\\n(.*?)\\n```")
	number         = regexp.MustCompile(`(?:^|[^\w.])(-?\d+\.\d*(?:[eE][-+]?\d+)?|-?\d+)(?:$|[^\w.])`)
)

// reply is the completion for prompt: an edit of one numeric literal of the current program's
// EVOLVE-BLOCK, drawn from a generator seeded by the server's seed, the request's seed and the
// prompt.
func (s *Server) reply(prompt string, seed *int64) string {
	h := fnv.New64a()
	h.Write([]byte(prompt))
	var rs uint64
	if seed != nil {
		rs = uint64(*seed)
	}
	rng := rand.New(rand.NewPCG(s.cfg.Seed^h.Sum64(), rs))
	m := currentProgram.FindStringSubmatch(prompt)
	if m == nil {
		return "No program found in the prompt."
	}
	var lines []string
	inside := false
	for _, line := range strings.Split(m[1], "\n") {
		switch {
		case strings.Contains(line, "EVOLVE-BLOCK-START"):
			inside = true
		case strings.Contains(line, "EVOLVE-BLOCK-END"):
			inside = false
		case inside && !strings.HasPrefix(strings.TrimSpace(line), "#") && number.MatchString(line):
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		return "Nothing to tune."
	}
	line := lines[rng.IntN(len(lines))]
	locs := number.FindAllStringSubmatchIndex(line, -1)
	loc := locs[rng.IntN(len(locs))]
	lit := line[loc[2]:loc[3]]
	v, err := strconv.ParseFloat(lit, 64)
	if err != nil {
		return "Nothing to tune."
	}
	var nv float64
	switch s.cfg.Mode {
	case "noise":
		// A jump far from the value: it applies, and it rarely helps.
		nv = v + rng.NormFloat64()*math.Max(math.Abs(v), 1)*10
	default:
		nv = v + rng.NormFloat64()*math.Max(math.Abs(v), 0.01)*s.cfg.Step
	}
	repl := strconv.FormatFloat(nv, 'g', s.cfg.Digits, 64)
	switch {
	case !strings.ContainsAny(lit, ".eE"):
		// An integer moves by at least one, or it would not move at all.
		d := math.Round(nv - v)
		if d == 0 {
			d = float64(1 - 2*rng.IntN(2))
		}
		repl = strconv.FormatInt(int64(v+d), 10)
	case !strings.ContainsAny(repl, ".eE"):
		repl += ".0" // a float stays a float
	}
	newLine := line[:loc[2]] + repl + line[loc[3]:]
	if newLine == line {
		return "Nothing to tune."
	}
	return fmt.Sprintf("Move one constant.\n<<<<<<< SEARCH\n%s\n=======\n%s\n>>>>>>> REPLACE\n", line, newLine)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	data, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(data)
}
