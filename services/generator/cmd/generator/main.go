// Command generator runs one replica of shoal's generator service.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/services/generator"
)

var version = "dev"

func main() {
	url, auth, cfg, err := flags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", "generator", "version", version)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, url, auth, cfg, log); err != nil {
		log.Error("generator failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url string, auth natsx.Auth, cfg generator.Config, log *slog.Logger) error {
	opts, err := auth.Options()
	if err != nil {
		return err
	}
	nc, err := natsx.Connect(ctx, url, "shoal-generator", log, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := generator.New(cfg, nc, log)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
