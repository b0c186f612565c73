// Package bundle packs an evaluator's directory into a tar.gz named by its digest, stores it
// in the bundles object store, and unpacks it on any evaluator host, cached by digest.
package bundle

import (
	"archive/tar"
	"bytes"
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
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// MaxBytes bounds a packed bundle: evaluators with larger data should read it from a shared
// path named in their config.
const MaxBytes = 256 << 20

// ErrTooLarge: the evaluator's directory packs to more than MaxBytes.
var ErrTooLarge = errors.New("bundle too large")

// skipped names are never packed: version control, caches and previous outputs.
var skipped = map[string]bool{".git": true, "__pycache__": true, ".pytest_cache": true, "openevolve_output": true, ".venv": true, "node_modules": true}

// Pack archives every regular file under dir except those Exclude names, returning the
// tar.gz bytes and their digest ("sha256-<hex>"). Entries are sorted and carry no times or
// owners, so the same files always give the same digest.
func Pack(dir string, exclude ...string) ([]byte, string, error) {
	ex := map[string]bool{}
	for _, e := range exclude {
		ex[filepath.Clean(e)] = true
	}
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			if rel != "." && (skipped[d.Name()] || ex[rel]) {
				return filepath.SkipDir
			}
			return nil
		}
		if ex[rel] || skipped[d.Name()] || !d.Type().IsRegular() || strings.HasSuffix(rel, ".pyc") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), Mode: int64(info.Mode().Perm()), Size: info.Size(), Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.Copy(tw, f); err != nil {
			return err
		}
		if buf.Len() > MaxBytes {
			return fmt.Errorf("%w: %s packs to over %d MiB; move large data out of the evaluator's directory", ErrTooLarge, dir, MaxBytes>>20)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := tw.Close(); err != nil {
		return nil, "", fmt.Errorf("pack %s: %w", dir, err)
	}
	if err := gz.Close(); err != nil {
		return nil, "", fmt.Errorf("pack %s: %w", dir, err)
	}
	return buf.Bytes(), Digest(buf.Bytes()), nil
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
func Fetch(ctx context.Context, store jetstream.ObjectStore, digest, cacheDir string) (string, error) {
	if strings.ContainsAny(digest, `/\`) || digest == "" || strings.HasPrefix(digest, ".") {
		return "", fmt.Errorf("fetch bundle: invalid digest %q", digest)
	}
	dir := filepath.Join(cacheDir, digest)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	data, err := store.GetBytes(ctx, digest)
	if err != nil {
		return "", fmt.Errorf("fetch bundle %s: %w", digest, err)
	}
	if got := Digest(data); got != digest {
		return "", fmt.Errorf("fetch bundle %s: content digest is %s", digest, got)
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("fetch bundle %s: %w", digest, err)
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
		if _, statErr := os.Stat(dir); statErr == nil {
			return dir, nil // another worker unpacked it first
		}
		return "", fmt.Errorf("fetch bundle %s: %w", digest, err)
	}
	return dir, nil
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
