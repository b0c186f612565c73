package natsx

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures an in-process NATS server with JetStream, used by `shoal up` and
// by every integration test.
type EmbeddedConfig struct {
	// StoreDir holds JetStream's files; a run survives a restart of `shoal up` that reuses it.
	StoreDir string
	// Host and Port to listen on; Port 0 picks a free port. Host defaults to 127.0.0.1.
	Host string
	Port int
	// MaxPayload in bytes; 0 keeps NATS' default of 1 MiB.
	MaxPayload int32
	// Users may connect, each with its permissions (natsauth.Users); nobody else may. With no
	// users the server is open to anyone who reaches it, so it must listen on loopback only.
	Users []*server.User
	// TLSCert and TLSKey make clients speak TLS; with TLSCA too, clients must also present a
	// certificate that it signed. In-process connections skip TLS.
	TLSCert, TLSKey, TLSCA string
}

// Embedded is a running in-process NATS server.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a JetStream-enabled server and waits until it accepts connections.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("start embedded nats: StoreDir is required")
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if len(cfg.Users) == 0 && !IsLoopback(host) {
		return nil, fmt.Errorf("start embedded nats: listening on %s without users would let anyone who reaches it run code; listen on 127.0.0.1 or configure users", host)
	}
	opts := &server.Options{
		ServerName: "shoal-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: cfg.MaxPayload,
		Users:      cfg.Users,
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" || cfg.TLSCA != "" {
		if cfg.TLSCert == "" || cfg.TLSKey == "" {
			return nil, errors.New("start embedded nats: TLS needs a certificate and its key")
		}
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, CaFile: cfg.TLSCA, Verify: cfg.TLSCA != ""})
		if err != nil {
			return nil, fmt.Errorf("start embedded nats: tls: %w", err)
		}
		opts.TLSConfig, opts.TLS, opts.TLSVerify, opts.TLSTimeout = tc, true, cfg.TLSCA != "", 2
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("start embedded nats: not ready after 10s")
	}
	return &Embedded{srv: srv}, nil
}

// URL is the client URL of the server (nats://127.0.0.1:<port>).
func (e *Embedded) URL() string { return e.srv.ClientURL() }

// Connect opens a client connection to the server in-process (no TCP); opts carry its
// credentials (Auth.Options) when the server has users.
func (e *Embedded) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	// In-process connections skip TLS: a tls:// URL would make the client ask for it.
	url := strings.Replace(e.URL(), "tls://", "nats://", 1)
	nc, err := nats.Connect(url, append([]nats.Option{nats.InProcessServer(e.srv), nats.Name(name)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	return nc, nil
}

// Shutdown stops the server and waits for it to finish.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// IsLoopback reports whether host (a name or an address) reaches this machine only.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
