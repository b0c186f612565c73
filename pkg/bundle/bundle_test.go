package bundle_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/bundle"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
)

func TestMain(m *testing.M) { natstest.Main(m) }

// evaluatorFiles is an evaluator's directory as users have it, build litter included.
var evaluatorFiles = map[string]string{
	"evaluator.py":                          "def evaluate(path):\n    return {'score': 1}\n",
	"data/points.csv":                       "x,y\n1,2\n",
	"data/deep/more.txt":                    "more",
	"secrets.env":                           "KEY=1",
	"scratch/notes.txt":                     "wip",
	"__pycache__/evaluator.cpython-312.pyc": "\x00",
	"data/__pycache__/x.pyc":                "\x00",
	"stray.pyc":                             "\x00",
	".git/HEAD":                             "ref: refs/heads/main\n",
	"data/.git":                             "gitdir: ../.git/worktrees/data\n", // a worktree's or submodule's .git is a file
	".venv/bin/python":                      "#!",
	"node_modules/x/index.js":               "",
	"openevolve_output/best.py":             "",
}

// packed are the files of evaluatorFiles that Pack keeps when secrets.env and scratch are
// excluded.
var packed = []string{"data/deep/more.txt", "data/points.csv", "evaluator.py"}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// readTree returns the regular files under dir, by slash path, with their contents.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		files[filepath.ToSlash(rel)] = string(data)
		return nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	return files
}

func keys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// entries lists the names in a packed bundle.
func entries(t *testing.T, data []byte) []string {
	t.Helper()
	dir := t.TempDir()
	if err := bundle.Unpack(data, dir); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	return keys(readTree(t, dir))
}

// TestPackDigestStable: the same files give the same digest whenever they are packed, so a
// re-seeded run finds its bundle already stored.
func TestPackDigestStable(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, evaluatorFiles)
	_, first, err := bundle.Pack(dir, "secrets.env", "scratch")
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	if !strings.HasPrefix(first, "sha256-") || len(first) != len("sha256-")+64 {
		t.Errorf("digest = %q, want sha256-<64 hex>", first)
	}
	past := time.Now().Add(-72 * time.Hour)
	for name := range evaluatorFiles {
		if err := os.Chtimes(filepath.Join(dir, filepath.FromSlash(name)), past, past); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name    string
		change  func(t *testing.T)
		exclude []string
		same    bool
	}{
		{"times changed", func(*testing.T) {}, []string{"secrets.env", "scratch"}, true},
		{"excluded file changed", func(t *testing.T) { writeFiles(t, dir, map[string]string{"secrets.env": "KEY=2"}) }, []string{"secrets.env", "scratch"}, true},
		{"skipped cache changed", func(t *testing.T) { writeFiles(t, dir, map[string]string{"__pycache__/new.pyc": "x"}) }, []string{"secrets.env", "scratch"}, true},
		{"exclusion written unclean", func(*testing.T) {}, []string{"./secrets.env", "scratch/"}, true},
		{"packed file changed", func(t *testing.T) { writeFiles(t, dir, map[string]string{"data/points.csv": "x,y\n1,3\n"}) }, []string{"secrets.env", "scratch"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.change(t)
			data, got, err := bundle.Pack(dir, tt.exclude...)
			if err != nil {
				t.Fatalf("Pack: %v", err)
			}
			if got != bundle.Digest(data) {
				t.Errorf("Pack digest %s != Digest(bytes) %s", got, bundle.Digest(data))
			}
			if (got == first) != tt.same {
				t.Errorf("digest %s vs first %s: same=%v, want same=%v", got, first, got == first, tt.same)
			}
		})
	}
}

func TestPackSkips(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, evaluatorFiles)
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		exclude []string
		want    []string
	}{
		{"no exclusions", nil, []string{"data/deep/more.txt", "data/points.csv", "evaluator.py", "scratch/notes.txt", "secrets.env"}},
		{"file and directory excluded", []string{"secrets.env", "scratch"}, packed},
		{"nested directory excluded", []string{"secrets.env", "scratch", "data/deep"}, []string{"data/points.csv", "evaluator.py"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, _, err := bundle.Pack(dir, tt.exclude...)
			if err != nil {
				t.Fatalf("Pack: %v", err)
			}
			if got := entries(t, data); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("packed %q, want %q", got, tt.want)
			}
		})
	}
}

// TestPackLeavesOutShoalState: a problem kept where `shoal up` runs must not ship shoal's own
// state (.shoal, written while it is packed) or the --output directory; ignore files in
// .gitignore syntax leave out what evaluations do not need, in the directory that holds them
// and below.
func TestPackLeavesOutShoalState(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"evaluator.py":                           "def evaluate(p): return {}\n",
		"initial_program.py":                     "x = 1\n",
		"data/keep.csv":                          "1\n",
		"data/raw/huge.bin":                      "raw",
		"data/cache.tmp":                         "tmp",
		"data/important.tmp":                     "keep me",
		"logs/run.log":                           "log",
		"notes.md":                               "notes",
		"sub/.shoalignore":                       "*.csv\n",
		"sub/a.csv":                              "a",
		"sub/b.txt":                              "b",
		"other/a.csv":                            "kept: the pattern is sub's",
		".shoal/jetstream/$G/streams/S/meta.inf": "state",
		".shoal/shoal.log":                       "log",
		"elsewhere-state/jetstream/x":            "state",
		"out/best_program.py":                    "best",
		".gitignore":                             "# build litter\nlogs/\n*.tmp\n!important.tmp\n/notes.md\n",
		".shoalignore":                           "data/raw/\n",
	})
	data, _, err := bundle.PackWith(dir, bundle.Options{Exclude: []string{
		"initial_program.py",
		filepath.Join(dir, "out"),             // --output, as an absolute path
		filepath.Join(dir, "elsewhere-state"), // --state-dir somewhere else
		"/var/lib/outside",                    // outside the bundle: nothing to leave out
	}})
	if err != nil {
		t.Fatalf("PackWith: %v", err)
	}
	want := []string{".gitignore", ".shoalignore", "data/important.tmp", "data/keep.csv", "evaluator.py", "other/a.csv", "sub/.shoalignore", "sub/b.txt"}
	if got := entries(t, data); !reflect.DeepEqual(got, want) {
		t.Errorf("packed %q, want %q", got, want)
	}
}

// TestPackTooLarge: a directory over the limit is refused, and the message names its largest
// files so the user knows what to move or ignore.
func TestPackTooLarge(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"evaluator.py":       "def evaluate(p): return {}\n",
		"data/weights.bin":   strings.Repeat("w", 600<<10),
		"data/points.csv":    strings.Repeat("p", 300<<10),
		"checkpoints/old.pt": strings.Repeat("c", 200<<10),
		"small/a.txt":        "a",
	})
	_, _, err := bundle.PackWith(dir, bundle.Options{MaxBytes: 1 << 20})
	if !errors.Is(err, bundle.ErrTooLarge) {
		t.Fatalf("PackWith = %v, want ErrTooLarge", err)
	}
	for _, w := range []string{
		dir + " holds 1.1 MiB in 5 files, over the 1.0 MiB limit",
		"largest: data/weights.bin (600.0 KiB), data/points.csv (300.0 KiB), checkpoints/old.pt (200.0 KiB), evaluator.py (27 B), small/a.txt (1 B)",
		".shoalignore (.gitignore syntax)",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	// What the ignore file leaves out does not count.
	writeFiles(t, dir, map[string]string{".shoalignore": "data/weights.bin\n"})
	if _, _, err := bundle.PackWith(dir, bundle.Options{MaxBytes: 1 << 20}); err != nil {
		t.Errorf("PackWith with the largest file ignored = %v, want it packed", err)
	}
}

func objectStore(t *testing.T) (jetstream.ObjectStore, context.Context) {
	t.Helper()
	env := natstest.StartTestEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	store, err := env.JS.ObjectStore(ctx, env.Names.BundlesStore())
	if err != nil {
		t.Fatalf("bundles store: %v", err)
	}
	return store, ctx
}

// cacheDir is a bundle cache that the test removes with RemoveCache, and fails if it cannot.
func cacheDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cache")
	t.Cleanup(func() {
		if err := bundle.RemoveCache(dir); err != nil {
			t.Errorf("RemoveCache: %v", err)
		}
	})
	return dir
}

// TestPutFetch: an evaluator host gets exactly the packed files, and cannot change them.
func TestPutFetch(t *testing.T) {
	store, ctx := objectStore(t)
	src := t.TempDir()
	writeFiles(t, src, evaluatorFiles)
	if err := os.Chmod(filepath.Join(src, "evaluator.py"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, digest, err := bundle.Pack(src, "secrets.env", "scratch")
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}

	if ok, err := bundle.Exists(ctx, store, digest); err != nil || ok {
		t.Errorf("Exists before Put = %v, %v; want false, nil", ok, err)
	}
	for i := range 2 {
		if err := bundle.Put(ctx, store, digest, data); err != nil {
			t.Fatalf("Put #%d: %v", i+1, err)
		}
	}
	if ok, err := bundle.Exists(ctx, store, digest); err != nil || !ok {
		t.Errorf("Exists after Put = %v, %v; want true, nil", ok, err)
	}

	cache := cacheDir(t)
	dir, err := bundle.Fetch(ctx, store, digest, cache)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if want := filepath.Join(cache, digest); dir != want {
		t.Errorf("Fetch dir = %s, want %s", dir, want)
	}
	got := readTree(t, dir)
	want := map[string]string{}
	for _, name := range packed {
		want[name] = evaluatorFiles[name]
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("fetched files %q, want %q", keys(got), keys(want))
	}

	t.Run("read-only", func(t *testing.T) {
		// Checked on mode bits, since root writes through them.
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			if perm := info.Mode().Perm(); perm&0o222 != 0 {
				t.Errorf("%s has mode %v, want no write bits", path, perm)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		info, err := os.Stat(filepath.Join(dir, "evaluator.py"))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm()&0o100 == 0 {
			t.Errorf("evaluator.py mode %v, want it to stay executable", info.Mode().Perm())
		}
	})

	t.Run("cached", func(t *testing.T) {
		if err := store.Delete(ctx, digest); err != nil {
			t.Fatalf("delete from store: %v", err)
		}
		again, err := bundle.Fetch(ctx, store, digest, cache)
		if err != nil || again != dir {
			t.Errorf("second Fetch = %s, %v; want %s from the cache", again, err, dir)
		}
		if leftovers, _ := filepath.Glob(filepath.Join(cache, ".unpack-*")); len(leftovers) != 0 {
			t.Errorf("cache holds unpack leftovers %q", leftovers)
		}
	})
}

func TestFetchRejects(t *testing.T) {
	store, ctx := objectStore(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"evaluator.py": "ok"})
	data, digest, err := bundle.Pack(src)
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	other := bundle.Digest([]byte("something else"))
	// A tampered object: the evaluator's bytes stored under another bundle's name.
	if _, err := store.PutBytes(ctx, other, data); err != nil {
		t.Fatalf("put tampered object: %v", err)
	}
	tests := []struct {
		name, digest, want string
	}{
		{"tampered", other, "content digest is " + digest},
		{"missing", bundle.Digest([]byte("never stored")), "not found"},
		{"path traversal", "../" + digest, "invalid digest"},
		{"hidden", ".unpack-1", "invalid digest"},
		{"empty", "", "invalid digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := cacheDir(t)
			dir, err := bundle.Fetch(ctx, store, tt.digest, cache)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Fetch(%q) = %q, %v; want an error containing %q", tt.digest, dir, err, tt.want)
			}
			if entries, _ := os.ReadDir(cache); len(entries) != 0 {
				t.Errorf("cache holds %d entries after a failed Fetch, want none", len(entries))
			}
		})
	}
}

func tarGz(t *testing.T, files []tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, hdr := range files {
		hdr.Mode = 0o644
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len("payload"))
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte("payload")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestUnpackStaysInside: a hostile bundle cannot write outside the directory it unpacks into.
func TestUnpackStaysInside(t *testing.T) {
	reg := func(name string) tar.Header { return tar.Header{Name: name, Typeflag: tar.TypeReg} }
	tests := []struct {
		name    string
		entries []tar.Header
		wantErr bool
		want    []string // files inside the target directory afterwards
	}{
		{"plain", []tar.Header{reg("a.py"), reg("d/b.py")}, false, []string{"a.py", "d/b.py"}},
		{"parent", []tar.Header{reg("../evil")}, true, nil},
		{"parent after a good entry", []tar.Header{reg("a.py"), reg("../evil")}, true, []string{"a.py"}},
		{"hidden parent", []tar.Header{reg("d/../../evil")}, true, nil},
		{"absolute", []tar.Header{reg("/tmp/evil")}, true, nil},
		{"dot-dot prefix is a name", []tar.Header{reg("..evil")}, false, []string{"..evil"}},
		{"symlink ignored", []tar.Header{{Name: "evil", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}, reg("a.py")}, false, []string{"a.py"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "bundle")
			err := bundle.Unpack(tarGz(t, tt.entries), dir)
			if (err != nil) != tt.wantErr {
				t.Errorf("Unpack = %v, want error %v", err, tt.wantErr)
			}
			if _, err := os.Lstat(filepath.Join(root, "evil")); err == nil {
				t.Errorf("Unpack wrote %s outside %s", filepath.Join(root, "evil"), dir)
			}
			got := []string{}
			if _, err := os.Stat(dir); err == nil {
				got = keys(readTree(t, dir))
			}
			if want := append([]string{}, tt.want...); !reflect.DeepEqual(got, want) {
				t.Errorf("files inside = %q, want %q", got, want)
			}
		})
	}
	t.Run("not gzip", func(t *testing.T) {
		if err := bundle.Unpack([]byte("plain text"), t.TempDir()); err == nil {
			t.Error("Unpack of non-gzip bytes succeeded, want an error")
		}
	})
}

func TestRemoveCache(t *testing.T) {
	store, ctx := objectStore(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"evaluator.py": "ok", "data/deep/x.csv": "1"})
	data, digest, err := bundle.Pack(src)
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	if err := bundle.Put(ctx, store, digest, data); err != nil {
		t.Fatalf("Put: %v", err)
	}
	cache := filepath.Join(t.TempDir(), "cache")
	if _, err := bundle.Fetch(ctx, store, digest, cache); err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if err := bundle.RemoveCache(cache); err != nil {
		t.Fatalf("RemoveCache: %v", err)
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Errorf("cache still there after RemoveCache: %v", err)
	}
	if err := bundle.RemoveCache(cache); err != nil {
		t.Errorf("RemoveCache of a missing cache = %v, want nil", err)
	}
}

// TestFetchRepairsModifiedCache: a cached bundle that was written, extended, pruned or
// chmod'ed since it was unpacked (as a candidate running as root could) is unpacked again,
// from the pristine copy when the store no longer has it.
func TestFetchRepairsModifiedCache(t *testing.T) {
	store, ctx := objectStore(t)
	src := t.TempDir()
	writeFiles(t, src, map[string]string{"evaluator.py": "def evaluate(p):\n    return {'score': 1}\n", "data/points.csv": "1,2\n"})
	data, digest, err := bundle.Pack(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := bundle.Put(ctx, store, digest, data); err != nil {
		t.Fatal(err)
	}
	cache := cacheDir(t)
	dir, err := bundle.Fetch(ctx, store, digest, cache)
	if err != nil {
		t.Fatal(err)
	}
	want := readTree(t, dir)
	// From here on only the pristine copy can restore it.
	if err := store.Delete(ctx, digest); err != nil {
		t.Fatal(err)
	}
	tamper := []struct {
		name string
		do   func(t *testing.T)
	}{
		{"rewrite the evaluator", func(t *testing.T) {
			path := filepath.Join(dir, "evaluator.py")
			os.Chmod(path, 0o644)
			if err := os.WriteFile(path, []byte("def evaluate(p):\n    return {'score': 1e9}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, 0o444)
		}},
		{"same size, same mode", func(t *testing.T) {
			path := filepath.Join(dir, "data", "points.csv")
			os.Chmod(path, 0o644)
			if err := os.WriteFile(path, []byte("9,9\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, 0o444)
		}},
		{"add a module", func(t *testing.T) {
			os.Chmod(dir, 0o755)
			if err := os.WriteFile(filepath.Join(dir, "numpy.py"), []byte("raise SystemExit"), 0o444); err != nil {
				t.Fatal(err)
			}
			os.Chmod(dir, 0o555)
		}},
		{"delete a file", func(t *testing.T) {
			os.Chmod(filepath.Join(dir, "data"), 0o755)
			if err := os.Remove(filepath.Join(dir, "data", "points.csv")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tamper {
		t.Run(tc.name, func(t *testing.T) {
			tc.do(t)
			again, err := bundle.Fetch(ctx, store, digest, cache)
			if err != nil {
				t.Fatalf("Fetch after tampering: %v", err)
			}
			if got := readTree(t, again); !reflect.DeepEqual(got, want) {
				t.Errorf("fetched tree %v, want the pristine %v", got, want)
			}
			if left, _ := filepath.Glob(filepath.Join(cache, ".discard-*")); len(left) != 0 {
				t.Errorf("cache holds discarded trees %q", left)
			}
		})
	}
}
