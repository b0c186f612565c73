// Package natsx holds shoal's NATS plumbing: connecting with retry, provisioning the streams,
// buckets and object store of the wire contract, publishing bodies with their ids, and an
// embedded server for `shoal up` and tests.
package natsx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// Connect dials url, retrying with capped exponential backoff until ctx ends, so services may
// start before the NATS server does (as they do under docker compose). Once connected, the
// client reconnects forever on its own. extra carries credentials and TLS (Auth.Options). A
// server that refuses the credentials is an error at once: retrying would not change its mind.
// Requests the server refuses for want of permission are logged.
func Connect(ctx context.Context, url, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				log.Error("nats refused a request of this role", "err", err)
				return
			}
			log.Warn("nats error", "err", err)
		}),
	}
	opts = append(opts, extra...)
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			return nc, nil
		}
		if isAuthError(err) {
			return nil, fmt.Errorf("connect %s: %w (check the user and password, --creds or the TLS settings)", url, err)
		}
		if !errors.Is(err, nats.ErrNoServers) && attempt > 3 {
			return nil, fmt.Errorf("connect %s: %w", url, err)
		}
		log.Info("waiting for nats", "url", url, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect %s: %w (last error: %v)", url, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// Close is how every service lets go of its connection once it has stopped: Drain, so that
// publishes still buffered reach the server and subscriptions end cleanly, and wait for the
// drain, at most limit; then close it regardless. A connection that is closed already is left
// alone.
func Close(nc *nats.Conn, limit time.Duration) {
	if nc == nil || nc.IsClosed() {
		return
	}
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	deadline := time.Now().Add(limit)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	nc.Close()
}
