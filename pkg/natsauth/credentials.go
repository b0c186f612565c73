package natsauth

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// PasswordFile is where LoadOrCreate keeps role's password in dir: <dir>/<role>.password.
func PasswordFile(dir string, r Role) string { return filepath.Join(dir, string(r)+".password") }

// LoadOrCreate returns a password for every role, reading each from its file in dir and making
// a random one for a role that has none yet. dir is made with mode 0700 and each file with
// 0600, so only the user who runs `shoal up` can read them; a file found readable by others is
// narrowed to 0600. Passwords persist, so a restarted `shoal up` and the CLI agree.
func LoadOrCreate(dir string) (map[Role]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	out := map[Role]string{}
	for _, r := range Roles() {
		pw, err := ReadPassword(dir, r)
		if errors.Is(err, fs.ErrNotExist) {
			pw, err = create(PasswordFile(dir, r))
		}
		if err != nil {
			return nil, err
		}
		out[r] = pw
	}
	return out, nil
}

// ReadPassword reads role's password from dir, narrowing the file's mode to 0600 if it was
// wider. A missing file is an error wrapping fs.ErrNotExist.
func ReadPassword(dir string, r Role) (string, error) {
	path := PasswordFile(dir, r)
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("credentials: %w", err)
	}
	pw := strings.TrimSpace(string(data))
	if pw == "" {
		return "", fmt.Errorf("credentials: %s is empty", path)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o600); err != nil {
			return "", fmt.Errorf("credentials: %w", err)
		}
	}
	return pw, nil
}

// create writes a new random password to path, which must not exist (two `shoal up` racing
// for a fresh state dir: the loser reads the winner's).
func create(path string) (string, error) {
	buf := make([]byte, 24)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("credentials: %w", err)
	}
	// A letter, then base32 (letters and digits): nats-server reads a password given by an
	// environment variable in its config file as config, so one starting with a digit or a
	// '-' would be a number, and the server would refuse to start.
	pw := "p" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(buf))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		data, rerr := os.ReadFile(path)
		if rerr != nil {
			return "", fmt.Errorf("credentials: %w", rerr)
		}
		return strings.TrimSpace(string(data)), nil
	}
	if err != nil {
		return "", fmt.Errorf("credentials: %w", err)
	}
	if _, err := f.WriteString(pw + "\n"); err != nil {
		f.Close()
		return "", fmt.Errorf("credentials: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("credentials: %w", err)
	}
	return pw, nil
}
