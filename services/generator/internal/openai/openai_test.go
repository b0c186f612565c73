package openai

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
)

var prompt = []protocol.ChatMessage{{Role: "system", Content: "be brief"}, {Role: "user", Content: "improve it"}}

const okBody = `{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}`

// server answers the n-th request (1-based) with respond(n); it records every request body.
type server struct {
	*httptest.Server
	calls  atomic.Int32
	bodies chan request
	auth   chan string
}

func newServer(t *testing.T, respond func(n int, w http.ResponseWriter, r *http.Request)) *server {
	t.Helper()
	s := &server{bodies: make(chan request, 16), auth: make(chan string, 16)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(s.calls.Add(1))
		if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
			http.Error(w, "wrong route "+r.Method+" "+r.URL.Path, http.StatusNotFound)
			return
		}
		var req request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.bodies <- req
		s.auth <- r.Header.Get("Authorization")
		respond(n, w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func client(t *testing.T, s *server, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		APIBase:     s.URL + "/v1/",
		Model:       "qwen",
		Temperature: 0.7,
		MaxTokens:   256,
		Timeout:     5 * time.Second,
		Retries:     3,
		RetryDelay:  10 * time.Millisecond,
		HTTPClient:  s.Client(),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCompleteSuccess(t *testing.T) {
	s := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(okBody))
	})
	c := client(t, s, func(c *Config) { c.APIKey = "sk-test" })
	got, err := c.Complete(context.Background(), prompt, 42)
	if err != nil {
		t.Fatal(err)
	}
	if got.Text != "hello" || got.Usage.PromptTokens != 12 || got.Usage.CompletionTokens != 3 || got.Attempts != 1 || got.FinishReason != "stop" {
		t.Errorf("reply = %+v, want text hello, usage 12/3, 1 attempt", got)
	}
	req := <-s.bodies
	if req.Model != "qwen" || req.Temperature != 0.7 || req.MaxTokens != 256 || req.TopP != 0 || req.Seed == nil || *req.Seed != 42 || len(req.Messages) != 2 {
		t.Errorf("request = %+v", req)
	}
	if a := <-s.auth; a != "Bearer sk-test" {
		t.Errorf("Authorization = %q, want Bearer sk-test", a)
	}
}

func TestCompleteOmitsUnsetFields(t *testing.T) {
	var raw atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		_ = json.NewDecoder(r.Body).Decode(&m)
		raw.Store(map[string]any{"m": m, "auth": r.Header.Get("Authorization")})
		_, _ = w.Write([]byte(okBody))
	}))
	defer srv.Close()
	c, err := New(Config{APIBase: srv.URL, Model: "m", HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Complete(context.Background(), prompt, 0); err != nil {
		t.Fatal(err)
	}
	got := raw.Load().(map[string]any)
	body := got["m"].(map[string]any)
	for _, k := range []string{"top_p", "max_tokens", "seed"} {
		if _, ok := body[k]; ok {
			t.Errorf("request has %q although unset: %v", k, body)
		}
	}
	if _, ok := body["temperature"]; !ok {
		t.Errorf("request lacks temperature: %v", body)
	}
	if got["auth"] != "" {
		t.Errorf("Authorization = %q with no key, want none", got["auth"])
	}
}

func TestCompleteRetriesServerError(t *testing.T) {
	s := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			http.Error(w, "engine overloaded", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(okBody))
	})
	got, err := client(t, s, nil).Complete(context.Background(), prompt, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Text != "hello" || got.Attempts != 2 || s.calls.Load() != 2 {
		t.Errorf("reply = %+v after %d calls, want hello after 2", got, s.calls.Load())
	}
}

func TestCompleteHonoursRetryAfter(t *testing.T) {
	var first atomic.Int64
	var gap atomic.Int64
	s := newServer(t, func(n int, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			first.Store(time.Now().UnixNano())
			w.Header().Set("Retry-After", "1")
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		gap.Store(time.Now().UnixNano() - first.Load())
		_, _ = w.Write([]byte(okBody))
	})
	// A backoff of 10ms would retry almost at once; the server asked for a second.
	got, err := client(t, s, nil).Complete(context.Background(), prompt, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempts != 2 {
		t.Errorf("attempts = %d, want 2", got.Attempts)
	}
	if d := time.Duration(gap.Load()); d < 900*time.Millisecond {
		t.Errorf("retried after %s, want about the 1s of Retry-After", d)
	}
}

func TestCompleteDoesNotRetryClientError(t *testing.T) {
	long := strings.Repeat("x", 1000)
	s := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"invalid api key"}`+long, http.StatusUnauthorized)
	})
	_, err := client(t, s, nil).Complete(context.Background(), prompt, 0)
	if err == nil {
		t.Fatal("want an error for 401")
	}
	if n := s.calls.Load(); n != 1 {
		t.Errorf("calls = %d, want 1: a 401 is not retried", n)
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 401 {
		t.Fatalf("error %v is not a StatusError with code 401", err)
	}
	msg := err.Error()
	for _, want := range []string{"401", "invalid api key", "not retried"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if len(se.Body) > errorBodyBytes {
		t.Errorf("error quotes %d bytes of body, want at most %d", len(se.Body), errorBodyBytes)
	}
}

func TestCompleteGivesUpAfterRetries(t *testing.T) {
	s := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "bad gateway", http.StatusBadGateway)
	})
	_, err := client(t, s, func(c *Config) { c.Retries = 2 }).Complete(context.Background(), prompt, 0)
	if err == nil || !strings.Contains(err.Error(), "502") || !strings.Contains(err.Error(), "3 attempts") {
		t.Errorf("err = %v, want a 502 after 3 attempts", err)
	}
	if n := s.calls.Load(); n != 3 {
		t.Errorf("calls = %d, want 3", n)
	}
}

func TestCompleteTimeout(t *testing.T) {
	s := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never answers; ends when the client gives up
	})
	start := time.Now()
	_, err := client(t, s, func(c *Config) { c.Timeout = 100 * time.Millisecond; c.Retries = 1 }).Complete(context.Background(), prompt, 0)
	if err == nil || !strings.Contains(err.Error(), "no reply within 100ms") {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if n := s.calls.Load(); n != 2 {
		t.Errorf("calls = %d, want 2: a timeout is retried", n)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %s, want about 200ms", d)
	}
}

func TestCompleteCallerCancel(t *testing.T) {
	s := newServer(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := client(t, s, func(c *Config) { c.Timeout = 0 }).Complete(ctx, prompt, 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the caller's deadline", err)
	}
}

func TestCompleteMalformedReply(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"not json", `<html>gateway</html>`, "malformed reply"},
		{"no choices", `{"choices":[]}`, "no choices"},
		{"truncated", `{"choices":[{"message":{"content":"hel`, "malformed reply"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte(tt.body))
			})
			_, err := client(t, s, nil).Complete(context.Background(), prompt, 0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
			if n := s.calls.Load(); n != 1 {
				t.Errorf("calls = %d, want 1", n)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{"0.5", 500 * time.Millisecond},
		{"-1", 0},
		{"99999", MaxRetryDelay},
		{now.Add(10 * time.Second).Format(http.TimeFormat), 10 * time.Second},
		{"soon", 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
