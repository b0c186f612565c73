// Package protocol is shoal's wire contract: the subjects, streams, buckets and message bodies
// that the four services exchange over NATS JetStream. Nothing else is shared between services.
//
// Every body is JSON with a "v" field; Decode rejects unknown versions, oversize bodies and
// malformed JSON with an error wrapping one of the sentinels in errors.go, never a panic.
package protocol

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strings"
)

// Version is the only body version this build reads and writes.
const Version = 1

// DefaultPrefix starts every subject unless a deployment chooses another.
const DefaultPrefix = "shoal"

// MaxBodyBytes bounds every message body. It matches NATS' default max_payload, so a body that
// decodes here can also be published to a stock server.
const MaxBodyBytes = 1 << 20

// Header names carried on NATS messages besides the JSON body.
const (
	// HeaderMsgID is JetStream's deduplication header; every shoal message sets it to its id.
	HeaderMsgID = "Nats-Msg-Id"
)

var runIDPattern = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)

// ValidateRunID reports whether id may name a run: 1–64 of [a-z0-9-].
func ValidateRunID(id string) error {
	if !runIDPattern.MatchString(id) {
		return fmt.Errorf("%w: %q must be 1-64 characters of a-z, 0-9 and '-'", ErrBadRunID, id)
	}
	return nil
}

// ModelToken turns a model name from a run config ("Qwen/Qwen2.5-7B", "llama3.1:8b") into a
// single subject token and consumer-name fragment: every character outside [A-Za-z0-9_-]
// becomes '_'.
func ModelToken(model string) string {
	if model == "" {
		return "_"
	}
	var b strings.Builder
	for _, r := range model {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// Encode marshals a message body, stamping the current version, and refuses bodies over
// MaxBodyBytes so that a publisher learns of the problem before the server does.
func Encode(m Message) ([]byte, error) {
	m.setVersion(Version)
	data, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	if len(data) > MaxBodyBytes {
		return nil, fmt.Errorf("encode %T: %w: %d bytes > %d", m, ErrTooLarge, len(data), MaxBodyBytes)
	}
	return data, nil
}

// Decode checks size and version, then unmarshals data into m. The body is parsed once:
// tasks carry whole prompts and programs, and every stage decodes one.
func Decode(data []byte, m Message) error {
	if len(data) > MaxBodyBytes {
		return fmt.Errorf("decode %T: %w: %d bytes > %d", m, ErrTooLarge, len(data), MaxBodyBytes)
	}
	// Still math.MinInt after decoding: the body had no "v" (or that very value).
	const absent = math.MinInt
	m.setVersion(absent)
	err := json.Unmarshal(data, m)
	if err != nil || m.version() == absent {
		// A body of another version may not even fit this build's types: say so, rather
		// than that it is malformed.
		var env struct {
			V *int `json:"v"`
		}
		switch perr := json.Unmarshal(data, &env); {
		case perr == nil && env.V != nil && *env.V != Version:
			return fmt.Errorf("decode %T: %w: v=%d, this build reads v=%d", m, ErrUnknownVersion, *env.V, Version)
		case err != nil:
			return fmt.Errorf("decode %T: %w: %v", m, ErrMalformed, err)
		case env.V == nil:
			return fmt.Errorf("decode %T: %w: no \"v\" field", m, ErrMalformed)
		}
	}
	if v := m.version(); v != Version {
		return fmt.Errorf("decode %T: %w: v=%d, this build reads v=%d", m, ErrUnknownVersion, v, Version)
	}
	return nil
}
