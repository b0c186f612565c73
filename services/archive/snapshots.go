package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/services/archive/internal/population"
)

// snapshotJob is one run's encoded population, covering RESULTS up to seq.
type snapshotJob struct {
	run        string
	data       []byte
	seq        uint64
	iterations int64
}

// takeSnapshot encodes the run's population; the caller holds s.mu. Encoding happens at the
// exact fold position; only the write is left to the writer.
func (s *Service) takeSnapshot(run string, pop *population.Population) *snapshotJob {
	data, err := pop.Snapshot()
	if err != nil {
		s.log.Error("encode snapshot", "run", run, "err", err)
		return nil
	}
	s.since[run] = 0
	st := pop.State()
	return &snapshotJob{run: run, data: data, seq: st.LastSeq, iterations: st.Iterations}
}

// snapshotAll writes the snapshot of every run folded since its last one: on shutdown, so a
// restart replays nothing.
func (s *Service) snapshotAll(ctx context.Context) {
	s.mu.Lock()
	var jobs []*snapshotJob
	for run, n := range s.since {
		if n > 0 && s.owner() {
			if job := s.takeSnapshot(run, s.pops[run]); job != nil {
				jobs = append(jobs, job)
			}
		}
	}
	s.mu.Unlock()
	for _, job := range jobs {
		if err := putSnapshot(ctx, s.snapshots, job); err != nil {
			s.log.Error("write snapshot", "run", job.run, "err", err)
		}
	}
}

func putSnapshot(ctx context.Context, store jetstream.ObjectStore, job *snapshotJob) error {
	meta := jetstream.ObjectMeta{Name: job.run, Description: fmt.Sprintf("archive snapshot of run %s up to RESULTS sequence %d", job.run, job.seq)}
	if _, err := store.Put(ctx, meta, bytes.NewReader(job.data)); err != nil {
		return fmt.Errorf("put snapshot of run %s: %w", job.run, err)
	}
	return nil
}

// restore loads every run's snapshot and returns the RESULTS stream's last sequence and the
// sequence to replay from: one past the least that every run with results is covered to.
func (s *Service) restore(ctx context.Context) (last, from uint64, err error) {
	stream, err := s.js.Stream(ctx, s.cfg.Names.ResultsStream())
	if err != nil {
		return 0, 0, err
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(s.cfg.Names.AllResults()))
	if err != nil {
		return 0, 0, fmt.Errorf("results stream info: %w", err)
	}
	last = info.State.LastSeq
	objects, err := s.snapshots.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0, 0, fmt.Errorf("list snapshots: %w", err)
	}
	for _, o := range objects {
		if o.Deleted {
			continue
		}
		pop, err := s.loadSnapshot(ctx, o.Name, last)
		if err != nil {
			// The run replays from the start instead: slower, never wrong.
			s.log.Warn("snapshot unusable; replaying the run", "run", o.Name, "err", err)
			continue
		}
		s.pops[o.Name] = pop
		s.log.Info("snapshot restored", "run", o.Name, "seq", pop.State().LastSeq, "programs", pop.Len())
	}
	from = last + 1
	for subject := range info.State.Subjects {
		run := s.cfg.Names.RunFromSubject(subject)
		covered := uint64(0)
		if pop, ok := s.pops[run]; ok {
			covered = pop.State().LastSeq
		}
		from = min(from, covered+1)
	}
	if from < info.State.FirstSeq {
		from = info.State.FirstSeq
	}
	return last, max(from, 1), nil
}

func (s *Service) loadSnapshot(ctx context.Context, run string, last uint64) (*population.Population, error) {
	data, err := s.snapshots.GetBytes(ctx, run)
	if err != nil {
		return nil, err
	}
	cfg := runconfig.Default()
	if spec, err := s.runs.Spec(ctx, run); err == nil {
		cfg = spec.Config
	}
	pop, err := population.Restore(run, cfg, data)
	if err != nil {
		return nil, err
	}
	if seq := pop.State().LastSeq; seq > last {
		return nil, fmt.Errorf("it covers RESULTS up to %d but the stream ends at %d: the stream was recreated", seq, last)
	}
	return pop, nil
}

// serveSnapshot answers a "snapshot now" request for the run named in the subject: it writes
// the run's snapshot and replies where it is and what it covers.
func (s *Service) serveSnapshot(ctx context.Context, msg *nats.Msg) {
	run := s.cfg.Names.RunFromSubject(msg.Subject)
	reply := protocol.SnapshotReply{Meta: protocol.Meta{ID: "snapshot." + run, Run: run}}
	s.mu.Lock()
	pop, ok := s.pops[run]
	caughtUp := s.caughtUp
	var job *snapshotJob
	if ok && caughtUp {
		job = s.takeSnapshot(run, pop)
	}
	s.mu.Unlock()
	switch {
	case !caughtUp:
		reply.Error = ErrReplaying.Error()
	case !ok:
		reply.Error = fmt.Sprintf("run %q has no results in this archive", run)
	case job == nil:
		reply.Error = "encoding the snapshot failed; see the archive's log"
	default:
		if err := putSnapshot(ctx, s.snapshots, job); err != nil {
			reply.Error = err.Error()
		} else {
			reply.Key, reply.Seq, reply.Iterations = job.run, job.seq, job.iterations
		}
	}
	data, err := protocol.Encode(&reply)
	if err != nil {
		s.log.Error("encode snapshot reply", "run", run, "err", err)
		return
	}
	if err := msg.Respond(data); err != nil {
		s.log.Warn("snapshot reply", "run", run, "err", err)
	}
}

// snapshotWriter writes periodic snapshots off the fold's path, keeping only each run's
// newest when writes fall behind.
type snapshotWriter struct {
	store jetstream.ObjectStore
	log   *slog.Logger

	mu      sync.Mutex
	pending map[string]*snapshotJob
	order   []string
	wake    chan struct{}
}

func newSnapshotWriter(store jetstream.ObjectStore, log *slog.Logger) *snapshotWriter {
	return &snapshotWriter{store: store, log: log, pending: map[string]*snapshotJob{}, wake: make(chan struct{}, 1)}
}

func (w *snapshotWriter) enqueue(job *snapshotJob) {
	w.mu.Lock()
	if _, queued := w.pending[job.run]; !queued {
		w.order = append(w.order, job.run)
	}
	w.pending[job.run] = job
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes queued snapshots until ctx ends; what is still queued then is superseded by the
// shutdown snapshot.
func (w *snapshotWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		}
		for {
			w.mu.Lock()
			if len(w.order) == 0 {
				w.mu.Unlock()
				break
			}
			run := w.order[0]
			w.order = w.order[1:]
			job := w.pending[run]
			delete(w.pending, run)
			w.mu.Unlock()
			if err := putSnapshot(ctx, w.store, job); err != nil && ctx.Err() == nil {
				w.log.Error("write snapshot", "run", run, "err", err)
			}
		}
	}
}

// errReply turns a reply's error text back into an error.
func errReply(text string) error {
	if text == ErrReplaying.Error() || strings.Contains(text, "replaying") {
		return ErrReplaying
	}
	return errors.New(text)
}
