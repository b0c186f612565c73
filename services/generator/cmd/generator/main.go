// Command generator runs one replica of shoal's generator service.
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/services/generator"
)

var version = "dev"

func main() {
	var cfg generator.Config
	url := flag.String("nats-url", env("SHOAL_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (env SHOAL_NATS_URL)")
	prefix := flag.String("prefix", env("SHOAL_PREFIX", protocol.DefaultPrefix), "subject prefix (env SHOAL_PREFIX)")
	model := flag.String("model", os.Getenv("SHOAL_MODEL"), "serve only this model of the run configs; empty serves every model (env SHOAL_MODEL)")
	conc, _ := strconv.Atoi(os.Getenv("SHOAL_CONCURRENCY"))
	flag.IntVar(&cfg.Concurrency, "concurrency", conc, "tasks in flight for this replica; 0 means 16 (env SHOAL_CONCURRENCY)")
	flag.Parse()
	cfg.Names = protocol.NewNames(*prefix)
	if *model != "" {
		cfg.Models = []string{*model}
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", "generator", "version", version)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, cfg, log); err != nil {
		log.Error("generator failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url string, cfg generator.Config, log *slog.Logger) error {
	nc, err := natsx.Connect(ctx, url, "shoal-generator", log)
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

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
