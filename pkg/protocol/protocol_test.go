package protocol_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
)

var created = time.Date(2025, 3, 14, 15, 9, 26, 535000000, time.UTC)

func meta(id string) protocol.Meta { return protocol.Meta{ID: id, Run: "r1"} }

var program = protocol.Program{
	ID: "c.r1.t3", ParentID: "c.r1.t1", Code: "def f():\n\treturn \"<ok>\" & 1\n", Score: 0.75,
	Metrics: map[string]float64{"combined_score": 0.75, "speed": 2}, Artifacts: map[string]string{"stderr": "warn"},
	Status: protocol.StatusOK, Generation: 2, Island: 1,
}

// TestEncodeDecodeRoundTrip checks that every body a service sends arrives whole, stamped
// with the current version.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	candidate := protocol.Candidate{
		Meta: meta("c.r1.t3"), TaskID: "r1.t3", ParentID: "c.r1.t1", Iteration: 3, Island: 1,
		Model: "Qwen/Qwen2.5-7B", Language: "python", Code: "print(1)", Generation: 2,
		Changes: "swap loop", Tokens: protocol.TokenUsage{Prompt: 100, Completion: 20},
		Generator: "gen-1", GenerateMS: 1234, CreatedAt: created,
	}
	tests := []struct {
		name string
		in   protocol.Message
		out  func() protocol.Message // a zero value of the same type to decode into
	}{
		{"seed", &protocol.Seed{Meta: meta("s1"), Config: "max_iterations: 5\n", BundleDigest: "sha256-ab",
			Program: "print('hi')", ProgramName: "initial_program.py", CreatedAt: created},
			func() protocol.Message { return &protocol.Seed{} }},
		{"task", &protocol.Task{Meta: meta("r1.t3"), Model: "llama3.1:8b", Iteration: 3, Island: 1,
			Mode: protocol.ModeDiff, Language: "python", Parent: program,
			Inspirations: []protocol.Program{program, {ID: "c.r1.t2", Code: "x", Status: protocol.StatusFailed}},
			Messages:     []protocol.ChatMessage{{Role: "system", Content: "be brief"}, {Role: "user", Content: "improve"}},
			Seed:         -42, CreatedAt: created},
			func() protocol.Message { return &protocol.Task{} }},
		{"candidate", &candidate, func() protocol.Message { return &protocol.Candidate{} }},
		{"rejected candidate", &protocol.Candidate{Meta: meta("c.r1.t4"), TaskID: "r1.t4", Rejected: "no SEARCH block matched", CreatedAt: created},
			func() protocol.Message { return &protocol.Candidate{} }},
		{"result", &protocol.Result{Meta: meta("r.c.r1.t3"), Candidate: candidate, Status: protocol.StatusTimeout,
			Score: -1.5, Metrics: map[string]float64{"a": 1e-9}, Artifacts: map[string]string{"stdout": "…"},
			Stage: 2, Reason: "wall clock", Evaluator: "eval-0", EvalMS: 60000, CreatedAt: created},
			func() protocol.Message { return &protocol.Result{} }},
		{"event", &protocol.Event{Meta: meta("e1"), Kind: protocol.EventNewBest, Message: "new best 0.9",
			CandidateID: "c.r1.t3", Score: 0.9, Time: created},
			func() protocol.Message { return &protocol.Event{} }},
		{"sample request", &protocol.SampleRequest{Meta: meta("q1"), Island: 3, NumInspirations: 2, Seed: 7},
			func() protocol.Message { return &protocol.SampleRequest{} }},
		{"sample reply", &protocol.SampleReply{Meta: meta("q1"), Parent: program, Inspirations: []protocol.Program{program},
			Top: []protocol.Program{program}},
			func() protocol.Message { return &protocol.SampleReply{} }},
		{"sample reply error", &protocol.SampleReply{Meta: meta("q2"), Error: "run has no program yet"},
			func() protocol.Message { return &protocol.SampleReply{} }},
		{"run spec", &protocol.RunSpec{Meta: meta("r1"), Config: "max_iterations: 5\n", ConfigDigest: "sha256-cd",
			BundleDigest: "sha256-ab", ProgramName: "p.py", CreatedAt: created},
			func() protocol.Message { return &protocol.RunSpec{} }},
		{"run state", &protocol.RunState{Meta: meta("r1"), Iterations: 10, ByModel: map[string]int64{"m": 10},
			Seeds: 1, Failed: 2, Population: 9, BestID: "c.r1.t3", BestScore: 0.9, SeedScore: 0.1, LastSeq: 77, UpdatedAt: created},
			func() protocol.Message { return &protocol.RunState{} }},
		{"planner state", &protocol.PlannerState{Meta: meta("r1"), Status: protocol.RunStopping, StopReason: "max_iterations",
			Issued: 10, IssuedByModel: map[string]int64{"m": 10}, StartedAt: created, UpdatedAt: created.Add(time.Hour)},
			func() protocol.Message { return &protocol.PlannerState{} }},
		{"best program", &protocol.BestProgram{Meta: meta("r1"), Program: program, ProgramName: "p.py", UpdatedAt: created},
			func() protocol.Message { return &protocol.BestProgram{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := protocol.Encode(tt.in)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if !bytes.Contains(data, []byte(`"v":1`)) {
				t.Errorf("Encode = %s, want a \"v\":1 field", data)
			}
			got := tt.out()
			if err := protocol.Decode(data, got); err != nil {
				t.Fatalf("Decode(%s): %v", data, err)
			}
			if !reflect.DeepEqual(got, tt.in) {
				t.Errorf("round trip:\n got  %+v\n want %+v", got, tt.in)
			}
		})
	}
}

func TestEncodeStampsVersion(t *testing.T) {
	ev := &protocol.Event{Meta: protocol.Meta{V: 7, ID: "e1", Run: "r1"}}
	if _, err := protocol.Encode(ev); err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if ev.V != protocol.Version {
		t.Errorf("V after Encode = %d, want %d", ev.V, protocol.Version)
	}
}

func TestEncodeRejectsOversize(t *testing.T) {
	seed := &protocol.Seed{Meta: meta("s1"), Program: strings.Repeat("x", protocol.MaxBodyBytes)}
	data, err := protocol.Encode(seed)
	if !errors.Is(err, protocol.ErrTooLarge) {
		t.Errorf("Encode(%d-byte program) = %d bytes, %v; want ErrTooLarge", len(seed.Program), len(data), err)
	}
}

// bodyOfSize is a valid seed body of exactly n bytes.
func bodyOfSize(n int) []byte {
	head, tail := `{"v":1,"id":"s1","run":"r1","program":"`, `"}`
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		into func() protocol.Message
		want error // nil: decodes
	}{
		{"exactly MaxBodyBytes", bodyOfSize(protocol.MaxBodyBytes), seed, nil},
		{"one byte over MaxBodyBytes", bodyOfSize(protocol.MaxBodyBytes + 1), seed, protocol.ErrTooLarge},
		{"oversize garbage", bytes.Repeat([]byte{0xff}, protocol.MaxBodyBytes+1), task, protocol.ErrTooLarge},
		{"unknown fields from a newer producer are ignored", []byte(`{"v":1,"id":"t","later":{"x":[1]}}`), task, nil},
		{"v 2", []byte(`{"v":2,"id":"t"}`), task, protocol.ErrUnknownVersion},
		{"v 0", []byte(`{"v":0,"id":"t"}`), result, protocol.ErrUnknownVersion},
		{"v -1", []byte(`{"v":-1}`), seed, protocol.ErrUnknownVersion},
		// A body without "v" is not a shoal body at all: Decode reads it as malformed.
		{"no v", []byte(`{"id":"t","run":"r1"}`), task, protocol.ErrMalformed},
		{"v null", []byte(`{"v":null,"id":"t"}`), task, protocol.ErrMalformed},
		{"v string", []byte(`{"v":"1"}`), task, protocol.ErrMalformed},
		{"v fraction", []byte(`{"v":1.5}`), result, protocol.ErrMalformed},
		{"empty", nil, seed, protocol.ErrMalformed},
		{"bare program", []byte("def f():\n    return 1\n"), seed, protocol.ErrMalformed},
		{"truncated", []byte(`{"v":1,"id":"t`), task, protocol.ErrMalformed},
		{"array", []byte(`[{"v":1}]`), task, protocol.ErrMalformed},
		{"null", []byte(`null`), result, protocol.ErrMalformed},
		{"trailing garbage", []byte(`{"v":1} {"v":1}`), task, protocol.ErrMalformed},
		{"iteration as string", []byte(`{"v":1,"iteration":"3"}`), task, protocol.ErrMalformed},
		{"score as string", []byte(`{"v":1,"score":"high"}`), result, protocol.ErrMalformed},
		{"metrics as list", []byte(`{"v":1,"metrics":[1,2]}`), result, protocol.ErrMalformed},
		{"bad time", []byte(`{"v":1,"created_at":"yesterday"}`), seed, protocol.ErrMalformed},
		{"nested candidate wrong type", []byte(`{"v":1,"candidate":{"code":5}}`), result, protocol.ErrMalformed},
		{"inspirations as object", []byte(`{"v":1,"inspirations":{}}`), task, protocol.ErrMalformed},
		{"seed overflows int64", []byte(`{"v":1,"seed":99999999999999999999}`), task, protocol.ErrMalformed},
		{"invalid utf-8 in string", []byte("{\"v\":1,\"program\":\"\xff\xfe\"}"), seed, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := protocol.Decode(tt.data, tt.into())
			if tt.want == nil {
				if err != nil {
					t.Errorf("Decode = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Decode = %v, want an error wrapping %q", err, tt.want)
			}
		})
	}
}

func seed() protocol.Message   { return &protocol.Seed{} }
func task() protocol.Message   { return &protocol.Task{} }
func result() protocol.Message { return &protocol.Result{} }

// FuzzDecode: no byte string makes Decode panic, and whatever it accepts is version 1 and
// encodes again. Run by hand: go test -run=^$ -fuzz=FuzzDecode -fuzztime=20s ./protocol
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"id":"r1.t1","run":"r1","model":"m","parent":{"id":"p","code":"x"},"messages":[{"role":"user","content":"hi"}]}`,
		`{"v":1,"candidate":{"v":1,"code":"x","tokens":{"prompt":1}},"status":"ok","score":1e308,"metrics":{"a":-0}}`,
		`{"v":1,"config":"max_iterations: 5\n","program":"print(1)","created_at":"2025-01-01T00:00:00Z"}`,
		`{"v":2}`, `{"v":null}`, `[]`, `null`, `{"v":1,"seed":1e400}`, "def f(): pass", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range []protocol.Message{&protocol.Task{}, &protocol.Result{}, &protocol.Seed{}} {
			if err := protocol.Decode(data, m); err != nil {
				if !errors.Is(err, protocol.ErrMalformed) && !errors.Is(err, protocol.ErrUnknownVersion) && !errors.Is(err, protocol.ErrTooLarge) {
					t.Fatalf("Decode(%q) into %T = %v, want one of the protocol sentinels", data, m, err)
				}
				continue
			}
			v := reflect.ValueOf(m).Elem().FieldByName("V").Int()
			if v != protocol.Version {
				t.Fatalf("Decode(%q) into %T accepted v=%d", data, m, v)
			}
			if _, err := protocol.Encode(m); err != nil && !errors.Is(err, protocol.ErrTooLarge) {
				t.Fatalf("Encode after Decode(%q) into %T: %v", data, m, err)
			}
		}
	})
}

func TestValidateRunID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"r1", true},
		{"a", true},
		{"0", true},
		{"my-run-2025", true},
		{"-", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"R1", false},
		{"my_run", false},
		{"run.1", false},
		{"run*", false},
		{"run>", false},
		{"run 1", false},
		{"run\n", false},
		{"../etc", false},
		{"rün", false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			err := protocol.ValidateRunID(tt.id)
			if got := err == nil; got != tt.want {
				t.Errorf("ValidateRunID(%q) = %v, want valid=%v", tt.id, err, tt.want)
			}
			if err != nil && !errors.Is(err, protocol.ErrBadRunID) {
				t.Errorf("ValidateRunID(%q) = %v, want an error wrapping ErrBadRunID", tt.id, err)
			}
		})
	}
}

func TestModelToken(t *testing.T) {
	tests := []struct {
		model, want string
	}{
		{"Qwen/Qwen2.5-7B", "Qwen_Qwen2_5-7B"},
		{"llama3.1:8b", "llama3_1_8b"},
		{"a.b*c>d e", "a_b_c_d_e"},
		{"gpt-4o_mini", "gpt-4o_mini"},
		{"", "_"},
		{"modèle", "mod_le"},
		{"tab\tnew\nline", "tab_new_line"},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			got := protocol.ModelToken(tt.model)
			if got != tt.want {
				t.Errorf("ModelToken(%q) = %q, want %q", tt.model, got, tt.want)
			}
			if strings.ContainsAny(got, ".*> \t\r\n") || got == "" {
				t.Errorf("ModelToken(%q) = %q is not a single safe subject token", tt.model, got)
			}
		})
	}
}

func TestRunFromSubject(t *testing.T) {
	for _, prefix := range []string{"", "shoal", "team.a", "x.y.z"} {
		n := protocol.NewNames(prefix)
		subjects := map[string]string{
			"seed":                 n.Seed("r1"),
			"task":                 n.Task("r1", "Qwen/Qwen2.5-7B"),
			"task for dotted name": n.Task("r1", "llama3.1:8b"),
			"candidate":            n.Candidate("r1"),
			"result":               n.Result("r1"),
			"event":                n.Event("r1", protocol.EventNewBest),
			"sample":               n.Sample("r1"),
		}
		for kind, subject := range subjects {
			t.Run(prefix+"/"+kind, func(t *testing.T) {
				if got := n.RunFromSubject(subject); got != "r1" {
					t.Errorf("RunFromSubject(%q) with prefix %q = %q, want %q", subject, n.Prefix, got, "r1")
				}
			})
		}
	}
	t.Run("short subject", func(t *testing.T) {
		if got := protocol.NewNames("").RunFromSubject("shoal.seed"); got != "" {
			t.Errorf("RunFromSubject(%q) = %q, want empty", "shoal.seed", got)
		}
	})
}

func TestNames(t *testing.T) {
	tests := []struct {
		prefix                     string
		seed, tasksForModel        string
		results, runs, bundles     string
		generator, generatorNoName string
	}{
		{"", "shoal.seed.r1", "shoal.task.*.llama3_1_8b", "SHOAL_RESULTS", "shoal-runs", "shoal-bundles", "generator-llama3_1_8b", "generator"},
		{"team.a", "team.a.seed.r1", "team.a.task.*.llama3_1_8b", "TEAM_A_RESULTS", "team-a-runs", "team-a-bundles", "generator-llama3_1_8b", "generator"},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			n := protocol.NewNames(tt.prefix)
			got := []string{n.Seed("r1"), n.TasksForModel("llama3.1:8b"), n.ResultsStream(), n.RunsBucket(), n.BundlesStore(), n.GeneratorConsumer("llama3.1:8b"), n.GeneratorConsumer("")}
			want := []string{tt.seed, tt.tasksForModel, tt.results, tt.runs, tt.bundles, tt.generator, tt.generatorNoName}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("names for prefix %q:\n got  %q\n want %q", tt.prefix, got, want)
			}
		})
	}
}

// TestIDs: ids are derived, so a redelivered task yields the same candidate and result ids
// and JetStream deduplicates their publishes.
func TestIDs(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"task", protocol.TaskID("r1", 42), "r1.t42"},
		{"candidate", protocol.CandidateID(protocol.TaskID("r1", 42)), "c.r1.t42"},
		{"seed candidate", protocol.SeedCandidateID("r1", "s7"), "c.r1.seed.s7"},
		{"result", protocol.ResultID(protocol.CandidateID(protocol.TaskID("r1", 42))), "r.c.r1.t42"},
		{"run keys", protocol.RunConfigKey("r1") + " " + protocol.RunStateKey("r1") + " " + protocol.RunPlannerKey("r1") + " " + protocol.RunBestKey("r1"),
			"r1.config r1.state r1.planner r1.best"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}
