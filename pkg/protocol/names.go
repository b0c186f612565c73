package protocol

import (
	"fmt"
	"strings"
)

// Names derives every subject, stream, consumer and bucket name from one prefix, so two
// deployments can share a NATS server without seeing each other.
type Names struct {
	Prefix string
}

// NewNames returns the names for prefix, or for DefaultPrefix when prefix is empty.
func NewNames(prefix string) Names {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Names{Prefix: prefix}
}

// Subjects.

// Validate reports a prefix no subject can start with: it must be dot-separated tokens
// without spaces, '*' or '>'.
func (n Names) Validate() error {
	p := n.Prefix
	if p == "" || strings.ContainsAny(p, " \t\r\n*>") || strings.HasPrefix(p, ".") || strings.HasSuffix(p, ".") || strings.Contains(p, "..") {
		return fmt.Errorf("%w: %q must be dot-separated tokens without spaces, '*' or '>'", ErrBadPrefix, p)
	}
	return nil
}

func (n Names) Seed(run string) string { return n.Prefix + ".seed." + run }
func (n Names) Task(run, model string) string {
	return n.Prefix + ".task." + run + "." + ModelToken(model)
}
func (n Names) Candidate(run string) string       { return n.Prefix + ".candidate." + run }
func (n Names) Result(run string) string          { return n.Prefix + ".result." + run }
func (n Names) Event(run, kind string) string     { return n.Prefix + ".event." + run + "." + kind }
func (n Names) Dead(stream string) string         { return n.Prefix + ".dead." + stream }
func (n Names) Sample(run string) string          { return n.Prefix + ".archive." + run + ".sample" }
func (n Names) AllSeeds() string                  { return n.Prefix + ".seed.*" }
func (n Names) AllTasks() string                  { return n.Prefix + ".task.>" }
func (n Names) TasksForModel(model string) string { return n.Prefix + ".task.*." + ModelToken(model) }
func (n Names) AllCandidates() string             { return n.Prefix + ".candidate.*" }
func (n Names) AllResults() string                { return n.Prefix + ".result.*" }
func (n Names) AllEvents() string                 { return n.Prefix + ".event.>" }
func (n Names) RunEvents(run string) string       { return n.Prefix + ".event." + run + ".*" }
func (n Names) AllDead() string                   { return n.Prefix + ".dead.>" }
func (n Names) AllSamples() string                { return n.Prefix + ".archive.*.sample" }

// Snapshot is the request/reply subject asking the archive that owns run to snapshot it now;
// the reply is a SnapshotReply.
func (n Names) Snapshot(run string) string { return n.Prefix + ".archive." + run + ".snapshot" }
func (n Names) AllSnapshots() string       { return n.Prefix + ".archive.*.snapshot" }

// RunFromSubject returns the <run> token of any per-run subject built by n.
func (n Names) RunFromSubject(subject string) string {
	return tokenAt(subject, strings.Count(n.Prefix, ".")+2)
}

// Streams: upper-cased prefix + the design's stream name, e.g. SHOAL_RESULTS.

func (n Names) stream(s string) string {
	return strings.ToUpper(strings.ReplaceAll(n.Prefix, ".", "_")) + "_" + s
}
func (n Names) SeedsStream() string      { return n.stream("SEEDS") }
func (n Names) TasksStream() string      { return n.stream("TASKS") }
func (n Names) CandidatesStream() string { return n.stream("CANDIDATES") }
func (n Names) ResultsStream() string    { return n.stream("RESULTS") }
func (n Names) EventsStream() string     { return n.stream("EVENTS") }
func (n Names) DeadStream() string       { return n.stream("DEAD") }

// KV buckets and object stores: prefix + "-" + the design's bucket name, e.g. shoal-runs.

func (n Names) bucket(b string) string     { return strings.ReplaceAll(n.Prefix, ".", "-") + "-" + b }
func (n Names) RunsBucket() string         { return n.bucket("runs") }
func (n Names) GeneratorsBucket() string   { return n.bucket("generators") }
func (n Names) GPUInventoryBucket() string { return n.bucket("gpu-inventory") }
func (n Names) GPULeasesBucket() string    { return n.bucket("gpu-leases") }
func (n Names) BundlesStore() string       { return n.bucket("bundles") }

// SnapshotsStore holds one archive snapshot per run (key: the run id).
func (n Names) SnapshotsStore() string { return n.bucket("snapshots") }

// OwnersBucket holds run ownership leases (package leader): one key per (role, run), whose
// value names the replica that owns that run's work for that role.
func (n Names) OwnersBucket() string { return n.bucket("owners") }

// Durable consumer names, one per (stream, role): replicas of a service share it.

func (n Names) ArchiveSeedsConsumer() string { return "archive-seeds" }
func (n Names) EvaluatorConsumer() string    { return "evaluator" }
func (n Names) GeneratorConsumer(model string) string {
	if model == "" {
		return "generator"
	}
	return "generator-" + ModelToken(model)
}

// Keys in the runs bucket. The config key is written once by the archive when a run is
// seeded; the state and best keys by the archive as it folds; the planner key by the planner.

func RunConfigKey(run string) string  { return run + ".config" }
func RunStateKey(run string) string   { return run + ".state" }
func RunPlannerKey(run string) string { return run + ".planner" }
func RunBestKey(run string) string    { return run + ".best" }

// RunControlKey holds the user's RunControl of a run (pause, resume, extend).
func RunControlKey(run string) string { return run + ".control" }

func tokenAt(subject string, i int) string {
	parts := strings.Split(subject, ".")
	if i < len(parts) {
		return parts[i]
	}
	return ""
}

// GeneratorKey is a replica's key in the generators bucket: its id with every character a KV
// key cannot hold replaced by '_'.
func GeneratorKey(id string) string { return ModelToken(id) }
