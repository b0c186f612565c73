package ui

import (
	"errors"
	"strings"
	"testing"
)

// TestServesBeyondLoopbackOnlyWithTLS: as `shoal up --listen` does for NATS, the UI refuses
// an address beyond this machine unless it has a certificate, and says why.
func TestServesBeyondLoopbackOnlyWithTLS(t *testing.T) {
	for _, tc := range []struct {
		addr, cert, key string
		insecure        bool
		ok              bool
	}{
		{"127.0.0.1:8080", "", "", false, true},
		{"localhost:0", "", "", false, true},
		{"[::1]:8080", "", "", false, true},
		{"0.0.0.0:8080", "", "", false, false},
		{"192.168.1.10:8080", "", "", false, false},
		{"0.0.0.0:8443", "ui.crt", "ui.key", false, true},
		{"0.0.0.0:8080", "", "", true, true},
		{"127.0.0.1:8443", "ui.crt", "", false, false},
		{"8080", "", "", false, false},
	} {
		c := Config{Addr: tc.addr, TLSCert: tc.cert, TLSKey: tc.key, InsecureHTTP: tc.insecure}
		err := c.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("Validate(%s, cert %q, key %q) = %v; want ok %v", tc.addr, tc.cert, tc.key, err, tc.ok)
		}
		if tc.addr == "0.0.0.0:8080" && !tc.insecure && (err == nil || !strings.Contains(err.Error(), "without TLS")) {
			t.Errorf("the refusal does not say why: %v", err)
		}
	}
}

// TestDiffRebuildsBothSides: the '-' and ' ' lines give the parent, the '+' and ' ' lines
// the child, and only changed lines are marked.
func TestDiffRebuildsBothSides(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"", "x = 1\n"},
		{"x = 1\n", ""},
		{"a\nb\nc\n", "a\nB\nc\n"},
		{"def f():\n    return 1\n", "def f():\n    y = 2\n    return y\n"},
		{"same\n", "same\n"},
	} {
		var old, neu []string
		changed := 0
		for _, l := range diffLines(tc.a, tc.b) {
			if l.Op != "+" {
				old = append(old, l.Text)
			}
			if l.Op != "-" {
				neu = append(neu, l.Text)
			}
			if l.Op != " " {
				changed++
			}
		}
		if got := strings.Join(old, "\n"); got != strings.TrimSuffix(tc.a, "\n") {
			t.Errorf("diff(%q, %q): old side %q", tc.a, tc.b, got)
		}
		if got := strings.Join(neu, "\n"); got != strings.TrimSuffix(tc.b, "\n") {
			t.Errorf("diff(%q, %q): new side %q", tc.a, tc.b, got)
		}
		if tc.a == tc.b && changed != 0 {
			t.Errorf("diff of equal programs marks %d lines", changed)
		}
	}
}
