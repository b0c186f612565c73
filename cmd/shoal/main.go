// Command shoal is the CLI: `shoal up` runs NATS and the four services in one process and
// evolves a problem; seed, status, best and the rest talk to a running deployment.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := rootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "shoal:", err)
		os.Exit(1)
	}
}

func rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "shoal",
		Short:         "Distributed, GPU-aware evolutionary code search over NATS JetStream",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("nats-url", envOr("SHOAL_NATS_URL", ""), "NATS server URL (env SHOAL_NATS_URL); when empty, up embeds a server and the other commands use nats://127.0.0.1:4222")
	root.PersistentFlags().String("prefix", envOr("SHOAL_PREFIX", "shoal"), "subject prefix (env SHOAL_PREFIX)")
	addAuthFlags(root)
	root.AddCommand(upCmd(), seedCmd(), watchCmd(), statusCmd(), bestCmd(), leasesCmd(), gpusCmd(), runCmd(), deadCmd(), natsConfigCmd(), provisionCmd(), credentialsCmd(), uiCmd())
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// envInt is the integer in the environment variable key, or 0 when it is unset or not a
// number (the flag's own parsing then reports a bad value given on the command line).
func envInt(key string) int {
	n, _ := strconv.Atoi(os.Getenv(key))
	return n
}
