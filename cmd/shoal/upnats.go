package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// dialer connects one part of `up` to NATS as role.
type dialer func(role natsauth.Role) (*nats.Conn, error)

// startNATS starts the embedded server, or returns a dialer for --nats-url, and the URL the
// services and other clients reach. The embedded
// server has one user per role, with the passwords kept under the state dir (made on the
// first start, reused after), and every service connects as its own role. It listens beyond
// this machine only with TLS: the passwords would cross the network in clear otherwise.
func startNATS(cmd *cobra.Command, url string, names protocol.Names, o upOptions, log *slog.Logger) (dialer, string, func(), error) {
	ctx := cmd.Context()
	if url != "" {
		return func(role natsauth.Role) (*nats.Conn, error) {
			auth, err := clientAuth(cmd, role)
			if err != nil {
				return nil, err
			}
			opts, err := auth.Options()
			if err != nil {
				return nil, err
			}
			nc, err := natsx.Connect(ctx, url, "shoal-"+string(role), log, opts...)
			if err != nil {
				return nil, fmt.Errorf("%w: %s", err, authHint(cmd))
			}
			return nc, nil
		}, url, func() {}, nil
	}
	host, port, err := splitHostPort(o.listen)
	if err != nil {
		return nil, "", nil, err
	}
	get := func(name string) string { v, _ := cmd.Flags().GetString(name); return v }
	tlsCert, tlsKey, tlsCA := get("tls-cert"), get("tls-key"), get("tls-ca")
	if !natsx.IsLoopback(host) && tlsCert == "" {
		return nil, "", nil, fmt.Errorf("--listen %s: refusing to serve NATS beyond this machine without TLS; "+
			"the bus carries programs that will run and the passwords of every role. Give --tls-cert and --tls-key "+
			"(and --tls-ca to require client certificates), or listen on 127.0.0.1", o.listen)
	}
	store := filepath.Join(o.stateDir, "jetstream")
	if o.fresh {
		if err := os.RemoveAll(store); err != nil {
			return nil, "", nil, err
		}
	}
	creds := credentialsDir(o.stateDir)
	passwords, err := natsauth.LoadOrCreate(creds)
	if err != nil {
		return nil, "", nil, err
	}
	srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{
		StoreDir: store, Host: host, Port: port, MaxPayload: 8 << 20,
		Users:   natsauth.Users(names, passwords),
		TLSCert: tlsCert, TLSKey: tlsKey, TLSCA: tlsCA,
	})
	if err != nil {
		return nil, "", nil, fmt.Errorf("%w (is another `shoal up` running? use --listen 127.0.0.1:0)", err)
	}
	log.Info("embedded nats started", "url", srv.URL(), "store", store, "credentials", creds)
	connect := func(role natsauth.Role) (*nats.Conn, error) {
		a := natsx.Auth{User: string(role), Password: passwords[role], InboxPrefix: role.InboxPrefix()}
		opts, err := a.Options()
		if err != nil {
			return nil, err
		}
		return srv.Connect("shoal-"+string(role), opts...)
	}
	// The admin brings streams and buckets to this version's config before any service starts.
	nc, err := connect(natsauth.Admin)
	if err == nil {
		err = reconcile(ctx, nc, names)
		nc.Close()
	}
	if err != nil {
		srv.Shutdown()
		return nil, "", nil, err
	}
	return connect, srv.URL(), srv.Shutdown, nil
}

func reconcile(ctx context.Context, nc *nats.Conn, names protocol.Names) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return natsx.Reconcile(ctx, js, names)
}
