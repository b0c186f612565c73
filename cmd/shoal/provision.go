package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
)

// provisionCmd brings a deployment's streams, buckets and object stores to this version's
// config as the admin; on a NATS cluster --replicas spreads each over that many servers, which
// the services, creating only what is missing with one replica, never do.
func provisionCmd() *cobra.Command {
	var replicas int
	cmd := &cobra.Command{
		Use:   "provision [--replicas N]",
		Short: "Create or update every stream, bucket and object store, as the admin (--replicas N on a cluster)",
		Long: `provision creates every stream, KV bucket and object store shoal uses, or updates those that
exist to this version's config. With --replicas N each is kept on N servers of a NATS cluster
(N ≤ the cluster's size; 3 survives the loss of one server). Without it each keeps the replicas
it has. Run it before the services on a cluster: they create what is missing with one replica.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if replicas < 0 {
				return fmt.Errorf("--replicas must be 0 or more")
			}
			c, err := dial(cmd)
			if err != nil {
				return err
			}
			defer c.close()
			ctx := cmd.Context()
			if err := natsx.ReconcileReplicas(ctx, c.js, c.names, replicas); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(w, "STREAM\tREPLICAS")
			for name := range c.js.StreamNames(ctx).Name() {
				s, err := c.js.Stream(ctx, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "%s\t%d\n", name, s.CachedInfo().Config.Replicas)
			}
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&replicas, "replicas", 0, "servers each stream, bucket and object store is kept on; 0 keeps what each has")
	return cmd
}

// credentialsCmd makes the per-role passwords that `shoal up` would make, for a deployment
// whose nats-server and services read them from files (compose.yaml's secrets).
func credentialsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "credentials",
		Short: "Make one NATS password per role in <state-dir>/credentials (kept if there), for docker compose",
		Long: `credentials makes a random password for each role (planner, generator, evaluator, archive,
seeder, admin) in <state-dir>/credentials/<role>.password, mode 0600, keeping those that exist.
compose.yaml mounts them as secrets, and the CLI run from the same directory finds them, so
'shoal seed' and 'shoal status' log in to the compose deployment with no flag.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := credentialsDir(cmd.Flag("state-dir").Value.String())
			if _, err := natsauth.LoadOrCreate(dir); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), dir)
			return nil
		},
	}
}
