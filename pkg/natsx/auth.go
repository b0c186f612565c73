package natsx

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
)

// Auth is how a client proves who it is to the NATS server and how it secures the connection.
// The zero value connects anonymously over plain TCP, which a server with users refuses.
type Auth struct {
	// User and Password (or PasswordFile, read when connecting) log in as a NATS user.
	User, Password, PasswordFile string
	// Creds is a NATS credentials file (user JWT and nkey seed), for servers run in
	// operator mode; it replaces User and Password.
	Creds string
	// TLSCA verifies the server's certificate; TLSCert and TLSKey are the client's own, for a
	// server that asks for one. A tls:// URL or any of the three turns TLS on.
	TLSCert, TLSKey, TLSCA string
	// InboxPrefix is where replies to this client arrive (natsauth.Role.InboxPrefix); empty
	// keeps NATS' _INBOX.
	InboxPrefix string
}

// The environment variables Auth reads, each with natscli's name as a fallback.
var authEnv = map[string][]string{
	"user":          {"SHOAL_NATS_USER", "NATS_USER"},
	"password":      {"SHOAL_NATS_PASSWORD", "NATS_PASSWORD"},
	"password-file": {"SHOAL_NATS_PASSWORD_FILE"},
	"creds":         {"SHOAL_NATS_CREDS", "NATS_CREDS"},
	"tls-cert":      {"SHOAL_NATS_TLS_CERT", "NATS_CERT"},
	"tls-key":       {"SHOAL_NATS_TLS_KEY", "NATS_KEY"},
	"tls-ca":        {"SHOAL_NATS_TLS_CA", "NATS_CA"},
}

// AddFlags registers --user, --password, --password-file, --creds, --tls-cert, --tls-key and
// --tls-ca on fs, each defaulting to its environment variable (SHOAL_NATS_USER or NATS_USER,
// and so on). defaultUser is the user when neither names one: a service's role.
func (a *Auth) AddFlags(fs *flag.FlagSet, defaultUser string) {
	fs.StringVar(&a.User, "user", envOr(defaultUser, authEnv["user"]...), "NATS user (env SHOAL_NATS_USER or NATS_USER)")
	fs.StringVar(&a.Password, "password", envOr("", authEnv["password"]...), "NATS password; prefer --password-file (env SHOAL_NATS_PASSWORD or NATS_PASSWORD)")
	fs.StringVar(&a.PasswordFile, "password-file", envOr("", authEnv["password-file"]...), "file holding the NATS password (env SHOAL_NATS_PASSWORD_FILE)")
	fs.StringVar(&a.Creds, "creds", envOr("", authEnv["creds"]...), "NATS credentials file (JWT and nkey seed) instead of user and password (env SHOAL_NATS_CREDS or NATS_CREDS)")
	fs.StringVar(&a.TLSCert, "tls-cert", envOr("", authEnv["tls-cert"]...), "client certificate for TLS (env SHOAL_NATS_TLS_CERT or NATS_CERT)")
	fs.StringVar(&a.TLSKey, "tls-key", envOr("", authEnv["tls-key"]...), "client key for TLS (env SHOAL_NATS_TLS_KEY or NATS_KEY)")
	fs.StringVar(&a.TLSCA, "tls-ca", envOr("", authEnv["tls-ca"]...), "CA certificate that signed the server's (env SHOAL_NATS_TLS_CA or NATS_CA)")
}

// HasCredentials reports whether a names a way to log in.
func (a Auth) HasCredentials() bool {
	return a.Password != "" || a.PasswordFile != "" || a.Creds != ""
}

// Options turns a into nats.go connect options.
func (a Auth) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case a.Creds != "":
		if a.Password != "" || a.PasswordFile != "" {
			return nil, errors.New("nats credentials: give --creds or a password, not both")
		}
		if _, err := os.Stat(a.Creds); err != nil {
			return nil, fmt.Errorf("nats credentials: %w", err)
		}
		opts = append(opts, nats.UserCredentials(a.Creds))
	case a.Password != "" || a.PasswordFile != "":
		pw := a.Password
		if a.PasswordFile != "" {
			if pw != "" {
				return nil, errors.New("nats credentials: give --password or --password-file, not both")
			}
			data, err := os.ReadFile(a.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("nats password: %w", err)
			}
			pw = strings.TrimSpace(string(data))
		}
		if a.User == "" {
			return nil, errors.New("nats credentials: a password needs a user (--user)")
		}
		opts = append(opts, nats.UserInfo(a.User, pw))
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		return nil, errors.New("nats tls: give --tls-cert and --tls-key together")
	}
	if a.TLSCert != "" {
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	if a.TLSCA != "" {
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if a.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(a.InboxPrefix))
	}
	return opts, nil
}

func envOr(def string, keys ...string) string {
	for _, k := range keys {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return def
}
