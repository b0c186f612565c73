package natsx

import (
	"errors"
	"fmt"
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
	opts := &server.Options{
		ServerName: "shoal-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: cfg.MaxPayload,
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

// Connect opens a client connection to the server in-process (no TCP).
func (e *Embedded) Connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(e.URL(), nats.InProcessServer(e.srv), nats.Name(name))
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
