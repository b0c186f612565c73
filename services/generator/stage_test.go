package generator

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
	"github.com/shoal-run/shoal/pkg/pipeline"
	"github.com/shoal-run/shoal/pkg/pipeline/pipelinetest"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
)

const conformanceConfig = `
language: python
diff_based_evolution: false
llm:
  models:
    - name: mutate
      backend: mutate
`

const conformanceParent = `# EVOLVE-BLOCK-START
def f():
    return 1.5 * 2.0 + 3
# EVOLVE-BLOCK-END
`

// TestStageConformance runs the pipeline's conformance suite on the generator's stage as Run
// wires it: tasks in, candidates out, a dead task as an abandoned candidate.
func TestStageConformance(t *testing.T) {
	env := natstest.StartTestEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	store, err := runs.Open(ctx, env.JS, env.Names)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateSpec(ctx, &protocol.RunSpec{Meta: protocol.Meta{ID: "r1", Run: "r1"}, Config: conformanceConfig}); err != nil {
		t.Fatal(err)
	}
	svc, err := New(Config{Names: env.Names, ID: "gen-conformance", GPUs: "none"}, env.Conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	pipelinetest.Run(t, pipelinetest.Case[protocol.Task, protocol.Candidate]{
		JS: env.JS, Names: env.Names,
		Stage:    svc.stage(store),
		InStream: env.Names.TasksStream(),
		Consumer: svc.consumerConfig(),
		Input: func(i int) (string, *protocol.Task) {
			task := &protocol.Task{
				Meta:      protocol.Meta{ID: protocol.TaskID("r1", int64(i)), Run: "r1"},
				Model:     "mutate",
				Iteration: int64(i),
				Parent:    protocol.Program{ID: "p", Code: conformanceParent},
				Seed:      int64(i),
			}
			return env.Names.Task("r1", "mutate"), task
		},
		OutStream: env.Names.CandidatesStream(),
		OutID:     func(task *protocol.Task) string { return protocol.CandidateID(task.ID) },
		Failed: func(c *protocol.Candidate) bool {
			return strings.HasPrefix(c.Abandoned, pipeline.DeadReasonPrefix) && c.Code == ""
		},
	})
}

// TestHandBackIDs: a task handed back is published under an id derived from its own and its
// hand-back count, never a clock, so a retried hand-back of one copy is stored once while the
// next hand-back is a new message; the candidate it finally yields keeps the task's id.
func TestHandBackIDs(t *testing.T) {
	env := natstest.StartTestEnv(t)
	task := &protocol.Task{Meta: protocol.Meta{ID: "r1.t4", Run: "r1"}, Model: "m"}
	subject := env.Names.Task("r1", "m")
	first := *task
	id1 := first.HandBack()
	second := first
	id2 := second.HandBack()
	publish := func(id string, tk *protocol.Task) {
		if _, err := natsx.Publish(t.Context(), env.JS, subject, id, tk); err != nil {
			t.Fatal(err)
		}
	}
	publish(task.ID, task)
	publish(id1, &first)
	publish(id1, &first) // a retry of the same hand-back
	publish(id2, &second)
	s, err := env.JS.Stream(t.Context(), env.Names.TasksStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 3 {
		t.Errorf("TASKS holds %d messages, want 3: the task and two hand-backs", info.State.Msgs)
	}
	if id1 == id2 || id1 == task.ID || !strings.HasPrefix(id1, task.ID) {
		t.Errorf("hand-back ids %q, %q for task %q: want distinct ids derived from the task's", id1, id2, task.ID)
	}
	if c := second.Candidate("g"); c.ID != protocol.CandidateID(task.ID) {
		t.Errorf("candidate of a handed-back task has id %q, want %q", c.ID, protocol.CandidateID(task.ID))
	}
	if again := *task; again.HandBack() != id1 {
		t.Errorf("the same copy handed back again gets another id: want %q", id1)
	}
}
