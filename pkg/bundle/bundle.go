// Package bundle packs an evaluator's directory into a tar.gz named by its digest, stores it
// in the bundles object store, and unpacks it on any evaluator host, cached by digest.
package bundle

import (
	"archive/tar"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxBytes bounds the files a bundle holds, added up: evaluators with larger data should read
// it from a shared path named in their config. Options.MaxBytes sets another bound.
const MaxBytes = 64 << 20

// ErrTooLarge: the evaluator's directory holds more than the bundle's limit.
var ErrTooLarge = errors.New("bundle too large")

// IgnoreFiles are read in every directory of a bundle, with .gitignore's syntax and meaning:
// a pattern applies below the directory whose file holds it, and a later "!pattern" takes a
// path back.
var IgnoreFiles = []string{".gitignore", ".shoalignore"}

// skipped names are never packed: version control, caches, previous outputs and shoal's own
// state directory (which `shoal up` keeps in the directory it runs in).
var skipped = map[string]bool{".git": true, "__pycache__": true, ".pytest_cache": true, "openevolve_output": true, ".venv": true, "node_modules": true, ".shoal": true}

// Options say what Pack leaves out of a bundle and how much it may hold.
type Options struct {
	// Exclude are paths to leave out: relative to the directory, or absolute (shoal's state
	// directory and --output, wherever they are).
	Exclude []string
	// MaxBytes bounds the files' total size; 0 is MaxBytes.
	MaxBytes int64
}

// Pack archives every regular file under dir except those exclude names (relative to dir or
// absolute), as PackWith does.
func Pack(dir string, exclude ...string) ([]byte, string, error) {
	return PackWith(dir, Options{Exclude: exclude})
}

// PackWith archives every regular file under dir, returning the tar.gz bytes and their digest
// ("sha256-<hex>"). It leaves out what o.Exclude names, the skipped names (.git, .shoal,
// caches), and what the ignore files (IgnoreFiles) in dir and its subdirectories match. A
// directory whose files add up to more than the limit is refused with its largest files
// named. Entries are sorted and carry no times or owners, so the same files always give the
// same digest.
func PackWith(dir string, o Options) ([]byte, string, error) {
	limit := o.MaxBytes
	if limit <= 0 {
		limit = MaxBytes
	}
	files, err := collect(dir, o.Exclude)
	if err != nil {
		return nil, "", fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := checkSize(dir, files, limit); err != nil {
		return nil, "", err
	}
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		if err := addFile(tw, dir, f); err != nil {
			return nil, "", fmt.Errorf("pack %s: %w", dir, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := gz.Close(); err != nil {
		return nil, "", fmt.Errorf("pack %s: %w", dir, err)
	}
	return buf.Bytes(), Digest(buf.Bytes()), nil
}

// file is one file to pack.
type file struct {
	rel  string // slash-separated, relative to the bundle's directory
	size int64
	mode fs.FileMode
}

// collect lists the files to pack, in lexical order. A file that vanishes while the directory
// is walked (a temporary file of a process writing there) is left out, not an error.
func collect(dir string, exclude []string) ([]file, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	ex := map[string]bool{}
	for _, e := range exclude {
		if filepath.IsAbs(e) {
			rel, err := filepath.Rel(root, e)
			if err != nil || !filepath.IsLocal(rel) {
				continue // outside the bundle: nothing to leave out
			}
			e = rel
		}
		ex[filepath.Clean(e)] = true
	}
	var patterns []gitignore.Pattern
	var files []file
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != root {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, path)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if d.IsDir() {
			if rel == "." {
				parts = nil
			} else if skipped[d.Name()] || ex[rel] || gitignore.NewMatcher(patterns).Match(parts, true) {
				return filepath.SkipDir
			}
			more, err := readIgnores(path, parts)
			if err != nil {
				return err
			}
			patterns = append(patterns, more...)
			return nil
		}
		if ex[rel] || skipped[d.Name()] || !d.Type().IsRegular() || strings.HasSuffix(rel, ".pyc") ||
			gitignore.NewMatcher(patterns).Match(parts, false) {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		files = append(files, file{rel: filepath.ToSlash(rel), size: info.Size(), mode: info.Mode().Perm()})
		return nil
	})
	return files, err
}

// readIgnores reads the ignore files of one directory; domain is its path in the bundle.
// WalkDir visits a directory before its contents and after its earlier siblings, so patterns
// collected so far are those of its ancestors and of siblings, whose domains do not match
// here.
func readIgnores(dir string, domain []string) ([]gitignore.Pattern, error) {
	var out []gitignore.Pattern
	for _, name := range IgnoreFiles {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSuffix(line, "\r")
			if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
				continue
			}
			out = append(out, gitignore.ParsePattern(line, domain))
		}
	}
	return out, nil
}

// checkSize refuses a bundle whose files add up to more than limit, naming the largest.
func checkSize(dir string, files []file, limit int64) error {
	var total int64
	for _, f := range files {
		total += f.size
	}
	if total <= limit {
		return nil
	}
	largest := slices.SortedFunc(slices.Values(files), func(a, b file) int { return cmp.Compare(b.size, a.size) })
	largest = largest[:min(len(largest), 5)]
	names := make([]string, len(largest))
	for i, f := range largest {
		names[i] = fmt.Sprintf("%s (%s)", f.rel, size(f.size))
	}
	return fmt.Errorf("%w: %s holds %s in %d files, over the %s limit; largest: %s. "+
		"Move large data out of the evaluator's directory, or list what evaluations do not need in %s (.gitignore syntax)",
		ErrTooLarge, dir, size(total), len(files), size(limit), strings.Join(names, ", "), IgnoreFiles[1])
}

// size writes a byte count for people.
func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// addFile writes one file into the archive, exactly the size it had when it was listed.
func addFile(tw *tar.Writer, dir string, f file) error {
	hdr := &tar.Header{Name: f.rel, Mode: int64(f.mode), Size: f.size, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	src, err := os.Open(filepath.Join(dir, filepath.FromSlash(f.rel)))
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := io.CopyN(tw, src, f.size); err != nil {
		return fmt.Errorf("%s changed while it was packed: %w", f.rel, err)
	}
	return nil
}

// Digest names packed bytes.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256-" + hex.EncodeToString(sum[:])
}

// Put stores packed bytes under their digest; storing the same bundle twice is a no-op.
func Put(ctx context.Context, store jetstream.ObjectStore, digest string, data []byte) error {
	if _, err := store.GetInfo(ctx, digest); err == nil {
		return nil
	}
	if _, err := store.PutBytes(ctx, digest, data); err != nil {
		return fmt.Errorf("put bundle %s: %w", digest, err)
	}
	return nil
}

// Exists reports whether the bundle is in the store.
func Exists(ctx context.Context, store jetstream.ObjectStore, digest string) (bool, error) {
	_, err := store.GetInfo(ctx, digest)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("bundle %s: %w", digest, err)
	}
	return true, nil
}

// Fetch returns the directory holding the unpacked bundle under cacheDir, downloading and
// unpacking it on first use. The directory and its files are made read-only, so a candidate
// cannot alter the evaluator that scores it. The digest is checked after download.
//
// The cache is not trusted: each Fetch checks the unpacked tree against the manifest taken
// when it was unpacked (names, modes, sizes, inodes and change times, which an unprivileged
// process cannot set back) and, when anything differs, unpacks it again from a pristine copy
// of the packed bytes (itself checked against the digest) or from the store. So a candidate
// that managed to modify the cache cannot poison later evaluations.
func Fetch(ctx context.Context, store jetstream.ObjectStore, digest, cacheDir string) (string, error) {
	if strings.ContainsAny(digest, `/\`) || digest == "" || strings.HasPrefix(digest, ".") {
		return "", fmt.Errorf("fetch bundle: invalid digest %q", digest)
	}
	dir := filepath.Join(cacheDir, digest)
	pristine := filepath.Join(cacheDir, pristineDir, digest+".tar.gz")
	manifestPath := filepath.Join(cacheDir, pristineDir, digest+".manifest")
	if _, err := os.Stat(dir); err == nil {
		if intact(dir, manifestPath) {
			return dir, nil
		}
		// Modified since it was unpacked: set it aside and unpack it again.
		if err := discard(dir); err != nil {
			return "", fmt.Errorf("fetch bundle %s: cached copy was modified and cannot be removed: %w", digest, err)
		}
	}
	data, err := os.ReadFile(pristine)
	if err != nil || Digest(data) != digest {
		data, err = store.GetBytes(ctx, digest)
		if err != nil {
			return "", fmt.Errorf("fetch bundle %s: %w", digest, err)
		}
		if got := Digest(data); got != digest {
			return "", fmt.Errorf("fetch bundle %s: content digest is %s", digest, got)
		}
		if err := writeAtomic(pristine, data); err != nil {
			return "", fmt.Errorf("fetch bundle %s: %w", digest, err)
		}
	}
	tmp, err := os.MkdirTemp(cacheDir, ".unpack-")
	if err != nil {
		return "", fmt.Errorf("fetch bundle %s: %w", digest, err)
	}
	if err := Unpack(data, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("fetch bundle %s: %w", digest, err)
	}
	makeReadOnly(tmp)
	if err := os.Rename(tmp, dir); err != nil {
		makeWritable(tmp)
		os.RemoveAll(tmp)
		if _, statErr := os.Stat(dir); statErr == nil && intact(dir, manifestPath) {
			return dir, nil // another worker unpacked it first
		}
		return "", fmt.Errorf("fetch bundle %s: %w", digest, err)
	}
	m, err := takeManifest(dir)
	if err == nil {
		err = writeAtomic(manifestPath, m)
	}
	if err != nil {
		return "", fmt.Errorf("fetch bundle %s: manifest: %w", digest, err)
	}
	return dir, nil
}

// pristineDir holds, per digest, the packed bytes and the manifest of the unpacked tree;
// its name cannot be a digest.
const pristineDir = ".pristine"

// takeManifest lists what an unpacked tree holds, in a form that changes when any file or
// directory is written, added, removed, renamed or chmod'ed.
func takeManifest(dir string) ([]byte, error) {
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		st, _ := info.Sys().(*syscall.Stat_t)
		var ino uint64
		var ctime, mtime int64
		if st != nil {
			ino = st.Ino
			ctime = st.Ctim.Nano()
			mtime = st.Mtim.Nano()
		}
		fmt.Fprintf(&b, "%q %o %d %d %d %d\n", filepath.ToSlash(rel), uint32(info.Mode()), info.Size(), ino, mtime, ctime)
		return nil
	})
	return []byte(b.String()), err
}

// intact reports whether dir still matches the manifest taken when it was unpacked.
func intact(dir, manifestPath string) bool {
	want, err := os.ReadFile(manifestPath)
	if err != nil {
		return false
	}
	got, err := takeManifest(dir)
	return err == nil && bytes.Equal(got, want)
}

// discard moves a modified tree out of the way and removes it.
func discard(dir string) error {
	trash, err := os.MkdirTemp(filepath.Dir(dir), ".discard-")
	if err != nil {
		return err
	}
	target := filepath.Join(trash, "tree")
	if err := os.Rename(dir, target); err != nil && !errors.Is(err, os.ErrNotExist) {
		os.Remove(trash)
		return err
	}
	makeWritable(trash)
	return os.RemoveAll(trash)
}

// writeAtomic writes data to path (read-only) through a rename, so that readers never see a
// partial file.
func writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o444)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// Unpack extracts packed bytes into dir, refusing entries that would land outside it.
func Unpack(data []byte, dir string) error {
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		name := filepath.Clean(filepath.FromSlash(hdr.Name))
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, ".."+string(filepath.Separator)) {
			return fmt.Errorf("unpack: entry %q escapes the bundle", hdr.Name)
		}
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(hdr.Mode&0o755|0o400))
		if err != nil {
			return fmt.Errorf("unpack: %w", err)
		}
		_, err = io.Copy(f, io.LimitReader(tr, MaxBytes))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("unpack %s: %w", hdr.Name, err)
		}
	}
}

func makeReadOnly(dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			dirs = append(dirs, path)
			return nil
		}
		if info, err := d.Info(); err == nil {
			_ = os.Chmod(path, info.Mode().Perm()&0o555)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Chmod(dirs[i], 0o555)
	}
}

func makeWritable(dir string) {
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(path, 0o755)
		}
		return nil
	})
}

// RemoveCache deletes a cache directory that Fetch filled, read-only files and all.
func RemoveCache(cacheDir string) error {
	makeWritable(cacheDir)
	return os.RemoveAll(cacheDir)
}
