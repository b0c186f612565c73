// Command evaluator runs one replica of shoal's evaluator service.
package main

import (
	"flag"
	"log/slog"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/shoal-run/shoal/pkg/daemon"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/services/evaluator"
)

var version = "dev"

func main() {
	os.Exit(daemon.Main(daemon.Command{Name: "evaluator", Role: natsauth.Evaluator, Version: version, Flags: flags}, os.Args[1:]))
}

// flags registers the evaluator's settings; each defaults to its SHOAL_* variable.
func flags(fs *flag.FlagSet) daemon.Build {
	var cfg evaluator.Config
	fs.IntVar(&cfg.Concurrency, "concurrency", 0, "candidates evaluated at once; 0 means one per CPU (env SHOAL_CONCURRENCY)")
	fs.StringVar(&cfg.Python, "python", "python3", "Python interpreter for evaluators (env SHOAL_PYTHON)")
	fs.StringVar(&cfg.CacheDir, "cache-dir", "", "bundles and work dirs; default $TMPDIR/shoal-evaluator (env SHOAL_CACHE_DIR)")
	fs.IntVar(&cfg.MemoryLimitMB, "memory-limit-mb", 0, "memory per candidate when its run sets no evaluator.memory_limit_mb; 0 means 2048, -1 none (env SHOAL_MEMORY_LIMIT_MB)")
	fs.IntVar(&cfg.ScratchMB, "work-dir-limit-mb", 0, "bytes a candidate may write to its work dir and /tmp; 0 means 256 (env SHOAL_WORK_DIR_LIMIT_MB)")
	fs.BoolVar(&cfg.Cold, "cold", false, "a fresh interpreter per candidate instead of a warm one (env SHOAL_COLD)")
	return func(o daemon.Options, nc *nats.Conn, log *slog.Logger) (daemon.Service, error) {
		cfg.Names = o.Names
		cfg.Telemetry = o.Telemetry
		return evaluator.New(cfg, nc, log)
	}
}
