package protocol

import "strconv"

// Ids are derived, never random, so that a retried publish carries the same Nats-Msg-Id and a
// redelivered message produces the same downstream id.

// TaskID names the planner's iteration n of run.
func TaskID(run string, n int64) string { return run + ".t" + strconv.FormatInt(n, 10) }

// CandidateID names the candidate generated for a task.
func CandidateID(taskID string) string { return "c." + taskID }

// SeedCandidateID names the candidate made from the seed with the given id.
func SeedCandidateID(run, seedID string) string { return "c." + run + ".seed." + seedID }

// ResultID names the result of a candidate: one per candidate, however often it is evaluated.
func ResultID(candidateID string) string { return "r." + candidateID }

// HandBackID is the Nats-Msg-Id of the n-th copy of a task that generators handed back to
// TASKS: distinct from the task's own id and from every other hand-back, the same for a
// retried publish of one hand-back.
func HandBackID(taskID string, n int) string { return taskID + ".handback." + strconv.Itoa(n) }
