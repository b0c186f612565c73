package population

import (
	"strings"

	"github.com/shoal-run/shoal/pkg/protocol"
)

// noteSeed counts a seed's outcome and, while no seed has passed, keeps why the first one
// failed: a run whose seed cannot be evaluated (an evaluator that does not import, a program
// with no valid metrics) must end with the evaluator's own words, not spend its budget.
func noteSeed(st *protocol.RunState, r *protocol.Result) {
	switch {
	case r.Status == protocol.StatusOK:
		st.SeedsOK++
		st.SeedError = ""
	case st.SeedsOK == 0 && st.SeedError == "":
		st.SeedError = seedError(r)
	}
}

// maxSeedError bounds the error kept in the run's state; the result in RESULTS keeps all.
const maxSeedError = 4096

// seedError is the failed seed's reason, with the evaluator's traceback or error output when
// it has one: "SyntaxError" alone does not say where.
func seedError(r *protocol.Result) string {
	msg := strings.TrimSpace(r.Reason)
	if msg == "" {
		msg = string(r.Status)
	}
	for _, k := range []string{"traceback", "stderr"} {
		a := strings.TrimRight(r.Artifacts[k], " \t\r\n")
		if strings.TrimSpace(a) != "" && !strings.Contains(msg, strings.TrimSpace(a)) {
			msg += "\n" + strings.TrimLeft(a, "\r\n")
			break
		}
	}
	if len(msg) > maxSeedError {
		msg = "…" + strings.ToValidUTF8(msg[len(msg)-maxSeedError:], "") // the end of a traceback says most
	}
	return msg
}
