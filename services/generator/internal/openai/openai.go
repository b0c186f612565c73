// Package openai is a client for any OpenAI-compatible chat-completions endpoint: vLLM,
// SGLang, llama.cpp server, Ollama, LM Studio and hosted APIs. It sends one prompt, retries
// what a retry can fix (network errors, timeouts, 429 and 5xx, honouring Retry-After) and
// reports everything else at once with the server's own words.
package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// Client sends chat-completions requests for one model at one endpoint.
type Client struct {
	cfg Config
}

// Config is one model's endpoint and sampling settings, as the run config gives them.
type Config struct {
	// APIBase is the endpoint's base URL, such as http://host:8000/v1; "/chat/completions"
	// is appended.
	APIBase string
	// APIKey is sent as a bearer token when set; local servers usually need none.
	APIKey string
	Model  string
	// Temperature is always sent (0 is greedy decoding); TopP and MaxTokens only when set.
	Temperature float64
	TopP        float64
	MaxTokens   int
	// Timeout bounds each attempt; 0 leaves it to the caller's context.
	Timeout time.Duration
	// Retries is how many times a retryable failure is tried again after the first attempt.
	Retries int
	// RetryDelay is the first backoff; each retry doubles it, with jitter, up to MaxRetryDelay.
	RetryDelay time.Duration
	// HTTPClient defaults to http.DefaultClient.
	HTTPClient *http.Client
}

// MaxRetryDelay caps the backoff between attempts and any Retry-After a server asks for.
const MaxRetryDelay = 2 * time.Minute

// maxReplyBytes bounds a reply body; a chat completion is far smaller.
const maxReplyBytes = 16 << 20

// errorBodyBytes is how much of a failed response's body an error quotes.
const errorBodyBytes = 300

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	if cfg.APIBase == "" {
		return nil, errors.New("openai: api_base is empty")
	}
	if cfg.Model == "" {
		return nil, errors.New("openai: model name is empty")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	cfg.APIBase = strings.TrimRight(cfg.APIBase, "/")
	return &Client{cfg: cfg}, nil
}

// Usage is the token accounting the server reports.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
}

// Reply is the first choice's text and the request's usage.
type Reply struct {
	Text string
	// FinishReason is "stop", or "length" when the reply was cut at max_tokens.
	FinishReason string
	Usage        Usage
	// Attempts is how many requests it took.
	Attempts int
}

// StatusError is a response other than 2xx.
type StatusError struct {
	Code int
	// Body is the start of the response body, where servers explain themselves.
	Body string
	// RetryAfter is the delay the server asked for (429, 503), if any.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("HTTP %d %s", e.Code, http.StatusText(e.Code))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

// Retryable reports whether the same request may succeed later: rate limits and server errors.
func (e *StatusError) Retryable() bool {
	return e.Code == http.StatusTooManyRequests || e.Code == http.StatusRequestTimeout || e.Code >= 500
}

// request is the body of POST /chat/completions.
type request struct {
	Model       string                 `json:"model"`
	Messages    []protocol.ChatMessage `json:"messages"`
	Temperature float64                `json:"temperature"`
	TopP        float64                `json:"top_p,omitempty"`
	MaxTokens   int                    `json:"max_tokens,omitempty"`
	Seed        *int64                 `json:"seed,omitempty"`
	Stream      bool                   `json:"stream"`
}

type response struct {
	Choices []struct {
		Message struct {
			Content *string `json:"content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage Usage `json:"usage"`
}

// Complete sends messages and returns the reply. seed, when not 0, asks servers that support
// it for reproducible sampling, so a redelivered task tends to get the same reply.
func (c *Client) Complete(ctx context.Context, messages []protocol.ChatMessage, seed int64) (Reply, error) {
	req := request{
		Model:       c.cfg.Model,
		Messages:    messages,
		Temperature: c.cfg.Temperature,
		TopP:        c.cfg.TopP,
		MaxTokens:   c.cfg.MaxTokens,
	}
	if seed != 0 {
		req.Seed = &seed
	}
	body, err := json.Marshal(req)
	if err != nil {
		return Reply{}, fmt.Errorf("encode request: %w", err)
	}
	url := c.cfg.APIBase + "/chat/completions"
	delay := c.cfg.RetryDelay
	for attempt := 1; ; attempt++ {
		reply, err := c.once(ctx, url, body)
		if err == nil {
			reply.Attempts = attempt
			return reply, nil
		}
		retry, wait := retryable(err)
		if ctx.Err() != nil {
			return Reply{}, fmt.Errorf("%s %s: %w", c.cfg.Model, url, ctx.Err())
		}
		if !retry {
			return Reply{}, fmt.Errorf("%s at %s: %w (not retried)", c.cfg.Model, url, err)
		}
		if attempt > c.cfg.Retries {
			return Reply{}, fmt.Errorf("%s at %s: %w (gave up after %d attempts)", c.cfg.Model, url, err, attempt)
		}
		if wait <= 0 {
			wait = jitter(delay)
			delay = min(delay*2, MaxRetryDelay)
		}
		select {
		case <-ctx.Done():
			return Reply{}, fmt.Errorf("%s at %s: %w (last error: %v)", c.cfg.Model, url, ctx.Err(), err)
		case <-time.After(min(wait, MaxRetryDelay)):
		}
	}
}

// once makes one attempt under the per-request timeout.
func (c *Client) once(ctx context.Context, url string, body []byte) (Reply, error) {
	if c.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, c.cfg.Timeout, fmt.Errorf("no reply within %s: %w", c.cfg.Timeout, errTimeout))
		defer cancel()
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return Reply{}, fmt.Errorf("build request: %w", errPermanent{err})
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	if c.cfg.APIKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	}
	resp, err := c.cfg.HTTPClient.Do(hreq)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errTimeout) {
			return Reply{}, cause
		}
		return Reply{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		head, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyBytes))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
		return Reply{}, &StatusError{
			Code:       resp.StatusCode,
			Body:       strings.TrimSpace(string(head)),
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes+1))
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errTimeout) {
			return Reply{}, cause
		}
		return Reply{}, fmt.Errorf("read reply: %w", err)
	}
	if len(data) > maxReplyBytes {
		return Reply{}, errPermanent{fmt.Errorf("reply over %d bytes", maxReplyBytes)}
	}
	var r response
	if err := json.Unmarshal(data, &r); err != nil {
		return Reply{}, errPermanent{fmt.Errorf("malformed reply (%v): %s", err, quote(data))}
	}
	if len(r.Choices) == 0 {
		return Reply{}, errPermanent{fmt.Errorf("reply has no choices: %s", quote(data))}
	}
	ch := r.Choices[0]
	text := ""
	if ch.Message.Content != nil {
		text = *ch.Message.Content
	}
	return Reply{Text: text, FinishReason: ch.FinishReason, Usage: r.Usage}, nil
}

// errTimeout is the cause of a per-request timeout, told apart from the caller cancelling.
var errTimeout = errors.New("request timed out")

// errPermanent marks a failure that the same request would meet again.
type errPermanent struct{ err error }

func (e errPermanent) Error() string { return e.err.Error() }
func (e errPermanent) Unwrap() error { return e.err }

// retryable says whether err may pass on another attempt, and how long the server asked us
// to wait (0: use the backoff).
func retryable(err error) (bool, time.Duration) {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Retryable(), se.RetryAfter
	}
	var pe errPermanent
	if errors.As(err, &pe) {
		return false, 0
	}
	// Network errors, resets, timeouts: the server may be restarting or overloaded.
	return true, 0
}

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return min(time.Duration(secs*float64(time.Second)), MaxRetryDelay)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), MaxRetryDelay)
	}
	return 0
}

// jitter spreads d over [d/2, 3d/2) so that replicas that failed together do not retry
// together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d)
}

func quote(data []byte) string {
	if len(data) > errorBodyBytes {
		data = data[:errorBodyBytes]
	}
	return strconv.Quote(string(data))
}
