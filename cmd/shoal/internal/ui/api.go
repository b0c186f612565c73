package ui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/services/archive"
)

// runDetail is one run's page: what the list says of it and its aggregate. An event stream
// sends it in parts: each part only when it moved, and only the score points not yet sent.
type runDetail struct {
	Run         string         `json:"run"`
	Summary     *runSummary    `json:"summary,omitempty"`
	Evaluations int64          `json:"evaluations"`
	From        int            `json:"from"` // index of Points[0] in the run's score points
	Points      []scorePoint   `json:"points"`
	First       int64          `json:"first,omitempty"` // unix ms of the first result
	Last        int64          `json:"last,omitempty"`  // unix ms of the latest result
	Grid        *archive.Grid  `json:"grid,omitempty"`
	Best        *bestProgram   `json:"best,omitempty"`
	Failures    []failureGroup `json:"failures,omitempty"`
	Throughput  *throughput    `json:"throughput,omitempty"`
}

// sent is what one event stream has sent of a run, by section version.
type sent struct {
	runsVer, leasesVer                     uint64
	points                                 int
	gridVer, bestVer, failVer, evaluations uint64
	started                                bool
}

// detail returns the run's detail, all of it when since is nil, else what moved since and
// marks it sent; nil when the run has neither records nor results. f.mu must be held.
func (f *feed) detail(run string, since *sent) *runDetail {
	rec, agg := f.runs[run], f.aggs[run]
	if rec == nil && agg == nil {
		return nil
	}
	full := since == nil
	if full {
		since = &sent{}
	}
	d := &runDetail{Run: run, Points: []scorePoint{}}
	for _, s := range f.summaries() {
		if s.Run == run {
			d.Summary = &s
		}
	}
	if agg == nil {
		return d
	}
	d.Evaluations = agg.evaluations
	if !agg.first.IsZero() {
		d.First, d.Last = agg.first.UnixMilli(), agg.last.UnixMilli()
	}
	d.From = min(since.points, len(agg.points))
	d.Points = append(d.Points, agg.points[d.From:]...)
	since.points = len(agg.points)
	if full || since.gridVer != agg.gridVer {
		g := agg.gridNow()
		d.Grid, since.gridVer = &g, agg.gridVer
	}
	if full || since.bestVer != agg.bestVer {
		d.Best, since.bestVer = agg.bestNow(), agg.bestVer
	}
	if full || since.failVer != agg.failVer {
		d.Failures, since.failVer = agg.failuresNow(), agg.failVer
	}
	if full || since.evaluations != uint64(agg.evaluations) {
		t := agg.throughputNow()
		d.Throughput, since.evaluations = &t, uint64(agg.evaluations)
	}
	return d
}

func (s *Server) getRuns(w http.ResponseWriter, _ *http.Request) {
	s.feed.mu.Lock()
	out := s.feed.summaries()
	s.feed.mu.Unlock()
	writeJSON(w, out)
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request) {
	run := r.PathValue("run")
	if protocol.ValidateRunID(run) != nil {
		http.Error(w, "bad run id", http.StatusBadRequest)
		return
	}
	s.feed.mu.Lock()
	d := s.feed.detail(run, nil)
	s.feed.mu.Unlock()
	if d == nil {
		http.Error(w, fmt.Sprintf("no such run: %s", run), http.StatusNotFound)
		return
	}
	writeJSON(w, d)
}

// program is one program's code and lineage, for a grid cell or a lineage entry.
type program struct {
	ID      string             `json:"id"`
	Code    string             `json:"code"`
	Lineage []archive.Ancestor `json:"lineage"`
}

func (s *Server) getProgram(w http.ResponseWriter, r *http.Request) {
	run, id := r.PathValue("run"), r.PathValue("id")
	s.feed.mu.Lock()
	agg := s.feed.aggs[run]
	var p *program
	if agg != nil {
		if code := agg.codeOf(id); code != "" {
			p = &program{ID: id, Code: code, Lineage: agg.mirror.Ancestry(id)}
		}
	}
	s.feed.mu.Unlock()
	if p == nil {
		http.Error(w, fmt.Sprintf("run %s has no program %s", run, id), http.StatusNotFound)
		return
	}
	writeJSON(w, p)
}

func (s *Server) getLeases(w http.ResponseWriter, _ *http.Request) {
	s.feed.mu.Lock()
	out := s.feed.leaseMap(time.Now())
	s.feed.mu.Unlock()
	writeJSON(w, out)
}

// coalesce is the least time between two messages of one event stream: a run folding
// hundreds of results a second costs each browser a few messages a second.
const coalesce = 300 * time.Millisecond

// events streams server-sent events: "runs" (the list), "leases" (the lease map) and, with
// ?run=ID, "run" (that run's detail, in parts: see runDetail). Each is sent when it moved,
// at most every coalesce.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	run := r.URL.Query().Get("run")
	if run != "" && protocol.ValidateRunID(run) != nil {
		http.Error(w, "bad run id", http.StatusBadRequest)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	flusher.Flush()
	ctx := r.Context()
	var st sent
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		changed := s.feed.wait()
		type msg struct {
			event string
			data  any
		}
		var msgs []msg
		s.feed.mu.Lock()
		runsMoved := !st.started || st.runsVer != s.feed.runsVer
		if runsMoved {
			msgs = append(msgs, msg{"runs", s.feed.summaries()})
			st.runsVer = s.feed.runsVer
		}
		if !st.started || st.leasesVer != s.feed.leasesVer {
			msgs = append(msgs, msg{"leases", s.feed.leaseMap(time.Now())})
			st.leasesVer = s.feed.leasesVer
		}
		if run != "" {
			d := s.feed.detail(run, &st)
			if d != nil && (runsMoved || len(d.Points) > 0 || d.Grid != nil || d.Best != nil || d.Failures != nil || d.Throughput != nil) {
				msgs = append(msgs, msg{"run", d})
			}
		}
		st.started = true
		s.feed.mu.Unlock()
		for _, m := range msgs {
			data, err := json.Marshal(m.data)
			if err != nil {
				s.log.Error("ui event", "err", err)
				return
			}
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", m.event, data); err != nil {
				return
			}
		}
		flusher.Flush()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-keepalive.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(coalesce):
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}
