// Command archive runs one archive replica against a NATS server.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/services/archive"
)

var version = "dev"

func main() { os.Exit(run()) }

func run() int {
	url := flag.String("nats-url", envOr("SHOAL_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (env SHOAL_NATS_URL)")
	prefix := flag.String("prefix", envOr("SHOAL_PREFIX", protocol.DefaultPrefix), "subject prefix (env SHOAL_PREFIX)")
	var auth natsx.Auth
	auth.AddFlags(flag.CommandLine, string(natsauth.Archive))
	flag.Parse()
	auth.InboxPrefix = natsauth.Archive.InboxPrefix()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("version", version)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts, err := auth.Options()
	if err != nil {
		log.Error("nats credentials", "err", err)
		return 2
	}
	nc, err := natsx.Connect(ctx, *url, "shoal-archive", log, opts...)
	if err != nil {
		log.Error("connect", "err", err)
		return 1
	}
	defer nc.Drain()
	svc, err := archive.New(archive.Config{Names: protocol.NewNames(*prefix)}, nc, log)
	if err == nil {
		err = svc.Run(ctx)
	}
	if err != nil {
		log.Error("archive stopped", "err", err)
		return 1
	}
	return 0
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
