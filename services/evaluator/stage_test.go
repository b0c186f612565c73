package evaluator

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/pipeline/pipelinetest"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// TestStageConformance runs the pipeline's conformance suite on the evaluator's stage as Run
// wires it: candidates in, results out (each scored in the sandbox), a dead candidate as a
// failed result.
func TestStageConformance(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const run = "demo"
	cache := seedRun(ctx, t, env, run)
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
