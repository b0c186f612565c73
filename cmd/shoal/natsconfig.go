package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/protocol"
)

func natsConfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "nats-config",
		Short: "Print a nats-server config file with one user per role, for --prefix",
		Long: `nats-config prints the nats-server config of a deployment: JetStream, and one user per role
(planner, generator, evaluator, archive, seeder, admin) with the permissions its service needs.
Passwords are not in it: nats-server reads them from SHOAL_NATS_PASSWORD_<ROLE>.
deploy/nats/nats-server.conf is its output for the default prefix.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			prefix, _ := cmd.Flags().GetString("prefix")
			_, err := fmt.Fprint(cmd.OutOrStdout(), natsauth.ServerConfig(protocol.NewNames(prefix)))
			return err
		},
	}
}
