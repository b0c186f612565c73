package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

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

func dial(cmd *cobra.Command) (*client, error) {
	url, _ := cmd.Flags().GetString("nats-url")
	if url == "" {
		url = defaultURL
	}
	prefix, _ := cmd.Flags().GetString("prefix")
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
	defer cancel()
	nc, err := natsx.Connect(ctx, url, "shoal-cli", slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, fmt.Errorf("%w (is `shoal up` running? set --nats-url)", err)
	}
	c, err := newClient(ctx, nc, protocol.NewNames(prefix))
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func newClient(ctx context.Context, nc *nats.Conn, names protocol.Names) (*client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if err := natsx.Provision(ctx, js, names); err != nil {
		return nil, err
	}
	store, err := runs.Open(ctx, js, names)
	if err != nil {
		return nil, err
	}
	return &client{nc: nc, js: js, names: names, runs: store}, nil
}

func (c *client) close() { _ = c.nc.Drain() }

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
