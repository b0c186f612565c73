package evaluator

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"
	"github.com/shoal-run/shoal/pkg/telemetry"

	"github.com/shoal-run/shoal/services/evaluator/internal/harness"
	"github.com/shoal-run/shoal/services/evaluator/internal/sandbox"
)

// scorer runs one candidate against a run's evaluator in a sandbox and turns whatever
// happened into a verdict. It knows nothing of NATS.
type scorer struct {
	python   string
	harness  *harness.Harness
	launcher *sandbox.Launcher
	// warm holds prepared zygotes, one per evaluator; nil runs every candidate cold, on a
	// zygote of its own.
	warm      *warmPool
	workRoot  string
	maxOutput int
	// outputLimit is how much a candidate may write to stdout and stderr together before it
	// is killed; zero: sandbox.DefaultOutputLimitBytes.
	outputLimit int64
	// memoryLimitMB bounds a candidate whose run sets no evaluator.memory_limit_mb; zero:
	// sandbox.DefaultMemoryLimitMB, less than zero none.
	memoryLimitMB int
	// scratchMB bounds what a candidate writes to its work dir and /tmp; zero:
	// sandbox.DefaultScratchMB.
	scratchMB int
	log       *slog.Logger
	// limits counts the sandbox limits candidates hit (shoal.sandbox.limits); nil: not
	// counted.
	limits metric.Int64Counter
}

// close stops the warm interpreters.
func (s *scorer) close() {
	if s.warm != nil {
		s.warm.close()
	}
}

// job is one candidate with everything its evaluation needs.
type job struct {
	cfg *runconfig.Config
	// bundleDir holds the run's evaluator files; empty when the run has no bundle.
	bundleDir string
	// programExt is the extension the candidate's file gets (".py").
	programExt string
	code       string
}

// verdict is a scored candidate but for its score, which the run's config derives from the
// metrics. A failed verdict may still hold the metrics of the cascade stages that passed
// before one raised.
type verdict struct {
	Status    protocol.Status
	Reason    string
	Metrics   map[string]float64
	Artifacts map[string]string
	Stage     int
	// evalTime is the time evaluate() (or the stages) took, as the evaluation measured it.
	evalTime time.Duration
	// uid is the uid the candidate ran as (0: the service's own), for tests that look for
	// its processes.
	uid int
}

// Defaults for run configs that leave values unset.
const (
	defaultTimeout          = 300 * time.Second
	defaultEvaluatorFile    = "evaluator.py"
	defaultMaxArtifactBytes = 20480
)

// Bounds on an evaluation's metrics, which, unlike artifacts, are never dropped to fit a
// result into protocol.MaxBodyBytes.
const (
	maxMetrics      = 1000
	maxMetricsBytes = 64 << 10
)

func metricsSize(m map[string]float64) int {
	n := 0
	for k := range m {
		n += len(k)
	}
	return n
}

// score evaluates j. It returns an error only when the evaluation could not take place
// (ctx ended, the work dir or the interpreter failed us): a candidate that fails is a verdict.
func (s *scorer) score(ctx context.Context, j job) (*verdict, error) {
	box, err := sandbox.New(s.workRoot)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := box.Close(); err != nil {
			s.log.Warn("work dir left behind", "err", err)
		}
	}()
	ext := j.programExt
	if ext == "" {
		ext = ".py"
	}
	program := filepath.Join(box.Dir, "program"+ext)
	if err := box.WriteFile(filepath.Base(program), []byte(j.code)); err != nil {
		return nil, fmt.Errorf("write candidate: %w", err)
	}
	ev := j.cfg.Evaluator
	timeout := ev.Timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	var v *verdict
	if len(ev.Command) > 0 {
		v, err = s.command(ctx, box, j, program, timeout)
	} else {
		v, err = s.harnessed(ctx, box, j, program, timeout)
	}
	if err != nil {
		return nil, err
	}
	if n, size := len(v.Metrics), metricsSize(v.Metrics); n > maxMetrics || size > maxMetricsBytes {
		// A result must fit in one message, and only artifacts can be dropped to make it fit.
		v.Status, v.Reason = protocol.StatusFailed, fmt.Sprintf("evaluator returned too many metrics (%d, %d bytes of names; at most %d and %d)", n, size, maxMetrics, maxMetricsBytes)
		v.Metrics = nil
	}
	v.Artifacts = keepArtifacts(v.Artifacts, ev.EnableArtifacts, j.cfg.Prompt.MaxArtifactBytes)
	return v, nil
}

// harnessed runs an OpenEvolve-style Python evaluator through the harness.
func (s *scorer) harnessed(ctx context.Context, box *sandbox.Box, j job, program string, timeout time.Duration) (*verdict, error) {
	ev := j.cfg.Evaluator
	if j.bundleDir == "" {
		return failed("the run has no evaluator bundle"), nil
	}
	file := ev.File
	if file == "" {
		file = defaultEvaluatorFile
	}
	if !filepath.IsLocal(filepath.FromSlash(file)) {
		return failed(fmt.Sprintf("evaluator file %s must be a relative path inside the run's bundle", file)), nil
	}
	evalPath := filepath.Join(j.bundleDir, filepath.FromSlash(file))
	if _, err := os.Stat(evalPath); err != nil {
		return failed(fmt.Sprintf("evaluator file %s is not in the run's bundle", file)), nil
	}
	prep := &sandbox.Prepare{
		HarnessDir: s.harness.Dir, Evaluator: evalPath, Env: s.harness.Env(),
		ReadOnly:  []string{j.bundleDir, s.harness.Dir},
		ScratchMB: s.workDirLimit(ev.WorkDirLimitMB),
	}
	out, err := s.run(ctx, prep, box, sandbox.Command{
		Program: program, Cascade: ev.CascadeEvaluation, Thresholds: ev.CascadeThresholds,
		Env:              s.harness.Env(),
		Timeout:          timeout,
		MemoryLimitMB:    s.memoryLimit(ev.MemoryLimitMB),
		MaxOutputBytes:   s.maxOutput,
		OutputLimitBytes: s.outputLimit,
	})
	var ierr *sandbox.ImportError
	if errors.As(err, &ierr) {
		v := &verdict{Status: protocol.StatusFailed, Reason: ierr.Error(), Artifacts: map[string]string{"traceback": ierr.Traceback}}
		return v, nil
	}
	if err != nil {
		return nil, err
	}
	v := &verdict{Artifacts: map[string]string{}, uid: out.UID}
	report, rerr := harness.ParseReport(out.Report)
	if out.ReportTooLarge {
		rerr = fmt.Errorf("report over %d bytes", sandbox.MaxReportBytes)
	}
	if report != nil {
		v.Metrics, v.Stage = report.Metrics, report.Stage
		v.evalTime = time.Duration(report.Elapsed * float64(time.Second))
		for k, a := range report.Artifacts {
			v.Artifacts[k] = a
		}
		if report.Traceback != "" {
			v.Artifacts["traceback"] = report.Traceback
		}
	}
	addOutput(v.Artifacts, out)
	switch {
	case out.OutputLimited:
		v.Status, v.Reason = protocol.StatusFailed, s.outputLimitReason()
	case out.TimedOut:
		v.Status, v.Reason = protocol.StatusTimeout, timedOut(timeout)
	case report != nil && report.Error != "":
		v.Status, v.Reason = protocol.StatusFailed, report.Error
	case !out.Success():
		v.Status, v.Reason = protocol.StatusFailed, "evaluator "+exitReason(out)
	case out.Left > 0:
		v.Status, v.Reason = protocol.StatusFailed, leftReason(out.Left)
	case errors.Is(rerr, harness.ErrNoReport):
		v.Status, v.Reason = protocol.StatusFailed, "evaluator ended without writing its result"
	case rerr != nil:
		v.Status, v.Reason = protocol.StatusFailed, "evaluator result is unreadable: "+rerr.Error()
	case len(v.Metrics) == 0:
		v.Status, v.Reason = protocol.StatusFailed, "evaluator returned no numeric metrics"
	default:
		v.Status = protocol.StatusOK
	}
	return v, nil
}

// warmSpares is how many jobs' processes a warm zygote keeps on standby: enough for the next
// candidate to find one ready while the last one's replacement is being prepared.
const warmSpares = 2

// run runs c on a zygote: the warm one prepared with prep (one without an evaluator for
// commands) when the scorer keeps them, else a fresh one for this job alone. A zygote that
// dies under a job (the service's trouble: candidates cannot reach it) is replaced and the
// job run once more.
func (s *scorer) run(ctx context.Context, prep *sandbox.Prepare, box *sandbox.Box, c sandbox.Command) (*sandbox.Outcome, error) {
	p := *prep
	p.Roots = []string{s.workRoot}
	if p.ScratchMB == 0 {
		p.ScratchMB = s.scratchMB
	}
	if s.warm != nil {
		p.Spares = warmSpares
	}
	prep = &p
	for attempt := 0; ; attempt++ {
		var out *sandbox.Outcome
		var err error
		if s.warm != nil {
			// One zygote per evaluator, or per bundle for commands: its tree holds that
			// bundle and no other run's.
			// The work dir limit is the zygote's too: runs that differ in it get their own.
			key := prep.Evaluator
			if key == "" {
				key = "command:" + strings.Join(prep.ReadOnly, ":")
			}
			key += "|scratch=" + strconv.Itoa(prep.ScratchMB)
			var z *sandbox.Zygote
			var release func()
			z, release, err = s.warm.get(ctx, key, prep)
			if err != nil {
				return nil, err
			}
			out, err = z.Run(ctx, box, c)
			release()
		} else {
			var z *sandbox.Zygote
			z, err = s.launcher.Start(ctx, prep)
			if err != nil {
				return nil, err
			}
			out, err = z.Run(ctx, box, c)
			_ = z.Close()
		}
		if errors.Is(err, sandbox.ErrZygoteDied) && attempt == 0 && ctx.Err() == nil {
			s.log.Warn("sandbox zygote died under a candidate; running it again", "err", err)
			continue
		}
		if out != nil {
			s.noteOutcome(ctx, out, attempt)
		}
		return out, err
	}
}

// noteOutcome puts how the sandboxed job ended on the sandbox span (worker.evaluate's) and
// counts the limits it hit.
func (s *scorer) noteOutcome(ctx context.Context, out *sandbox.Outcome, attempt int) {
	var hit []string
	if out.TimedOut {
		hit = append(hit, "time")
	}
	if out.OutputLimited {
		hit = append(hit, "output")
	}
	if out.Left > 0 {
		hit = append(hit, "background_processes")
	}
	if out.Signal != "" && len(hit) == 0 {
		hit = append(hit, "killed") // a signal of none of shoal's own limits: the memory limit, mostly
	}
	for _, l := range hit {
		if s.limits == nil {
			break
		}
		s.limits.Add(context.WithoutCancel(ctx), 1, metric.WithAttributes(telemetry.Limit.String(l)))
	}
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(
		attribute.Int("shoal.sandbox.exit_code", out.ExitCode),
		attribute.String("shoal.sandbox.signal", out.Signal),
		attribute.Bool("shoal.sandbox.timed_out", out.TimedOut),
		attribute.StringSlice("shoal.sandbox.limits_hit", hit),
		attribute.Int("shoal.sandbox.left_processes", out.Left),
		attribute.Int64("shoal.sandbox.cpu_ms", out.CPU.Milliseconds()),
		attribute.Int64("shoal.sandbox.wall_ms", out.Duration.Milliseconds()),
		attribute.Bool("shoal.sandbox.warm", s.warm != nil),
		attribute.Int("shoal.sandbox.attempts", attempt+1),
	)
}

// command runs a language-agnostic evaluator: any command that prints a JSON object of metrics.
func (s *scorer) command(ctx context.Context, box *sandbox.Box, j job, program string, timeout time.Duration) (*verdict, error) {
	ev := j.cfg.Evaluator
	prep := &sandbox.Prepare{ScratchMB: s.workDirLimit(ev.WorkDirLimitMB)}
	if j.bundleDir != "" {
		prep.ReadOnly = []string{j.bundleDir}
	}
	out, err := s.run(ctx, prep, box, sandbox.Command{
		Args:             commandArgs(ev.Command, j.bundleDir, program),
		Timeout:          timeout,
		MemoryLimitMB:    s.memoryLimit(ev.MemoryLimitMB),
		MaxOutputBytes:   s.maxOutput,
		OutputLimitBytes: s.outputLimit,
	})
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, sandbox.ErrZygoteDied) {
			return nil, err
		}
		// The run's command cannot start here (not found, not executable): every candidate
		// would fail the same way, and the reason tells the user why.
		return failed(err.Error()), nil
	}
	v := &verdict{Artifacts: map[string]string{}, uid: out.UID}
	obj, found := lastJSONObject(out.Stdout)
	if found {
		v.Metrics = splitMetrics(obj, v.Artifacts)
	}
	addOutput(v.Artifacts, out)
	switch {
	case out.OutputLimited:
		v.Status, v.Reason = protocol.StatusFailed, s.outputLimitReason()
	case out.TimedOut:
		v.Status, v.Reason = protocol.StatusTimeout, timedOut(timeout)
	case !out.Success():
		v.Status, v.Reason = protocol.StatusFailed, "command "+exitReason(out)
	case !found:
		v.Status, v.Reason = protocol.StatusFailed, "command printed no JSON object"
	case len(v.Metrics) == 0:
		v.Status, v.Reason = protocol.StatusFailed, "command printed no numeric metrics"
	default:
		v.Status = protocol.StatusOK
	}
	return v, nil
}

// commandArgs substitutes {program} and points relative paths that name a file of the
// bundle at that file: the command runs in an empty work dir, so such a path can only mean
// the bundle's file ("./score.sh", "python3 eval.py {program}").
func commandArgs(command []string, bundleDir, program string) []string {
	args := make([]string, len(command))
	for i, a := range command {
		if strings.Contains(a, "{program}") {
			args[i] = strings.ReplaceAll(a, "{program}", program)
			continue
		}
		args[i] = a
		if bundleDir == "" || a == "" || filepath.IsAbs(a) || strings.HasPrefix(a, "-") {
			continue
		}
		if i == 0 && !strings.Contains(a, "/") && !exists(filepath.Join(bundleDir, a)) {
			continue // a command on PATH, such as python3
		}
		if p := filepath.Join(bundleDir, a); exists(p) {
			args[i] = p
		}
	}
	return args
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// lastJSONObject finds the metrics a command printed: the last non-empty line that parses as
// a JSON object, so that chatty commands work, or else the whole output as one object
// (pretty-printed JSON). Python's NaN and Infinity are accepted.
func lastJSONObject(stdout string) (map[string]any, bool) {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(stdout))
	sc.Buffer(nil, len(stdout)+1)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	for i := len(lines) - 1; i >= 0; i-- {
		line := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(line, "{") {
			continue
		}
		if obj, ok := decodeObject(line); ok {
			return obj, true
		}
	}
	return decodeObject(strings.TrimSpace(stdout))
}

func decodeObject(text string) (map[string]any, bool) {
	if !strings.HasPrefix(text, "{") {
		return nil, false
	}
	dec := json.NewDecoder(strings.NewReader(quoteNonFinite(text)))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil || dec.More() {
		return nil, false
	}
	return obj, true
}

// quoteNonFinite turns the bare NaN, Infinity and -Infinity that Python's json.dumps writes
// into strings, which strict JSON accepts; splitMetrics then drops them as non-finite.
func quoteNonFinite(text string) string {
	if !strings.Contains(text, "NaN") && !strings.Contains(text, "Infinity") {
		return text
	}
	var b strings.Builder
	inString, escaped := false, false
	for i := 0; i < len(text); i++ {
		c := text[i]
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			b.WriteByte(c)
			continue
		}
		if c == '"' {
			inString = true
			b.WriteByte(c)
			continue
		}
		if tok := nonFiniteToken(text[i:]); tok != "" {
			b.WriteString(`"` + tok + `"`)
			i += len(tok) - 1
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func nonFiniteToken(s string) string {
	for _, tok := range []string{"NaN", "-Infinity", "Infinity"} {
		if strings.HasPrefix(s, tok) {
			return tok
		}
	}
	return ""
}

// splitMetrics keeps the finite numbers of obj as metrics (bools as 0/1), moves other values
// to artifacts, and notes dropped non-finite values in the "dropped_metrics" artifact, as the
// harness does for Python evaluators.
func splitMetrics(obj map[string]any, artifacts map[string]string) map[string]float64 {
	metrics := map[string]float64{}
	var dropped []string
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		switch x := obj[k].(type) {
		case json.Number:
			f, err := strconv.ParseFloat(x.String(), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				dropped = append(dropped, k+"="+x.String())
				continue
			}
			metrics[k] = f
		case bool:
			metrics[k] = 0
			if x {
				metrics[k] = 1
			}
		case string:
			switch strings.ToLower(x) {
			case "nan", "infinity", "-infinity", "inf", "-inf":
				dropped = append(dropped, k+"="+x)
			default:
				artifacts[k] = x
			}
		case nil:
			dropped = append(dropped, k+"=null")
		default:
			data, _ := json.Marshal(x)
			artifacts[k] = string(data)
		}
	}
	if len(dropped) > 0 {
		artifacts["dropped_metrics"] = strings.Join(dropped, ", ")
	}
	return metrics
}

// addOutput keeps the captured streams as artifacts; an evaluator's own artifact of the same
// name wins, and the capture goes under "captured_<stream>".
func addOutput(artifacts map[string]string, out *sandbox.Outcome) {
	for name, text := range map[string]string{"stdout": out.Stdout, "stderr": out.Stderr} {
		if strings.TrimSpace(text) == "" {
			continue
		}
		if _, taken := artifacts[name]; taken {
			name = "captured_" + name
		}
		artifacts[name] = text
	}
}

// keepArtifacts applies the run's artifact settings: none when artifacts are off, else each
// one capped at maxBytes.
func keepArtifacts(artifacts map[string]string, enabled bool, maxBytes int) map[string]string {
	if !enabled || len(artifacts) == 0 {
		return nil
	}
	if maxBytes <= 0 {
		maxBytes = defaultMaxArtifactBytes
	}
	for k, a := range artifacts {
		artifacts[k] = capText(a, maxBytes)
	}
	return artifacts
}

// capText keeps the head and the tail of s within about n bytes: the start of an output says
// what ran, its end how it failed.
func capText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	h, t := n/2, len(s)-n/2
	for h > 0 && !utf8.RuneStart(s[h]) {
		h--
	}
	for t < len(s) && !utf8.RuneStart(s[t]) {
		t++
	}
	head, tail := s[:h], s[t:]
	return fmt.Sprintf("%s\n[... %d bytes cut ...]\n%s", head, len(s)-len(head)-len(tail), tail)
}

// memoryLimit is a run's memory limit: its own evaluator.memory_limit_mb when set, else the
// service's default.
func (s *scorer) memoryLimit(run int) int {
	if run > 0 {
		return run
	}
	return s.memoryLimitMB
}

// workDirLimit is a run's work dir limit: its own evaluator.work_dir_limit_mb when set, else
// the service's default.
func (s *scorer) workDirLimit(run int) int {
	if run > 0 {
		return run
	}
	return s.scratchMB
}

func failed(reason string) *verdict {
	return &verdict{Status: protocol.StatusFailed, Reason: reason}
}

// outputLimitReason says why a candidate that wrote too much was killed.
func (s *scorer) outputLimitReason() string {
	n := s.outputLimit
	if n <= 0 {
		n = sandbox.DefaultOutputLimitBytes
	}
	size := strconv.FormatInt(n, 10) + " bytes"
	if n%(1<<20) == 0 {
		size = strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return "output limit: more than " + size + " written"
}

// leftReason says why a candidate whose evaluation returned with processes still running
// failed: it would have outlived its evaluation, had the sandbox not killed them.
func leftReason(n int) string {
	if n == 1 {
		return "left 1 background process running (killed)"
	}
	return "left " + strconv.Itoa(n) + " background processes running (killed)"
}

func timedOut(limit time.Duration) string {
	return "timed out after " + strconv.FormatFloat(limit.Seconds(), 'f', -1, 64) + "s"
}

func exitReason(out *sandbox.Outcome) string {
	if out.Signal != "" {
		return "killed by signal: " + out.Signal
	}
	reason := fmt.Sprintf("exited with status %d", out.ExitCode)
	if line := lastLine(out.Stderr); line != "" {
		reason += ": " + line
	}
	return reason
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[i+1:])
	}
	return capText(s, 200)
}
