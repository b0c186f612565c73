package protocol

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// fuzzKinds are the bodies a service decodes from the wire or a bucket, one per subject.
var fuzzKinds = []func() Message{
	func() Message { return &Seed{} },
	func() Message { return &Task{} },
	func() Message { return &Candidate{} },
	func() Message { return &Result{} },
	func() Message { return &Event{} },
	func() Message { return &SampleRequest{} },
	func() Message { return &SampleReply{} },
	func() Message { return &SnapshotReply{} },
	func() Message { return &RunSpec{} },
	func() Message { return &RunState{} },
	func() Message { return &PlannerState{} },
	func() Message { return &RunControl{} },
	func() Message { return &BestProgram{} },
	func() Message { return &Generator{} },
}

// FuzzDecodeRoundTrip feeds arbitrary bytes to Decode for every body type (FuzzDecode, in
// protocol_test.go, covers three). Whatever arrives on a subject must not panic; a rejection
// must wrap one of the sentinels (so a service can tell a bad body from its own trouble and
// dead-letter it at once); and what is accepted must re-encode to a body that decodes to the
// same encoding, so a service that forwards a body never corrupts it.
func FuzzDecodeRoundTrip(f *testing.F) {
	now := time.Date(2026, 11, 23, 1, 2, 3, 4, time.UTC)
	valid := []Message{
		&Task{Meta: Meta{ID: "r.t1", Run: "r"}, Model: "m", Iteration: 1, Island: 2, Mode: ModeDiff,
			Parent:   Program{ID: "p", Code: "x = 1\n", Metrics: map[string]float64{"combined_score": 0.5}, Features: []int{1, 2}},
			Messages: []ChatMessage{{Role: "user", Content: "improve"}}, CreatedAt: now},
		&Candidate{Meta: Meta{ID: "c.r.t1", Run: "r"}, TaskID: "r.t1", Code: "def f():\n\treturn '\u00e9'\n", Tokens: TokenUsage{Prompt: 3}},
		&Result{Meta: Meta{ID: "r.c.r.t1", Run: "r"}, Status: StatusFailed, Reason: "dead-lettered: boom", Artifacts: map[string]string{"stderr": "<>&"}},
		&RunState{Meta: Meta{ID: "r", Run: "r"}, Islands: []IslandState{{Island: 1, Cells: 3}}, UpdatedAt: now},
		&Seed{Meta: Meta{ID: "s", Run: "r"}, Program: "print(1)", CreatedAt: now},
	}
	for i, m := range valid {
		data, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), data)
	}
	for _, s := range []string{
		``, `null`, `[]`, `{}`, `{"v":null}`, `{"v":"1"}`, `{"v":2,"id":"x"}`, `{"v":1,"id":7}`,
		`{"v":1} trailing`, `{"v":1,"created_at":"yesterday"}`, `{"v":1,"metrics":{"a":"NaN"}}`,
		`{"v":1,"V":2}`, `{"v":1e400}`, `{"v":1,"parent":{"features":[1e20]}}`, "\xff\xfe{\"v\":1}",
	} {
		f.Add(uint8(1), []byte(s))
	}
	f.Fuzz(func(t *testing.T, kind uint8, data []byte) {
		m := fuzzKinds[int(kind)%len(fuzzKinds)]()
		err := Decode(data, m)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrUnknownVersion) {
				t.Fatalf("Decode error %v wraps no sentinel", err)
			}
			return
		}
		if len(data) > MaxBodyBytes {
			t.Fatalf("Decode accepted %d bytes, over the %d limit", len(data), MaxBodyBytes)
		}
		once, err := Encode(m)
		if errors.Is(err, ErrTooLarge) {
			return // JSON escaping grew an accepted body past the limit: refused, not corrupted
		}
		if err != nil {
			t.Fatalf("re-encode an accepted %T: %v", m, err)
		}
		again := fuzzKinds[int(kind)%len(fuzzKinds)]()
		if err := Decode(once, again); err != nil {
			t.Fatalf("decode a re-encoded %T: %v\nbody: %s", m, err, once)
		}
		twice, err := Encode(again)
		if err != nil {
			t.Fatalf("re-encode twice: %v", err)
		}
		if !bytes.Equal(once, twice) {
			t.Fatalf("re-encoding changed the body:\n%s\n%s", once, twice)
		}
	})
}
