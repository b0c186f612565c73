package evaluator

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runconfig"

	"github.com/shoal-run/shoal/services/evaluator/internal/sandbox"
)

// unprivilegedEnv marks the run of this test binary that TestUnprivileged starts as an
// unprivileged user.
const unprivilegedEnv = "SHOAL_TEST_UNPRIVILEGED"

// nobody is the uid and gid the unprivileged run takes.
const nobody = 65534

// TestUnprivileged evaluates candidates as a service started by an unprivileged user would:
// a good candidate scores, the hostile corpus fails each case with its reason (cold and
// warm), the job holds no capability, and the protections the host withholds are logged.
// CI runs as root, so the test runs this test binary again as uid 65534, from a copy that
// user can reach, with a temp dir of its own.
func TestUnprivileged(t *testing.T) {
	if os.Getenv(unprivilegedEnv) != "" || os.Geteuid() != 0 {
		testUnprivileged(t)
		return
	}
	dir, err := os.MkdirTemp("", "shoal-unprivileged-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "evaluator.test")
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, "testdata", "hostile"), os.DirFS(filepath.Join("testdata", "hostile"))); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tmp, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(filepath.Join(dir, "testdata"), func(path string, d os.DirEntry, err error) error {
		if err == nil {
			_ = os.Chmod(path, map[bool]os.FileMode{true: 0o755, false: 0o644}[d.IsDir()])
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run", "^(TestUnprivileged|TestHostileCandidates)$", "-test.v", "-test.count=1")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "TMPDIR=" + tmp, "HOME=" + tmp, "LANG=C.UTF-8", unprivilegedEnv + "=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: nobody, Gid: nobody},
		Pdeathsig:  syscall.SIGKILL,
	}
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "---") || strings.Contains(line, "hostile_test.go") || strings.Contains(line, "unprivileged_test.go") {
			t.Log(line)
		}
	}
	if err != nil {
		t.Fatalf("the unprivileged run failed (%v):\n%s", err, lastLinesOf(string(out), 40))
	}
	for _, want := range []string{"--- PASS: TestUnprivileged", "--- PASS: TestHostileCandidates"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the unprivileged run did not report %q", want)
		}
	}
}

// testUnprivileged is the part that runs as the unprivileged user.
func testUnprivileged(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cache := t.TempDir()
	python, err := resolvePython(context.Background(), "python3")
	if err != nil {
		t.Fatalf("python3 is required: %v", err)
	}
	l, err := sandbox.NewLauncher(python, cache, log)
	if err != nil {
		t.Fatal(err)
	}
	s := newScorerMode(t, 4096, true)
	s.launcher, s.warm = l, newWarmPool(l, log)
	good, err := os.ReadFile(filepath.Join("testdata", "hostile", "good.py"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := runconfig.Default()
	cfg.Evaluator.Timeout = 2 * time.Minute
	v, err := s.score(context.Background(), job{cfg: cfg, bundleDir: testdataCopy(t, "hostile/bundle"), programExt: ".py", code: string(good)})
	if err != nil {
		t.Fatalf("score: %v", err)
	}
	if v.Status != protocol.StatusOK || v.Metrics["combined_score"] != 1 {
		t.Errorf("good candidate: status %q, reason %q, metrics %v", v.Status, v.Reason, v.Metrics)
	}
	// A job keeps no capability, even where it is uid 0 of a user namespace.
	box, err := sandbox.New(filepath.Join(cache, "work"))
	if err != nil {
		t.Fatal(err)
	}
	defer box.Close()
	z, release, err := s.warm.get(context.Background(), "", &sandbox.Prepare{Roots: []string{filepath.Join(cache, "work")}})
	if err != nil {
		t.Fatal(err)
	}
	out, err := z.Run(context.Background(), box, sandbox.Command{Args: []string{"sh", "-c", "grep -E '^Cap(Eff|Prm|Bnd|Amb)' /proc/self/status"}, Timeout: time.Minute})
	release()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out.Stdout), "\n") {
		if f := strings.Fields(line); len(f) != 2 || strings.Trim(f[1], "0") != "" {
			t.Errorf("job capabilities: %q, want none", line)
		}
	}
	if !strings.Contains(logs.String(), "a uid of its own per candidate") {
		t.Errorf("the missing uid per candidate was not logged:\n%s", logs.String())
	}
	t.Logf("logged:\n%s", logs.String())
}

// testdataCopy is testdata(t, name), copied into a temp dir of the test's: the unprivileged
// run's testdata is readable, but Fetch-like read-only trees are what the service binds.
func testdataCopy(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), filepath.Base(name))
	if err := os.CopyFS(dir, os.DirFS(testdata(t, name))); err != nil {
		t.Fatal(err)
	}
	return dir
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
