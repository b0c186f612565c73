package protocol

import (
	"slices"
	"time"
)

// Message is any body on the wire. Encode stamps its version.
type Message interface {
	setVersion(int)
	version() int
}

// Meta is carried by every body: version, stable id (also the Nats-Msg-Id) and run.
type Meta struct {
	V   int    `json:"v"`
	ID  string `json:"id"`
	Run string `json:"run"`
}

func (m *Meta) setVersion(v int) { m.V = v }
func (m *Meta) version() int     { return m.V }

// Seed starts a run (with Config and BundleDigest) or adds a program to an existing run
// (Program only). A body on shoal.seed.<run> that is not JSON is read as a bare program.
type Seed struct {
	Meta
	// Config is the run's YAML as the user wrote it; empty for a bare program.
	Config string `json:"config,omitempty"`
	// BundleDigest names the evaluator bundle in the bundles object store ("sha256-<hex>").
	BundleDigest string `json:"bundle_digest,omitempty"`
	// Program is the seed program's source.
	Program string `json:"program"`
	// ProgramName is the seed's file name (initial_program.py); its extension is kept for
	// candidates and for `shoal best`.
	ProgramName string    `json:"program_name,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	// Templates are the run's prompt templates read from prompt.template_dir, by OpenEvolve's
	// names (diff_user, previous_attempt, …) without the .txt; they override the defaults.
	Templates map[string]string `json:"templates,omitempty"`
}

// Program is a member of the population as it travels in tasks and samples.
type Program struct {
	ID         string             `json:"id"`
	ParentID   string             `json:"parent_id,omitempty"`
	Code       string             `json:"code"`
	Score      float64            `json:"score"`
	Metrics    map[string]float64 `json:"metrics,omitempty"`
	Artifacts  map[string]string  `json:"artifacts,omitempty"`
	Status     Status             `json:"status"`
	Generation int                `json:"generation"`
	Island     int                `json:"island"`
	// Iteration is the planner's task number that produced the program (0 for a seed).
	Iteration int64 `json:"iteration,omitempty"`
	// Changes is the generator's summary of what it changed; Reason why the program failed.
	Changes string `json:"changes,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Features are the program's MAP-Elites cell coordinates on its island.
	Features []int `json:"features,omitempty"`
}

// ChatMessage is one message of a chat-completions prompt.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Mode says how a model's reply becomes a program.
type Mode string

const (
	// ModeDiff: the reply holds SEARCH/REPLACE blocks applied to the parent.
	ModeDiff Mode = "diff"
	// ModeRewrite: the reply holds a whole new program.
	ModeRewrite Mode = "rewrite"
)

// Task asks a generator for one candidate. Messages is the rendered prompt; Parent and
// Inspirations are the inputs it was rendered from (the mutate backend uses them directly).
type Task struct {
	Meta
	Model        string        `json:"model"`
	Iteration    int64         `json:"iteration"`
	Island       int           `json:"island"`
	Mode         Mode          `json:"mode"`
	Language     string        `json:"language"`
	Parent       Program       `json:"parent"`
	Inspirations []Program     `json:"inspirations,omitempty"`
	Messages     []ChatMessage `json:"messages,omitempty"`
	// Seen holds the novelty sketches (pkg/novelty) of the programs the task's island
	// evaluated lately, newest first, when the run's database.novelty_threshold is above 0:
	// the generator skips a child too like one of them without asking the archive.
	Seen []string `json:"seen,omitempty"`
	// Seed drives every random choice a generator makes for this task, so a redelivered task
	// yields the same candidate from the mutate backend.
	Seed      int64     `json:"seed"`
	CreatedAt time.Time `json:"created_at"`
	// HandBacks counts how often a generator handed the task back to TASKS for another
	// replica; each copy's Nats-Msg-Id derives from it (Task.HandBack).
	HandBacks int `json:"hand_backs,omitempty"`
}

// TokenUsage counts a model's tokens for one candidate.
type TokenUsage struct {
	Prompt     int `json:"prompt"`
	Completion int `json:"completion"`
}

// Candidate is a program to evaluate. A candidate whose reply could not be applied carries
// Rejected and no code; the evaluator turns it into a rejected result without running it, so
// every task is accounted for in RESULTS. A candidate whose task no delivery could settle
// carries Abandoned and becomes a failed result the same way. Build one with Task.Candidate
// or Seed.Candidate (lineage.go).
type Candidate struct {
	Meta
	TaskID     string `json:"task_id,omitempty"`
	ParentID   string `json:"parent_id,omitempty"`
	Iteration  int64  `json:"iteration"`
	Island     int    `json:"island"`
	Model      string `json:"model,omitempty"`
	Language   string `json:"language"`
	Code       string `json:"code"`
	Generation int    `json:"generation"`
	Rejected   string `json:"rejected,omitempty"`
	// Novelty is set with Rejected when the generator skipped the candidate as too like a
	// program its island had evaluated (database.novelty_threshold).
	Novelty    bool       `json:"novelty,omitempty"`
	Abandoned  string     `json:"abandoned,omitempty"`
	Changes    string     `json:"changes,omitempty"`
	Tokens     TokenUsage `json:"tokens"`
	Generator  string     `json:"generator,omitempty"`
	GenerateMS int64      `json:"generate_ms"`
	CreatedAt  time.Time  `json:"created_at"`
}

// IsSeed reports whether the candidate is a seed program rather than a generated one.
func (c *Candidate) IsSeed() bool { return c.TaskID == "" }

// Status is a result's outcome.
type Status string

const (
	StatusOK       Status = "ok"
	StatusFailed   Status = "failed"   // the evaluator raised, returned garbage or a stage failed
	StatusTimeout  Status = "timeout"  // wall-clock limit reached; the process group was killed
	StatusRejected Status = "rejected" // the generator's reply did not apply; nothing ran
)

// Result is a scored candidate: the RESULTS stream is the run's source of truth.
type Result struct {
	Meta
	Candidate Candidate          `json:"candidate"`
	Status    Status             `json:"status"`
	Score     float64            `json:"score"`
	Metrics   map[string]float64 `json:"metrics,omitempty"`
	Artifacts map[string]string  `json:"artifacts,omitempty"`
	// Stage is the last cascade stage that ran (0 when the evaluator has no stages).
	Stage     int       `json:"stage,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Evaluator string    `json:"evaluator,omitempty"`
	EvalMS    int64     `json:"eval_ms"`
	CreatedAt time.Time `json:"created_at"`
}

// Event kinds on shoal.event.<run>.<kind>.
const (
	EventNewBest  = "new_best"
	EventRunState = "run_state"
	EventError    = "error"
	// EventMigration: an island copied its best programs to its ring neighbours.
	EventMigration = "migration"
	// EventSeed: the archive accepted a seed; CandidateID names the seed's candidate. A seed
	// it refuses is an EventError naming the same candidate, so `shoal seed` learns either.
	EventSeed = "seed"
)

// Event tells watchers what happened to a run.
type Event struct {
	Meta
	Kind        string    `json:"kind"`
	Message     string    `json:"message"`
	CandidateID string    `json:"candidate_id,omitempty"`
	Score       float64   `json:"score,omitempty"`
	Time        time.Time `json:"time"`
}

// SampleRequest asks the archive for a parent and inspirations for an island.
type SampleRequest struct {
	Meta
	Island          int   `json:"island"`
	NumInspirations int   `json:"num_inspirations"`
	Seed            int64 `json:"seed"`
	// More asks, in the same request, for the samples of the refill's further tasks: one
	// round trip to the archive per refill rather than per task. SampleReply.More answers
	// them in order, possibly fewer of them (see there).
	More []SampleWant `json:"more,omitempty"`
}

// SampleWant is one more sample of a SampleRequest: an island and the task's seed.
type SampleWant struct {
	Island int   `json:"island"`
	Seed   int64 `json:"seed"`
}

// Sample is a parent and inspirations for one task, as SampleReply.More carries them.
type Sample struct {
	Parent       Program   `json:"parent"`
	Inspirations []Program `json:"inspirations,omitempty"`
	Top          []Program `json:"top,omitempty"`
	Previous     []Program `json:"previous,omitempty"`
	// Seen: as SampleReply.Seen, for this sample's island.
	Seen []string `json:"seen,omitempty"`
}

// SampleReply answers a SampleRequest; Error is set when the run has no program yet or is
// unknown.
type SampleReply struct {
	Meta
	Parent       Program   `json:"parent"`
	Inspirations []Program `json:"inspirations,omitempty"`
	Top          []Program `json:"top,omitempty"`
	// Previous holds the island's most recent attempts, newest first, failed ones included
	// with their Status and Reason, so a prompt can show what was tried and how it ended.
	Previous []Program `json:"previous,omitempty"`
	// Seen holds the novelty sketches of the island's lately evaluated programs, newest first,
	// when the run's database.novelty_threshold is above 0 (see Task.Seen).
	Seen  []string `json:"seen,omitempty"`
	Error string   `json:"error,omitempty"`
	// More answers SampleRequest.More, in order. It may hold fewer than were asked for (an
	// archive of an older build answers none, and a reply is kept under MaxBodyBytes): the
	// planner asks again for the rest.
	More []Sample `json:"more,omitempty"`
}

// Samples is every sample the reply holds, the request's own first, then More; none when
// the reply is an error.
func (r *SampleReply) Samples() []Sample {
	if r.Error != "" {
		return nil
	}
	first := Sample{Parent: r.Parent, Inspirations: r.Inspirations, Top: r.Top, Previous: r.Previous, Seen: r.Seen}
	return append([]Sample{first}, r.More...)
}

// SnapshotReply answers a request on Names.Snapshot: the archive wrote the run's snapshot to
// the snapshots object store under Key, covering RESULTS up to Seq. Error is set when the run
// is unknown to the archive or the write failed.
type SnapshotReply struct {
	Meta
	Key        string `json:"key,omitempty"`
	Seq        uint64 `json:"seq"`
	Iterations int64  `json:"iterations"`
	Error      string `json:"error,omitempty"`
}

// RunStatus is a run's lifecycle state, decided by the planner.
type RunStatus string

const (
	// RunRunning: the planner issues tasks.
	RunRunning RunStatus = "running"
	// RunStopping: the budget is spent or the target reached; tasks in flight still finish.
	RunStopping RunStatus = "stopping"
	// RunDone: every issued task's result is folded.
	RunDone RunStatus = "done"
	// RunPaused: the user paused the run; no new tasks, those in flight finish.
	RunPaused RunStatus = "paused"
	// RunFailed: the run cannot go on; StopReason says why (its seed failed to evaluate).
	// Nothing wakes a failed run.
	RunFailed RunStatus = "failed"
)

// RunSpec is the runs bucket's <run>.config value: what the run was seeded with.
type RunSpec struct {
	Meta
	Config       string    `json:"config"`
	ConfigDigest string    `json:"config_digest"`
	BundleDigest string    `json:"bundle_digest"`
	ProgramName  string    `json:"program_name"`
	CreatedAt    time.Time `json:"created_at"`
	// Templates are the seed's prompt templates (see Seed.Templates).
	Templates map[string]string `json:"templates,omitempty"`
}

// RunState is the runs bucket's <run>.state value, written by the archive after it folds
// results. It is derived from RESULTS alone, so a replay rebuilds it exactly.
type RunState struct {
	Meta
	Iterations int64            `json:"iterations"` // generated candidates folded
	ByModel    map[string]int64 `json:"by_model,omitempty"`
	Seeds      int64            `json:"seeds"`
	// SeedsOK counts the seeds that evaluated with status ok. While it is 0, SeedError is
	// why the first failed seed failed (the evaluator's reason and its error output): the
	// planner issues no task before a seed passes, and ends a run whose seeds all failed.
	SeedsOK    int64   `json:"seeds_ok"`
	SeedError  string  `json:"seed_error,omitempty"`
	Failed     int64   `json:"failed"`
	Population int     `json:"population"`
	BestID     string  `json:"best_id,omitempty"`
	BestScore  float64 `json:"best_score"`
	SeedScore  float64 `json:"seed_score"`
	// LastSeq is the RESULTS stream sequence of the last folded result.
	LastSeq   uint64    `json:"last_seq"`
	UpdatedAt time.Time `json:"updated_at"`
	// LastImprovement is the value of Iterations when the best early_stopping_metric last
	// rose by more than convergence_threshold (0 at the seed): the planner's plateau clock.
	LastImprovement int64 `json:"last_improvement"`
	// Islands summarises each island of the population.
	Islands []IslandState `json:"islands,omitempty"`
	// Models holds each model's accounting, by model name: what the planner's bandit model
	// choice (llm.model_selection: bandit) reads.
	Models map[string]ModelStats `json:"models,omitempty"`
	// GainScale is the discounted mean of the positive gains of children over their parents,
	// which scales each result's bandit reward.
	GainScale float64 `json:"gain_scale,omitempty"`
	// NoveltyRejected counts the candidates skipped before evaluation as too like a program
	// their island had evaluated (database.novelty_threshold): evaluations saved.
	NoveltyRejected int64 `json:"novelty_rejected,omitempty"`
}

// ModelStats is one model's accounting in RunState.Models (its folded results are
// RunState.ByModel). Improvements counts those that scored above their parent;
// Reward and Pulls are the discounted sums the bandit reads: each folded result multiplies
// every model's by llm.bandit_discount, then adds the result's reward in [0, 1] (its gain over
// its parent, scaled by the run's typical gain) and 1 to its own model's.
type ModelStats struct {
	Improvements int64   `json:"improvements"`
	Reward       float64 `json:"reward"`
	Pulls        float64 `json:"pulls"`
}

// IslandState summarises one island in RunState.
type IslandState struct {
	Island     int     `json:"island"`
	Programs   int     `json:"programs"`
	Cells      int     `json:"cells"`
	BestID     string  `json:"best_id,omitempty"`
	BestScore  float64 `json:"best_score"`
	Migrations int64   `json:"migrations"`
}

// PlannerState is the runs bucket's <run>.planner value: what the planner has issued and
// whether the run goes on.
type PlannerState struct {
	Meta
	Status        RunStatus        `json:"status"`
	StopReason    string           `json:"stop_reason,omitempty"`
	Issued        int64            `json:"issued"`
	IssuedByModel map[string]int64 `json:"issued_by_model,omitempty"`
	StartedAt     time.Time        `json:"started_at"`
	UpdatedAt     time.Time        `json:"updated_at"`
	// LastModel is the model of task Issued. The planner records a task here before it
	// publishes it, and a restarted planner publishes that task again: its derived id makes
	// the copy a no-op if the first publish got through.
	LastModel string `json:"last_model,omitempty"`
	// LastModels, when set, are the models of the last refill's tasks, Issued-len+1 to
	// Issued (LastModel is its last): the planner records a refill's tasks in one write
	// before it publishes them, and a restarted planner publishes all of them again.
	LastModels []string `json:"last_models,omitempty"`
	// RanFor is the time spent running before RunningSince; max_wall_time counts only
	// running time, not time paused or stopped.
	RanFor       time.Duration `json:"ran_for,omitempty"`
	RunningSince time.Time     `json:"running_since,omitempty"`
	// Extensions is the RunControl.Extensions the planner has acted on; ResumedAt is the
	// run's Iterations at the last extension, where the plateau clock restarts.
	Extensions int64 `json:"extensions,omitempty"`
	ResumedAt  int64 `json:"resumed_at,omitempty"`
}

// RunControl is the runs bucket's <run>.control value, written by `shoal run pause|resume|
// extend` and obeyed by the planner.
type RunControl struct {
	Meta
	// Paused stops new tasks; tasks in flight finish.
	Paused bool `json:"paused"`
	// ExtraIterations and ExtraWallTime are added to the config's max_iterations and
	// max_wall_time; each `extend` adds to them and bumps Extensions.
	ExtraIterations int64         `json:"extra_iterations,omitempty"`
	ExtraWallTime   time.Duration `json:"extra_wall_time,omitempty"`
	Extensions      int64         `json:"extensions,omitempty"`
	UpdatedAt       time.Time     `json:"updated_at"`
}

// BestProgram is the runs bucket's <run>.best value: the best program so far, whole, so that
// `shoal best` needs nothing but the bucket.
type BestProgram struct {
	Meta
	Program     Program   `json:"program"`
	ProgramName string    `json:"program_name"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Generator is a generator replica's entry in the generators bucket, rewritten every few
// seconds while the replica lives. Replicas on one host count their peers from it, so that a
// model's variant is chosen for all of them (4 replicas on 4 cards: one card each).
type Generator struct {
	Meta
	Host string `json:"host"`
	// Models is empty for a replica that serves every model.
	Models      []string  `json:"models,omitempty"`
	Concurrency int       `json:"concurrency"`
	InFlight    int64     `json:"in_flight"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Serves reports whether the replica takes tasks of model.
func (g *Generator) Serves(model string) bool {
	return len(g.Models) == 0 || slices.Contains(g.Models, model)
}
