package program

import (
	"fmt"
	"strings"
	"testing"
)

// benchProgram is a 400-line program with one evolve block in the middle.
func benchProgram() string {
	var b strings.Builder
	for i := range 150 {
		fmt.Fprintf(&b, "def helper_%d(x):\n    return x + %d\n", i, i)
	}
	b.WriteString("# EVOLVE-BLOCK-START\ndef solve(data):\n    total = 0\n    for item in data:\n        total += item * 2\n    return total\n# EVOLVE-BLOCK-END\n")
	for i := range 50 {
		fmt.Fprintf(&b, "print(helper_%d(%d))\n", i, i)
	}
	return b.String()
}

func BenchmarkApplyDiff(b *testing.B) {
	code := benchProgram()
	cases := map[string]string{
		"exact":    "<<<<<<< SEARCH\n    for item in data:\n        total += item * 2\n=======\n    for item in data:\n        total += item * 3\n>>>>>>> REPLACE\n",
		"tolerant": "<<<<<<< SEARCH\nfor item in data:\n    total += item * 2   \n=======\nfor item in data:\n    total += item * 3\n>>>>>>> REPLACE\n",
	}
	for name, reply := range cases {
		b.Run(name, func(b *testing.B) {
			for range b.N {
				blocks, err := ParseDiff(reply)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := ApplyDiff(code, blocks); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
