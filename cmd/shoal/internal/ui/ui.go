// Package ui is shoal's web UI: a read-only HTTP server that watches a deployment over
// JetStream (the runs bucket, the RESULTS stream, the GPU lease and inventory buckets and
// the generators bucket), aggregates what it reads in memory and serves it as JSON and as
// server-sent events to a page embedded in the binary. It answers GET and HEAD only and has
// no code path that writes to the bus: its NATS user is the seeder, and it never publishes.
package ui

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"embed"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// ErrConfig wraps every error of Config.Validate.
var ErrConfig = errors.New("ui config")

// DefaultAddr is where the UI listens unless told otherwise: this machine only.
const DefaultAddr = "127.0.0.1:8080"

//go:embed static
var static embed.FS

// Config is what the UI serves, where, and to whom.
type Config struct {
	Names protocol.Names
	// Addr is the HTTP listen address (host:port; port 0 picks one). Default DefaultAddr.
	Addr string
	// User and Password are the HTTP basic-auth credentials every request must carry: the
	// NATS user and password the UI connected with, so whoever may run the CLI may look.
	// When Password is empty, New makes a random one (see Server.Password).
	User, Password string
	// TLSCert and TLSKey serve HTTPS; required to listen beyond loopback, since basic auth
	// sends the password with every request.
	TLSCert, TLSKey string
	// InsecureHTTP serves plain HTTP beyond loopback anyway: for a container whose port is
	// published on the host's loopback alone (compose.yaml). New logs what is exposed.
	InsecureHTTP bool
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.User == "" {
		c.User = "shoal"
	}
}

// Validate reports what a user must fix: the UI serves beyond this machine only over TLS.
func (c *Config) Validate() error {
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("%w: --ui %q: want host:port: %w", ErrConfig, c.Addr, err)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("%w: give both a TLS certificate and its key, or neither", ErrConfig)
	}
	if !natsx.IsLoopback(host) && c.TLSCert == "" && !c.InsecureHTTP {
		return fmt.Errorf("%w: %s: refusing to serve the web UI beyond this machine without TLS; "+
			"every request carries the password of a NATS user, and the pages show programs, artifacts and "+
			"GPU holders. Give a TLS certificate and key, or listen on 127.0.0.1", ErrConfig, c.Addr)
	}
	return nil
}

// Server is the UI: its listener, its view of the deployment and its HTTP handlers.
type Server struct {
	cfg  Config
	log  *slog.Logger
	feed *feed
	ln   net.Listener
	http *http.Server
}

// New binds cfg.Addr and prepares the watches on nc; Run starts them and serves.
func New(cfg Config, nc *nats.Conn, log *slog.Logger) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Password == "" {
		buf := make([]byte, 15)
		if _, err := rand.Read(buf); err != nil {
			return nil, fmt.Errorf("ui password: %w", err)
		}
		cfg.Password = strings.ToLower(base32.StdEncoding.EncodeToString(buf))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("ui: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("ui: %w (is another server on that port, a model server perhaps? give the UI another address)", err)
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	if host, _, _ := net.SplitHostPort(cfg.Addr); !natsx.IsLoopback(host) && cfg.TLSCert == "" {
		log.Warn("web UI serves plain HTTP beyond loopback: the login (a NATS user's password) and the pages "+
			"(programs, artifacts, GPU holders) cross the network in clear; publish this port on loopback only, or give a certificate",
			"addr", ln.Addr().String())
	}
	s := &Server{cfg: cfg, log: log, feed: newFeed(cfg.Names, js, log), ln: ln}
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// URL is where the UI answers.
func (s *Server) URL() string {
	scheme := "http"
	if s.cfg.TLSCert != "" {
		scheme = "https"
	}
	// The host as given (0.0.0.0 reads better than [::]), the port as bound (port 0 picks one).
	host, _, _ := net.SplitHostPort(s.cfg.Addr)
	_, port, _ := net.SplitHostPort(s.ln.Addr().String())
	return scheme + "://" + net.JoinHostPort(host, port) + "/"
}

// User and Password are the basic-auth credentials the UI accepts.
func (s *Server) User() string     { return s.cfg.User }
func (s *Server) Password() string { return s.cfg.Password }

// Run watches the deployment and serves until ctx ends or a watch dies.
func (s *Server) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.feed.run(ctx) })
	g.Go(func() error {
		err := s.http.Serve(s.ln)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("ui: serve: %w", err)
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Event streams never end on their own: Shutdown waits for none of them, Close
		// cuts them.
		_ = s.http.Shutdown(sctx)
		return s.http.Close()
	})
	err := g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Handler is the UI's HTTP handler: authenticated, read-only.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	mux.Handle("GET /", http.FileServerFS(sub))
	mux.HandleFunc("GET /api/runs", s.getRuns)
	mux.HandleFunc("GET /api/runs/{run}", s.getRun)
	mux.HandleFunc("GET /api/runs/{run}/programs/{id}", s.getProgram)
	mux.HandleFunc("GET /api/leases", s.getLeases)
	mux.HandleFunc("GET /api/events", s.events)
	return s.guard(mux)
}

// guard refuses every method but GET and HEAD and every request without the credentials,
// and sets the headers that keep the page from being framed or fed scripts from elsewhere.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "the shoal UI is read-only", http.StatusMethodNotAllowed)
			return
		}
		user, pw, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.User)) != 1 ||
			subtle.ConstantTimeCompare([]byte(pw), []byte(s.cfg.Password)) != 1 {
			h.Set("WWW-Authenticate", `Basic realm="shoal", charset="UTF-8"`)
			http.Error(w, "log in with the NATS user and password of the CLI (shoal ui printed which)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}
