package population

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// synthetic returns n results of a run over islands, as a real run produces them: a seed,
// then generated programs of varying length and content, some failing or rejected, with
// custom metrics, and every 17th result redelivered.
func synthetic(n, islands int) []*protocol.Result {
	rng := rand.New(rand.NewPCG(7, 11))
	rs := []*protocol.Result{result("seed", true, protocol.StatusOK, 0.1)}
	for i := range n {
		id := fmt.Sprintf("c.r.t%d", i+1)
		status := protocol.StatusOK
		switch rng.IntN(20) {
		case 0:
			status = protocol.StatusFailed
		case 1:
			status = protocol.StatusRejected
		case 2:
			status = protocol.StatusTimeout
		}
		r := result(id, false, status, rng.Float64()*float64(i+50)/float64(n+50))
		c := &r.Candidate
		c.Island = i % islands
		c.Iteration = int64(i + 1)
		c.Generation = 1 + rng.IntN(20)
		c.ParentID = fmt.Sprintf("c.r.t%d", rng.IntN(i+1))
		c.Changes = "change " + id
		if status != protocol.StatusRejected {
			c.Code = syntheticCode(rng, i)
		}
		if status != protocol.StatusOK {
			r.Reason = "stage 1: " + string(status)
		}
		r.Metrics = map[string]float64{"combined_score": r.Score, "speed": rng.Float64() * 10}
		rs = append(rs, r)
		if i%17 == 0 {
			rs = append(rs, r)
		}
	}
	return rs
}

func syntheticCode(rng *rand.Rand, i int) string {
	var b strings.Builder
	b.WriteString("# EVOLVE-BLOCK-START\ndef solve(xs):\n")
	for l := range 20 + rng.IntN(80) {
		fmt.Fprintf(&b, "    v%d = xs[%d] * %d + %d  # step %d\n", l, rng.IntN(64), rng.IntN(1000), i, l)
	}
	b.WriteString("    return v0\n# EVOLVE-BLOCK-END\n")
	return b.String()
}
