package evaluator

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/pipeline/pipelinetest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
)

// TestStageConformance runs the pipeline's conformance suite on the evaluator's stage as Run
// wires it: candidates in, results out (each scored in the sandbox), a dead candidate as a
// failed result.
func TestStageConformance(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cache, err := os.MkdirTemp("", "shoal-evaluator-stage-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := bundle.RemoveCache(cache); err != nil {
			t.Errorf("remove cache: %v", err)
		}
	})
	const run = "demo"
	data, digest, err := bundle.Pack(testdata(t, "basic"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := env.JS.ObjectStore(ctx, env.Names.BundlesStore())
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.Put(ctx, store, digest, data); err != nil {
		t.Fatal(err)
	}
	specs, err := runs.Open(ctx, env.JS, env.Names)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := specs.CreateSpec(ctx, &protocol.RunSpec{
		Meta:         protocol.Meta{ID: run, Run: run},
		Config:       "evaluator:\n  timeout: 30\n  cascade_evaluation: false\n",
		BundleDigest: digest,
		ProgramName:  "initial_program.py",
	}); err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Names: env.Names, ID: "eval-conformance", Concurrency: 4, CacheDir: cache}, env.Conn, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	w, _, err := svc.start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.scorer.close()
	pipelinetest.Run(t, pipelinetest.Case[protocol.Candidate, protocol.Result]{
		JS: env.JS, Names: env.Names,
		Stage:    w.stage(),
		InStream: env.Names.CandidatesStream(),
		Consumer: consumerConfig(env.Names),
		Input: func(i int) (string, *protocol.Candidate) {
			task := protocol.Task{Meta: protocol.Meta{ID: protocol.TaskID(run, int64(i)), Run: run}, Iteration: int64(i), Language: "python"}
			c := task.Candidate("test")
			c.Code = "def run():\n    return 0.5\n"
			return env.Names.Candidate(run), c
		},
		OutStream: env.Names.ResultsStream(),
		OutID:     func(c *protocol.Candidate) string { return protocol.ResultID(c.ID) },
		Failed: func(r *protocol.Result) bool {
			return r.Status == protocol.StatusFailed && strings.HasPrefix(r.Reason, pipeline.DeadReasonPrefix)
		},
	})
}
