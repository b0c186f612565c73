package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/pkg/runs"
)

// client is a connection to a running deployment, for the commands other than `up`.
type client struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	names protocol.Names
	runs  *runs.Store
}

const defaultURL = "nats://127.0.0.1:4222"

// dial connects as the admin, which brings the streams and buckets to this version's config.
func dial(cmd *cobra.Command) (*client, error) { return dialAs(cmd, natsauth.Admin) }

// dialSeeder connects as the seeder: starting a run needs no more.
func dialSeeder(cmd *cobra.Command) (*client, error) { return dialAs(cmd, natsauth.Seeder) }

// dialAs connects as role, with the credentials clientAuth finds.
func dialAs(cmd *cobra.Command, role natsauth.Role) (*client, error) {
	nc, auth, err := connectAs(cmd, role, "shoal-cli")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
	defer cancel()
	prefix, _ := cmd.Flags().GetString("prefix")
	names := protocol.NewNames(prefix)
	if auth.User == string(natsauth.Admin) || !auth.HasCredentials() {
		js, err := jetstream.New(nc)
		if err == nil {
			err = natsx.Reconcile(ctx, js, names)
		}
		if err != nil {
			nc.Close()
			return nil, err
		}
	}
	c, err := newClient(ctx, nc, names)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// connectAs connects to --nats-url as role with the credentials clientAuth finds, and
// returns them too.
func connectAs(cmd *cobra.Command, role natsauth.Role, name string) (*nats.Conn, natsx.Auth, error) {
	url, _ := cmd.Flags().GetString("nats-url")
	if url == "" {
		url = defaultURL
	}
	auth, err := clientAuth(cmd, role)
	if err != nil {
		return nil, auth, err
	}
	opts, err := auth.Options()
	if err != nil {
		return nil, auth, err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
	defer cancel()
	nc, err := natsx.Connect(ctx, url, name, slog.New(slog.DiscardHandler), opts...)
	if errors.Is(err, nats.ErrAuthorization) {
		return nil, auth, fmt.Errorf("%w: %s", err, authHint(cmd))
	}
	if err != nil {
		return nil, auth, fmt.Errorf("%w (is `shoal up` running? set --nats-url)", err)
	}
	return nc, auth, nil
}

// newClient opens the client's view of a deployment whose streams and buckets exist.
func newClient(ctx context.Context, nc *nats.Conn, names protocol.Names) (*client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	store, err := runs.Open(ctx, js, names)
	if err != nil {
		return nil, err
	}
	return &client{nc: nc, js: js, names: names, runs: store}, nil
}

func (c *client) close() { _ = c.nc.Drain() }

// spec returns run's spec, or errNoSuchRun naming the runs there are when it was never
// seeded: a typo must not read as a run that has no program yet.
func (c *client) spec(ctx context.Context, run string) (*runs.Spec, error) {
	spec, err := c.runs.Spec(ctx, run)
	if !errors.Is(err, runs.ErrUnknownRun) {
		return spec, err
	}
	ids, lerr := c.runs.List(ctx)
	switch {
	case lerr != nil:
		return nil, fmt.Errorf("%w: %s", errNoSuchRun, run)
	case len(ids) == 0:
		return nil, fmt.Errorf("%w: %s (there are no runs yet: start one with shoal up or shoal seed)", errNoSuchRun, run)
	}
	return nil, fmt.Errorf("%w: %s (runs: %s)", errNoSuchRun, run, strings.Join(ids, ", "))
}

// pickRun returns run, or the only run there is when run is empty.
func (c *client) pickRun(ctx context.Context, run string) (string, error) {
	if run != "" {
		return run, nil
	}
	ids, err := c.runs.List(ctx)
	if err != nil {
		return "", err
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("no runs yet: start one with `shoal up` or `shoal seed`")
	case 1:
		return ids[0], nil
	default:
		return "", fmt.Errorf("%d runs exist (%v): name one with --run", len(ids), ids)
	}
}
