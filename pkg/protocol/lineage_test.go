package protocol_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/shoal-run/shoal/pkg/protocol"
)

func TestTaskCandidateCarriesLineage(t *testing.T) {
	task := &protocol.Task{
		Meta:  protocol.Meta{ID: protocol.TaskID("r1", 7), Run: "r1"},
		Model: "m", Iteration: 7, Island: 2, Language: "go",
		Parent: protocol.Program{ID: "c.r1.t3", Generation: 4},
	}
	c := task.Candidate("gen-a")
	if c.ID != "c.r1.t7" || c.Run != "r1" || c.TaskID != task.ID || c.ParentID != "c.r1.t3" || c.Iteration != 7 ||
		c.Island != 2 || c.Model != "m" || c.Language != "go" || c.Generation != 5 || c.Generator != "gen-a" || c.CreatedAt.IsZero() {
		t.Errorf("candidate = %+v, want task r1.t7's lineage: id c.r1.t7, parent c.r1.t3, generation 5", c)
	}
	if c.IsSeed() || c.Done() {
		t.Errorf("a task's candidate is a seed (%v) or done (%v)", c.IsSeed(), c.Done())
	}
}

func TestSeedCandidate(t *testing.T) {
	tests := []struct {
		name, programName, want string
	}{
		{"seed names its file", "mine.py", "seed mine.py"},
		{"run's file", "", "seed initial_program.py"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &protocol.Seed{Meta: protocol.Meta{ID: "s1", Run: "r1"}, Program: "x = 1", ProgramName: tt.programName}
			c := s.Candidate("python", "initial_program.py", "archive-1")
			if c.ID != protocol.SeedCandidateID("r1", "s1") || c.Run != "r1" || !c.IsSeed() || c.Code != "x = 1" ||
				c.Language != "python" || c.Changes != tt.want || c.Generator != "archive-1" || c.Generation != 0 {
				t.Errorf("candidate = %+v, want seed s1 of r1 with changes %q", c, tt.want)
			}
		})
	}
}

func TestCandidateResult(t *testing.T) {
	base := func() *protocol.Candidate {
		task := &protocol.Task{Meta: protocol.Meta{ID: "r1.t2", Run: "r1"}}
		c := task.Candidate("g")
		c.Code, c.Changes = "x = 2", "edit"
		return c
	}
	rejected, abandoned := base(), base()
	rejected.Reject("SEARCH block 1 matches nothing")
	abandoned.Abandon("dead-lettered: model server down")
	tests := []struct {
		name         string
		c            *protocol.Candidate
		status       protocol.Status
		reason, code string
		done         bool
	}{
		{"generated", base(), "", "", "x = 2", false},
		{"rejected", rejected, protocol.StatusRejected, "SEARCH block 1 matches nothing", "", true},
		{"abandoned", abandoned, protocol.StatusFailed, "dead-lettered: model server down", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.c.Result("eval-1")
			if r.ID != "r.c.r1.t2" || r.Run != "r1" || r.Candidate.ID != "c.r1.t2" || r.Evaluator != "eval-1" ||
				r.Status != tt.status || r.Reason != tt.reason || r.Candidate.Code != tt.code || tt.c.Done() != tt.done {
				t.Errorf("result = %+v (done %v), want status %q reason %q code %q done %v", r, tt.c.Done(), tt.status, tt.reason, tt.code, tt.done)
			}
		})
	}
	f := base().Failed("dead-lettered: sandbox host out of disk")
	if f.ID != "r.c.r1.t2" || f.Status != protocol.StatusFailed || f.Reason != "dead-lettered: sandbox host out of disk" || f.Candidate.Code != "x = 2" {
		t.Errorf("failed result = %+v, want r.c.r1.t2 failed with the reason, code kept", f)
	}
}

// TestTaskDefaults: the planner and the generator fill a task's mode and language the same way.
func TestTaskDefaults(t *testing.T) {
	tests := []struct {
		name      string
		task      protocol.Task
		diffBased bool
		wantMode  protocol.Mode
		wantLang  string
	}{
		{"diff run", protocol.Task{}, true, protocol.ModeDiff, "python"},
		{"rewrite run", protocol.Task{}, false, protocol.ModeRewrite, "python"},
		{"task says", protocol.Task{Mode: protocol.ModeRewrite, Language: "go"}, true, protocol.ModeRewrite, "go"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.task.SetDefaults(tt.diffBased, "python")
			if tt.task.Mode != tt.wantMode || tt.task.Language != tt.wantLang {
				t.Errorf("mode %q language %q, want %q %q", tt.task.Mode, tt.task.Language, tt.wantMode, tt.wantLang)
			}
		})
	}
}

func TestHandBackIDsAreDerived(t *testing.T) {
	task := protocol.Task{Meta: protocol.Meta{ID: "r1.t9", Run: "r1"}}
	copy1 := task
	id1 := copy1.HandBack()
	copy2 := copy1
	id2 := copy2.HandBack()
	again := task
	if id1 != "r1.t9.handback.1" || id2 != "r1.t9.handback.2" || again.HandBack() != id1 {
		t.Errorf("hand-back ids %q %q, want r1.t9.handback.1 and .2, the same for the same copy", id1, id2)
	}
	if copy2.ID != task.ID || copy2.HandBacks != 2 {
		t.Errorf("handed-back task id %q count %d, want the task's id and 2", copy2.ID, copy2.HandBacks)
	}
}

func TestResultShrink(t *testing.T) {
	task := &protocol.Task{Meta: protocol.Meta{ID: "r1.t2", Run: "r1"}}
	c := task.Candidate("g")
	c.Code = strings.Repeat("x", 100)
	ok := c.Result("e")
	ok.Status, ok.Artifacts = protocol.StatusOK, map[string]string{"stdout": "lots"}
	if !ok.Shrink() || ok.Artifacts["note"] != protocol.ArtifactsDropped || ok.Shrink() || ok.Candidate.Code == "" {
		t.Errorf("an ok result drops its artifacts once and keeps its code: %+v", ok)
	}
	failed := c.Failed("dead-lettered: x")
	if !failed.Shrink() || failed.Candidate.Code != "" || failed.Shrink() {
		t.Errorf("a failed result drops its code once: %+v", failed)
	}
}

func TestNamesValidate(t *testing.T) {
	for _, tt := range []struct {
		prefix string
		ok     bool
	}{
		{"shoal", true}, {"team.a", true}, {"", false}, {"a b", false}, {"a.*", false}, {"a.>", false}, {".a", false}, {"a.", false}, {"a..b", false},
	} {
		if err := (protocol.Names{Prefix: tt.prefix}).Validate(); (err == nil) != tt.ok || (err != nil && !errors.Is(err, protocol.ErrBadPrefix)) {
			t.Errorf("Validate(%q) = %v, want ok %v", tt.prefix, err, tt.ok)
		}
	}
}
