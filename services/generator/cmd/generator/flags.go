package main

import (
	"flag"
	"os"
	"strconv"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
	"github.com/shoal-run/shoal/services/generator"
)

// flags reads the replica's settings from the command line, each with an environment
// variable as its default.
func flags(args []string) (url string, auth natsx.Auth, cfg generator.Config, err error) {
	fs := flag.NewFlagSet("generator", flag.ContinueOnError)
	fs.StringVar(&url, "nats-url", env("SHOAL_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (env SHOAL_NATS_URL)")
	prefix := fs.String("prefix", env("SHOAL_PREFIX", protocol.DefaultPrefix), "subject prefix (env SHOAL_PREFIX)")
	model := fs.String("model", os.Getenv("SHOAL_MODEL"), "serve only this model of the run configs; empty serves every model (env SHOAL_MODEL)")
	conc, _ := strconv.Atoi(os.Getenv("SHOAL_CONCURRENCY"))
	fs.IntVar(&cfg.Concurrency, "concurrency", conc, "tasks in flight for this replica; 0 means 16 (env SHOAL_CONCURRENCY)")
	fs.StringVar(&cfg.GPUs, "gpus", os.Getenv("SHOAL_GPUS"), `this host's GPUs for models with backend launch: a spec such as "4x11GiB" or "2x24GiB:nvlink-pairs", an inventory file (JSON or YAML), or "none"; empty asks NVML (env SHOAL_GPUS)`)
	fs.StringVar(&cfg.Host, "host", os.Getenv("SHOAL_HOST"), "this host's name in the GPU lease ledger, shared by the replicas on it; empty: the hostname (env SHOAL_HOST)")
	fs.StringVar(&cfg.ProfilesFile, "profiles", os.Getenv("SHOAL_PROFILES"), "YAML file of the model-server profiles this host allows for models with backend launch; run configs name one (env SHOAL_PROFILES)")
	auth.AddFlags(fs, string(natsauth.Generator))
	if err := fs.Parse(args); err != nil {
		return "", auth, cfg, err
	}
	auth.InboxPrefix = natsauth.Generator.InboxPrefix()
	cfg.Names = protocol.NewNames(*prefix)
	if *model != "" {
		cfg.Models = []string{*model}
	}
	return url, auth, cfg, nil
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
