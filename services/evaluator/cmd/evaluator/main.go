// Command evaluator runs one replica of shoal's evaluator service.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/services/evaluator"
)

var version = "dev"

func main() {
	var cfg evaluator.Config
	url := flag.String("nats-url", "nats://127.0.0.1:4222", "NATS server URL (env SHOAL_NATS_URL)")
	flag.StringVar(&cfg.Names.Prefix, "prefix", "shoal", "subject prefix (env SHOAL_PREFIX)")
	flag.IntVar(&cfg.Concurrency, "concurrency", 0, "candidates evaluated at once; 0 means one per CPU (env SHOAL_CONCURRENCY)")
	flag.StringVar(&cfg.Python, "python", "python3", "Python interpreter for evaluators (env SHOAL_PYTHON)")
	flag.StringVar(&cfg.CacheDir, "cache-dir", "", "bundles and work dirs; default $TMPDIR/shoal-evaluator (env SHOAL_CACHE_DIR)")
	flag.IntVar(&cfg.MemoryLimitMB, "memory-limit-mb", 0, "memory per candidate when its run sets no evaluator.memory_limit_mb; 0 means 2048, -1 none (env SHOAL_MEMORY_LIMIT_MB)")
	flag.IntVar(&cfg.ScratchMB, "work-dir-limit-mb", 0, "bytes a candidate may write to its work dir and /tmp; 0 means 256 (env SHOAL_WORK_DIR_LIMIT_MB)")
	flag.BoolVar(&cfg.Cold, "cold", false, "a fresh interpreter per candidate instead of a warm one (env SHOAL_COLD)")
	var auth natsx.Auth
	auth.AddFlags(flag.CommandLine, string(natsauth.Evaluator))
	// Environment variables replace the defaults; flags on the command line win over both.
	for name, key := range map[string]string{"nats-url": "SHOAL_NATS_URL", "prefix": "SHOAL_PREFIX",
		"concurrency": "SHOAL_CONCURRENCY", "python": "SHOAL_PYTHON", "cache-dir": "SHOAL_CACHE_DIR", "cold": "SHOAL_COLD",
		"memory-limit-mb": "SHOAL_MEMORY_LIMIT_MB", "work-dir-limit-mb": "SHOAL_WORK_DIR_LIMIT_MB"} {
		if v := os.Getenv(key); v != "" {
			if err := flag.Set(name, v); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", key, err)
				os.Exit(2)
			}
		}
	}
	flag.Parse()
	auth.InboxPrefix = natsauth.Evaluator.InboxPrefix()

	log := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", "evaluator", "version", version)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, auth, cfg, log); err != nil {
		log.Error("evaluator failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url string, auth natsx.Auth, cfg evaluator.Config, log *slog.Logger) error {
	opts, err := auth.Options()
	if err != nil {
		return err
	}
	nc, err := natsx.Connect(ctx, url, "shoal-evaluator", log, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := evaluator.New(cfg, nc, log)
	if err != nil {
		return err
	}
	return svc.Run(ctx)
}
