// Package novelty sketches programs so that a generator can tell, without a round trip to the
// archive, whether a candidate is too like a program its island already evaluated
// (database.novelty_threshold). The archive keeps the sketches of each island's latest
// evaluated programs and the task carries them; the generator sketches the child and compares.
//
// A sketch is 72 bytes, base64: a 64-bit hash of the normalised code (equal hashes: the same
// program up to trailing whitespace and blank lines) and a MinHash of its 8-character
// shingles in 32 slots of 16 bits, whose agreement estimates the Jaccard similarity of the two
// programs' shingle sets. Similarity is 1 only for equal normalised code, so a threshold of 1
// skips exact duplicates alone.
package novelty

import (
	"encoding/base64"
	"encoding/binary"
	"hash/fnv"
	"strings"
)

const (
	slots    = 32
	shingle  = 8
	size     = 8 + 2*slots
	nearOnly = 1 - 1.0/(2*slots) // the most that different code may score
)

// Of returns code's sketch.
func Of(code string) string {
	norm := normalise(code)
	var buf [size]byte
	h := fnv.New64a()
	h.Write([]byte(norm))
	binary.LittleEndian.PutUint64(buf[:8], h.Sum64())
	var mins [slots]uint64
	for i := range mins {
		mins[i] = ^uint64(0)
	}
	n := max(len(norm)-shingle+1, 1)
	for i := range n {
		s := fnv64(norm[i:min(i+shingle, len(norm))])
		for k := range mins {
			if v := mix(s ^ seeds[k]); v < mins[k] {
				mins[k] = v
			}
		}
	}
	for k, v := range mins {
		binary.LittleEndian.PutUint16(buf[8+2*k:], uint16(v))
	}
	return base64.RawStdEncoding.EncodeToString(buf[:])
}

// Similarity is 1 for two sketches of the same normalised code, else the share of MinHash
// slots they agree on (an estimate of their shingles' Jaccard similarity), at most 63/64. A
// sketch that does not decode is like nothing: 0.
func Similarity(a, b string) float64 {
	x, okA := decode(a)
	y, okB := decode(b)
	if !okA || !okB {
		return 0
	}
	if string(x[:8]) == string(y[:8]) {
		return 1
	}
	same := 0
	for k := range slots {
		if x[8+2*k] == y[8+2*k] && x[9+2*k] == y[9+2*k] {
			same++
		}
	}
	return min(float64(same)/slots, nearOnly)
}

// Closest finds, among seen, the sketch most similar to sketch: its index and similarity,
// or -1 and 0 when seen is empty.
func Closest(sketch string, seen []string) (int, float64) {
	best, at := 0.0, -1
	for i, s := range seen {
		if v := Similarity(sketch, s); v > best || at < 0 {
			best, at = v, i
			if v == 1 {
				break
			}
		}
	}
	return at, best
}

// normalise drops trailing whitespace and blank lines, which change nothing a program does.
func normalise(code string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(code, "\n") {
		line = strings.TrimRight(line, " \t\r")
		if line == "" {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

func decode(s string) ([]byte, bool) {
	b, err := base64.RawStdEncoding.DecodeString(s)
	return b, err == nil && len(b) == size
}

func fnv64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// mix is splitmix64's finaliser: one hash function per slot from one shingle hash.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// seeds pick each slot's hash function; fixed, so sketches made anywhere compare.
var seeds = func() [slots]uint64 {
	var s [slots]uint64
	for i := range s {
		s[i] = mix(uint64(i+1) * 0x9e3779b97f4a7c15)
	}
	return s
}()
