package main

import (
	"flag"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/shoal-run/shoal/pkg/daemon"
	"github.com/shoal-run/shoal/services/generator"
)

// flags registers the replica's settings; each defaults to its SHOAL_* variable.
func flags(fs *flag.FlagSet) daemon.Build {
	var cfg generator.Config
	model := fs.String("model", "", "serve only this model of the run configs; empty serves every model (env SHOAL_MODEL)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 0, "tasks in flight for this replica; 0 means 256 (env SHOAL_CONCURRENCY)")
	fs.StringVar(&cfg.GPUs, "gpus", "", `this host's GPUs for models with backend launch: a spec such as "4x11GiB" or "2x24GiB:nvlink-pairs", an inventory file (JSON or YAML), or "none"; empty asks NVML (env SHOAL_GPUS)`)
	fs.StringVar(&cfg.Host, "host", "", "this host's name in the GPU lease ledger, shared by the replicas on it; empty: the hostname (env SHOAL_HOST)")
	fs.StringVar(&cfg.ProfilesFile, "profiles", "", "YAML file of the model-server profiles this host allows for models with backend launch; run configs name one (env SHOAL_PROFILES)")
	return func(o daemon.Options, nc *nats.Conn, log *slog.Logger) (daemon.Service, error) {
		cfg.Names = o.Names
		if *model != "" {
			cfg.Models = []string{*model}
		}
		cfg.Telemetry = o.Telemetry
		return generator.New(cfg, nc, log)
	}
}
