package protocol

import (
	"cmp"
	"time"
)

// A candidate's lineage is made here and nowhere else: a seed or a task becomes a candidate,
// a candidate becomes a result. Each constructor derives the new message's id from the one it
// came from (ids.go), so a redelivered input yields the same output id and JetStream keeps one
// copy, and it carries the lineage fields (run, task, parent, iteration, island, model,
// generation) over the same way wherever it is called.

// ModeOf is the mode of a run's tasks: diffs when the run evolves by diffs
// (diff_based_evolution), whole rewrites otherwise.
func ModeOf(diffBased bool) Mode {
	if diffBased {
		return ModeDiff
	}
	return ModeRewrite
}

// SetDefaults fills what a task may leave out from its run's config: the mode that
// diff_based_evolution picks and the run's language. The planner calls it when it builds a
// task and the generator when it reads one, so both agree on a task that left them out.
func (t *Task) SetDefaults(diffBased bool, language string) {
	if t.Mode == "" {
		t.Mode = ModeOf(diffBased)
	}
	t.Language = cmp.Or(t.Language, language)
}

// Candidate is the candidate this task yields, with its derived id and lineage and no code
// yet: the generator fills Code (or Rejected) and its own accounting.
func (t *Task) Candidate(generator string) *Candidate {
	return &Candidate{
		Meta:       Meta{ID: CandidateID(t.ID), Run: t.Run},
		TaskID:     t.ID,
		ParentID:   t.Parent.ID,
		Iteration:  t.Iteration,
		Island:     t.Island,
		Model:      t.Model,
		Language:   t.Language,
		Generation: t.Parent.Generation + 1,
		Generator:  generator,
		CreatedAt:  time.Now().UTC(),
	}
}

// HandBack readies the task to go back to TASKS for another replica, and returns the
// Nats-Msg-Id to publish it under. The id derives from the task's id and its hand-back count,
// never from a clock: a retried or redelivered hand-back of the same copy carries the same
// id and is stored once, while each new hand-back is a new message. The task's own id, from
// which its candidate's id derives, does not change.
func (t *Task) HandBack() (msgID string) {
	t.HandBacks++
	return HandBackID(t.ID, t.HandBacks)
}

// Candidate is the candidate that enters a run with this seed's program, under the id derived
// from the seed's. language is the run's; programName names the seed's file (the seed's own
// name when it has one); generator names who accepted it.
func (s *Seed) Candidate(language, programName, generator string) *Candidate {
	return &Candidate{
		Meta:      Meta{ID: SeedCandidateID(s.Run, s.ID), Run: s.Run},
		Language:  language,
		Code:      s.Program,
		Changes:   "seed " + cmp.Or(s.ProgramName, programName),
		Generator: generator,
		CreatedAt: time.Now().UTC(),
	}
}

// Reject marks the candidate as one whose reply could not become a program: it carries the
// reason and no code, and its evaluation is a rejected result without a run.
func (c *Candidate) Reject(reason string) {
	c.Rejected, c.Code, c.Changes = reason, "", ""
}

// Abandon marks the candidate as one its generator gave up on (its task was dead-lettered):
// it carries the reason and no code, and its evaluation is a failed result without a run.
func (c *Candidate) Abandon(reason string) {
	c.Abandoned, c.Code, c.Changes = reason, "", ""
}

// Result is the result of this candidate under its derived id, not yet scored: the evaluator
// fills status, metrics and artifacts. A rejected or failed candidate's result is already
// complete.
func (c *Candidate) Result(evaluator string) *Result {
	r := &Result{
		Meta:      Meta{ID: ResultID(c.ID), Run: c.Run},
		Candidate: *c,
		Evaluator: evaluator,
		CreatedAt: time.Now().UTC(),
	}
	switch {
	case c.Abandoned != "":
		r.Status, r.Reason = StatusFailed, c.Abandoned
	case c.Rejected != "":
		r.Status, r.Reason = StatusRejected, c.Rejected
	}
	return r
}

// Failed is the failed result of this candidate, for reason, under the id its evaluation
// would have had: when a result did get out first, this one is the duplicate JetStream drops.
func (c *Candidate) Failed(reason string) *Result {
	r := c.Result("")
	r.Status, r.Reason = StatusFailed, reason
	return r
}

// Done reports whether the candidate's result needs no evaluation: it was rejected or failed
// before it reached an evaluator.
func (c *Candidate) Done() bool { return c.Rejected != "" || c.Abandoned != "" }

// Shrink drops what the result can lose to fit the body limit, one step a call, and reports
// whether it dropped anything: first the artifacts (replaced by a note), then, for a failed
// result, the candidate's code (the failure is what counts).
func (r *Result) Shrink() bool {
	if len(r.Artifacts) > 0 && r.Artifacts["note"] != ArtifactsDropped {
		r.Artifacts = map[string]string{"note": ArtifactsDropped}
		return true
	}
	if r.Status == StatusFailed && r.Candidate.Code != "" {
		r.Candidate.Code = ""
		return true
	}
	return false
}

// ArtifactsDropped is the note a result carries instead of artifacts that did not fit.
const ArtifactsDropped = "artifacts dropped: the result was over the message size limit"

// Envelope gives the stage that carries a body its id and run.
func (m *Meta) Envelope() *Meta { return m }
