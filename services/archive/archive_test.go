package archive_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/pkg/runs"
	"github.com/shoal-run/shoal/services/archive"
	"github.com/shoal-run/shoal/services/archive/internal/population"
)

func TestMain(m *testing.M) { natstest.Main(m) }

const run = "r1"

const testConfig = `
checkpoint_interval: 10
database:
  num_islands: 3
  population_size: 30
  migration_interval: 4
  feature_dimensions: [complexity, diversity, speed]
  feature_bins: {complexity: 5, diversity: 5, speed: 3}
  novelty_threshold: 1
`

// env is an embedded NATS server with the test run's spec in the runs bucket.
func env(t *testing.T) (*natstest.TestEnv, *runs.Store, *runconfig.Config) {
	t.Helper()
	e := natstest.StartTestEnv(t)
	ctx := context.Background()
	store, err := runs.Open(ctx, e.JS, e.Names)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := runconfig.Parse([]byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	spec := &protocol.RunSpec{Meta: protocol.Meta{ID: run, Run: run}, Config: testConfig, ConfigDigest: cfg.Digest(),
		BundleDigest: "sha256-0", ProgramName: "initial_program.py"}
	if _, err := store.CreateSpec(ctx, spec); err != nil {
		t.Fatal(err)
	}
	return e, store, cfg
}

// start runs an archive until the returned stop is called; stop waits for it to end.
func start(t *testing.T, e *natstest.TestEnv) (stop func()) {
	t.Helper()
	return startFlushing(t, e, 20*time.Millisecond)
}

// startFlushing is start with the archive's periodic flush every flush.
func startFlushing(t *testing.T, e *natstest.TestEnv, flush time.Duration) (stop func()) {
	t.Helper()
	svc, err := archive.New(archive.Config{Names: e.Names, ID: "archive-test", FlushInterval: flush},
		e.Conn, slog.New(slog.NewTextHandler(logOut(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once bool
	stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("archive run: %v", err)
		}
	}
	t.Cleanup(stop)
	// Wait until the archive has replayed the stream: it answers samples from then on.
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := protocol.Encode(&protocol.SampleRequest{Meta: protocol.Meta{ID: "ready", Run: run}})
		if msg, err := e.Conn.Request(e.Names.Sample(run), data, time.Second); err == nil {
			var reply protocol.SampleReply
			if protocol.Decode(msg.Data, &reply) == nil && reply.Error != archive.ErrReplaying.Error() {
				return stop
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("archive did not finish replaying")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// results are a seed and n generated results of the test run, spread over 3 islands.
func results(from, n int) []*protocol.Result {
	var rs []*protocol.Result
	if from == 0 {
		rs = append(rs, mk("c.r1.seed.s", "", 0, protocol.StatusOK, 0.1))
	}
	for i := from; i < from+n; i++ {
		status := protocol.StatusOK
		if i%9 == 4 {
			status = protocol.StatusFailed
		}
		rs = append(rs, mk(fmt.Sprintf("c.r1.t%d", i+1), "c.r1.seed.s", i%3, status, float64((i*37)%100)/100))
	}
	return rs
}

func mk(id, parent string, island int, status protocol.Status, score float64) *protocol.Result {
	c := protocol.Candidate{Meta: protocol.Meta{ID: id, Run: run}, ParentID: parent, Island: island, Model: "mutate",
		Code: fmt.Sprintf("def f(x):\n    return x * %s\n", id)}
	if parent != "" {
		c.TaskID = "task-" + id
		c.Code += fmt.Sprintf("# %d\n", len(id)*len(id)%7)
	}
	r := &protocol.Result{Meta: protocol.Meta{ID: protocol.ResultID(id), Run: run}, Candidate: c, Status: status, Score: score,
		Metrics: map[string]float64{"combined_score": score, "speed": float64(len(id) % 5)}}
	if status != protocol.StatusOK {
		r.Reason = "stage 1 failed"
	}
	return r
}

func publish(t *testing.T, e *natstest.TestEnv, rs []*protocol.Result) {
	t.Helper()
	for _, r := range rs {
		if _, err := natsx.Publish(context.Background(), e.JS, e.Names.Result(run), r.ID, r); err != nil {
			t.Fatal(err)
		}
	}
}

// republish stores a result again under another message id, as a redelivered evaluation does
// after the duplicate window.
func republish(t *testing.T, e *natstest.TestEnv, r *protocol.Result) {
	t.Helper()
	if _, err := natsx.Publish(context.Background(), e.JS, e.Names.Result(run), r.ID+".again", r); err != nil {
		t.Fatal(err)
	}
}

func waitState(t *testing.T, store *runs.Store, iterations int64) *protocol.RunState {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := store.State(context.Background(), run)
		if err == nil && st.Iterations == iterations {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("run state %+v (err %v); want %d iterations", st, err, iterations)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func snapshotSeq(t *testing.T, e *natstest.TestEnv, cfg *runconfig.Config) (uint64, []byte) {
	t.Helper()
	store, err := e.JS.ObjectStore(context.Background(), e.Names.SnapshotsStore())
	if err != nil {
		t.Fatal(err)
	}
	data, err := store.GetBytes(context.Background(), run)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	p, err := population.Restore(run, cfg, data)
	if err != nil {
		t.Fatal(err)
	}
	return p.State().LastSeq, data
}

// scratch folds the whole RESULTS stream, as read back from the server, into a new population.
func scratch(t *testing.T, e *natstest.TestEnv, cfg *runconfig.Config) *population.Population {
	t.Helper()
	ctx := context.Background()
	stream, err := e.JS.Stream(ctx, e.Names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	p := population.New(run, cfg)
	last := stream.CachedInfo().State.LastSeq
	for seq := uint64(1); seq <= last; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var r protocol.Result
		if err := protocol.Decode(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		p.Fold(&r, seq)
	}
	return p
}

func TestSnapshotsEveryCheckpointInterval(t *testing.T) {
	e, store, cfg := env(t)
	start(t, e)
	publish(t, e, results(0, 24)) // 25 results: snapshots after the 10th and the 20th
	waitState(t, store, 24)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if seq, _ := snapshotSeq(t, e, cfg); seq == 20 {
			break
		}
		if time.Now().After(deadline) {
			seq, _ := snapshotSeq(t, e, cfg)
			t.Fatalf("snapshot covers seq %d; want 20 (every 10 folded results)", seq)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestartFromSnapshotLosesAndDoublesNothing stops the archive (it snapshots on the way
// out), removes the results its snapshot covers from the stream, adds results and a
// redelivered old one, and restarts: the new archive must count everything once, and its
// population must be, byte for byte, one fold of the whole stream.
func TestRestartFromSnapshotLosesAndDoublesNothing(t *testing.T) {
	e, store, cfg := env(t)
	first := results(0, 35)
	stop := start(t, e)
	publish(t, e, first)
	republish(t, e, first[7])
	waitState(t, store, 35)
	stop()
	covered, _ := snapshotSeq(t, e, cfg)
	if covered != 37 {
		t.Fatalf("shutdown snapshot covers seq %d, want 37", covered)
	}

	later := results(35, 20)
	publish(t, e, later)
	republish(t, e, first[3])  // an old candidate again, after the snapshot
	republish(t, e, later[5])  // a new one twice
	want := scratch(t, e, cfg) // before the purge below makes the early stream unreadable
	stream, err := e.JS.Stream(context.Background(), e.Names.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	// Only a restored snapshot can bring back what is no longer in the stream.
	if err := stream.Purge(context.Background(), jetstream.WithPurgeSequence(covered+1)); err != nil {
		t.Fatal(err)
	}

	start(t, e)
	st := waitState(t, store, 55)
	if st.Seeds != 1 || st.LastSeq != covered+22 || st.Failed != want.State().Failed {
		t.Errorf("after restart seeds %d last seq %d failed %d; want 1, %d, %d", st.Seeds, st.LastSeq, st.Failed, covered+22, want.State().Failed)
	}
	reply := snapshotNow(t, e)
	if reply.Seq != covered+22 || reply.Iterations != 55 {
		t.Fatalf("snapshot reply %+v; want seq %d, 55 iterations", reply, covered+22)
	}
	_, got := snapshotSeq(t, e, cfg)
	wantBytes, err := want.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wantBytes) {
		t.Errorf("restored + replayed archive differs from one fold of the stream (%d vs %d bytes)", len(got), len(wantBytes))
	}
}

func snapshotNow(t *testing.T, e *natstest.TestEnv) *protocol.SnapshotReply {
	t.Helper()
	msg, err := e.Conn.Request(e.Names.Snapshot(run), nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var reply protocol.SnapshotReply
	if err := protocol.Decode(msg.Data, &reply); err != nil {
		t.Fatal(err)
	}
	if reply.Error != "" {
		t.Fatalf("snapshot now: %s", reply.Error)
	}
	return &reply
}

func TestSampleFromIslandWithPreviousAttemptsAndMigrationEvents(t *testing.T) {
	e, store, _ := env(t)
	migrations := make(chan *nats.Msg, 64)
	sub, err := e.Conn.ChanSubscribe(e.Names.Event(run, protocol.EventMigration), migrations)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	start(t, e)
	publish(t, e, results(0, 24)) // 8 generations per island, migration_interval 4: 2 each
	st := waitState(t, store, 24)
	if len(st.Islands) != 3 {
		t.Fatalf("state islands %+v, want 3", st.Islands)
	}
	for _, is := range st.Islands {
		if is.Migrations != 2 || is.Programs == 0 || is.Cells == 0 || is.BestID == "" {
			t.Errorf("island state %+v; want programs, cells, a best and 2 migrations", is)
		}
	}
	for range 6 {
		select {
		case <-migrations:
		case <-time.After(5 * time.Second):
			t.Fatal("fewer than 6 migration events")
		}
	}

	for island := range 3 {
		req := &protocol.SampleRequest{Meta: protocol.Meta{ID: "q", Run: run}, Island: island, NumInspirations: 2, Seed: 5}
		data, err := protocol.Encode(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := e.Conn.Request(e.Names.Sample(run), data, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var reply protocol.SampleReply
		if err := protocol.Decode(msg.Data, &reply); err != nil || reply.Error != "" {
			t.Fatalf("sample: %v %s", err, reply.Error)
		}
		if reply.Parent.Island != island || len(reply.Parent.Features) != 3 {
			t.Errorf("island %d sample's parent %s is on island %d with features %v", island, reply.Parent.ID, reply.Parent.Island, reply.Parent.Features)
		}
		if len(reply.Previous) != 2 || reply.Previous[0].Island != island || reply.Previous[0].Code != "" {
			t.Errorf("island %d previous attempts %+v; want its 2 latest, without code", island, reply.Previous)
		}
		// Island 1's latest attempts are t23 and t20 (results i = 22 and 19).
		if island == 1 && (reply.Previous[0].ID != "c.r1.t23" || reply.Previous[1].ID != "c.r1.t20") {
			t.Errorf("island 1 previous = %s, %s; want c.r1.t23, c.r1.t20", reply.Previous[0].ID, reply.Previous[1].ID)
		}
	}
}

func TestExportCheckpointLayout(t *testing.T) {
	e, store, _ := env(t)
	start(t, e)
	publish(t, e, results(0, 40))
	st := waitState(t, store, 40)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	path, err := archive.ExportCheckpoint(ctx, e.Conn, e.Names, run, dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "checkpoints", "checkpoint_40"); path != want {
		t.Fatalf("checkpoint at %s, want %s", path, want)
	}
	var meta struct {
		Islands       [][]string          `json:"islands"`
		FeatureMaps   []map[string]string `json:"island_feature_maps"`
		Archive       []string            `json:"archive"`
		BestProgramID string              `json:"best_program_id"`
		LastIteration int64               `json:"last_iteration"`
	}
	readJSON(t, filepath.Join(path, "metadata.json"), &meta)
	if meta.BestProgramID != st.BestID || meta.LastIteration != 40 || len(meta.Islands) != 3 || len(meta.FeatureMaps) != 3 || len(meta.Archive) == 0 {
		t.Errorf("metadata %+v; want best %s, 40 iterations, 3 islands with grids, an archive", meta, st.BestID)
	}
	entries, err := os.ReadDir(filepath.Join(path, "programs"))
	if err != nil {
		t.Fatal(err)
	}
	held := 0
	for _, isl := range meta.Islands {
		held += len(isl)
	}
	if len(entries) != held || held != st.Population {
		t.Errorf("%d program files, %d programs on islands; want the population, %d", len(entries), held, st.Population)
	}
	var prog struct {
		ID       string             `json:"id"`
		Code     string             `json:"code"`
		ParentID *string            `json:"parent_id"`
		Metrics  map[string]float64 `json:"metrics"`
		Metadata map[string]any     `json:"metadata"`
	}
	readJSON(t, filepath.Join(path, "programs", st.BestID+".json"), &prog)
	code, err := os.ReadFile(filepath.Join(path, "best_program.py"))
	if err != nil {
		t.Fatal(err)
	}
	if prog.ID != st.BestID || prog.Code != string(code) || prog.ParentID == nil || prog.Metrics["combined_score"] != st.BestScore {
		t.Errorf("best program file %+v does not match best_program.py and the run state", prog)
	}
	var info struct {
		ID      string `json:"id"`
		Lineage []struct {
			ID string `json:"id"`
		} `json:"lineage"`
	}
	readJSON(t, filepath.Join(path, "best_program_info.json"), &info)
	if info.ID != st.BestID || len(info.Lineage) < 2 || info.Lineage[len(info.Lineage)-1].ID != "c.r1.seed.s" {
		t.Errorf("best program info %+v; want the best with its lineage back to the seed", info)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func logOut() io.Writer {
	if os.Getenv("ARCHIVE_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

// TestFoldedResultIsVisibleWithoutWaitingForTheTick: the planner refills a run's tasks when
// its state moves, so a fold must reach the runs bucket at once, not on the periodic flush.
func TestFoldedResultIsVisibleWithoutWaitingForTheTick(t *testing.T) {
	e, store, _ := env(t)
	const tick = 3 * time.Second
	startFlushing(t, e, tick)
	all := results(0, 5)
	var took []time.Duration
	for i, r := range all {
		begin := time.Now()
		publish(t, e, []*protocol.Result{r})
		waitState(t, store, int64(i))
		took = append(took, time.Since(begin))
	}
	slices.Sort(took)
	// The median leaves the slowest folds to a loaded machine; it is far below the tick
	// only when folds do not wait for it.
	if median := took[len(took)/2]; median >= tick/4 {
		t.Fatalf("median time from publish to visible state %v (all %v); want well under the %v flush tick", median, took, tick)
	}
}

// TestBatchedSampleAnswersEachAsAloneAndFitsInOneReply: a request for several samples (a
// planner's refill) gets, for each, what a request of its own would get; and a request for
// more than fit in one reply gets as many as fit, in order, for the planner to ask again.
func TestBatchedSampleAnswersEachAsAloneAndFitsInOneReply(t *testing.T) {
	e, store, _ := env(t)
	start(t, e)
	publish(t, e, results(0, 24))
	waitState(t, store, 24)
	ask := func(req *protocol.SampleRequest) (*protocol.SampleReply, int) {
		t.Helper()
		data, err := protocol.Encode(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := e.Conn.Request(e.Names.Sample(run), data, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var reply protocol.SampleReply
		if err := protocol.Decode(msg.Data, &reply); err != nil || reply.Error != "" {
			t.Fatalf("sample: %v %s", err, reply.Error)
		}
		return &reply, len(msg.Data)
	}
	wants := []protocol.SampleWant{{Island: 0, Seed: 11}, {Island: 1, Seed: 12}, {Island: 2, Seed: 13}, {Island: 0, Seed: 14}}
	batch, _ := ask(&protocol.SampleRequest{Meta: protocol.Meta{Run: run}, Island: wants[0].Island, Seed: wants[0].Seed,
		NumInspirations: 2, More: wants[1:]})
	got := batch.Samples()
	if len(got) != len(wants) {
		t.Fatalf("%d samples for %d asked", len(got), len(wants))
	}
	for i, w := range wants {
		alone, _ := ask(&protocol.SampleRequest{Meta: protocol.Meta{Run: run}, Island: w.Island, Seed: w.Seed, NumInspirations: 2})
		a, _ := json.Marshal(alone.Samples()[0])
		b, _ := json.Marshal(got[i])
		if string(a) != string(b) {
			t.Errorf("sample %d (island %d, seed %d) in a batch:\n%s\nalone:\n%s", i, w.Island, w.Seed, b, a)
		}
		if len(got[i].Seen) == 0 {
			t.Errorf("sample %d (island %d) of a batch carries no novelty sketches: the generator could not skip a duplicate of its island", i, w.Island)
		}
	}

	many := make([]protocol.SampleWant, 5000)
	for i := range many {
		many[i] = protocol.SampleWant{Island: i % 3, Seed: int64(i)}
	}
	reply, size := ask(&protocol.SampleRequest{Meta: protocol.Meta{Run: run}, NumInspirations: 2, More: many})
	if size > protocol.MaxBodyBytes || len(reply.More) == 0 || len(reply.More) >= len(many) {
		t.Fatalf("a request for %d samples got %d in %d bytes; want some, not all, in at most %d", len(many)+1, len(reply.More)+1, size, protocol.MaxBodyBytes)
	}
	for i, s := range reply.More {
		if s.Parent.Island != many[i].Island {
			t.Fatalf("sample %d of the batch is from island %d; want %d", i+1, s.Parent.Island, many[i].Island)
		}
	}
}
