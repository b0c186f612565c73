package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
)

func gpusCmd() *cobra.Command {
	var spec, host string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "gpus",
		Short: "Show this host's GPUs as shoal sees them (NVML, or --gpus for a declared inventory)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if host == "" {
				host, _ = os.Hostname()
			}
			var inv gpu.Inventory
			var err error
			switch {
			case spec == "":
				inv, err = gpu.Discover(host)
				if errors.Is(err, gpu.ErrNoNVML) {
					// A machine without GPUs is a fine answer, not a failure: the mutate
					// backend and remote models need none.
					inv, err = gpu.Inventory{Host: host, GPUs: []gpu.GPU{}, Source: "nvml"}, nil
				}
			case strings.ContainsAny(spec, "/\\") || strings.HasSuffix(spec, ".json") || strings.HasSuffix(spec, ".yaml"):
				inv, err = gpu.LoadInventoryFile(spec)
			default:
				inv, err = gpu.ParseDeclared(host, spec)
			}
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(inv)
			}
			if len(inv.GPUs) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "host %s has no GPUs that NVML sees; "+
					"runs with the mutate backend or a remote model need none, and --gpus 4x11GiB declares cards NVML cannot see\n", inv.Host)
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "host %s (%s)\nINDEX\tUUID\tNAME\tTOTAL\tFREE\tLINKS\n", inv.Host, inv.Source)
			for i, g := range inv.GPUs {
				var links []string
				for j := range inv.GPUs {
					if j != i {
						links = append(links, fmt.Sprintf("%d:%s", j, inv.LinkBetween(i, j)))
					}
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", g.Index, g.UUID, g.Name, gib(g.TotalMiB), gib(g.FreeMiB), strings.Join(links, " "))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&spec, "gpus", "", "declared inventory (4x11GiB, 8x80GiB:nvlink-pairs) or an inventory file")
	cmd.Flags().StringVar(&host, "host", "", "host name (default: this host's)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the inventory as JSON")
	return cmd
}

func leasesCmd() *cobra.Command {
	var host string
	cmd := &cobra.Command{
		Use:   "leases",
		Short: "Show the GPU lease map per host: who holds what, how much is free, who waits",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := dial(cmd)
			if err != nil {
				return err
			}
			defer c.close()
			ctx := cmd.Context()
			kv, err := c.js.KeyValue(ctx, c.names.GPULeasesBucket())
			if err != nil {
				return err
			}
			hosts := []string{host}
			if host == "" {
				if hosts, err = ledgerHosts(cmd, kv); err != nil {
					return err
				}
			}
			if len(hosts) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no GPU leases yet")
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			for _, h := range hosts {
				led, err := lease.Read(ctx, kv, h)
				if err != nil {
					fmt.Fprintf(tw, "host %s: %v\n", h, err)
					continue
				}
				used := led.Used(now)
				fmt.Fprintf(tw, "host %s\nGPU\tNAME\tTOTAL\tLEASED\tFREE\tHOLDERS\n", led.Host)
				for i, g := range led.Inventory.GPUs {
					var holders []string
					for _, a := range led.Live(now) {
						for _, s := range a.Shares {
							if s.UUID == g.UUID {
								holders = append(holders, fmt.Sprintf("%s %s/%s %s %s (%s)", a.Holder, a.Model, a.Variant, gib(s.MiB), a.State, time.Until(a.Expires).Round(time.Second)))
							}
						}
					}
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", i, g.Name, gib(g.TotalMiB), gib(used[g.UUID]),
						gib(led.Inventory.UsableMiB(i)-used[g.UUID]), strings.Join(holders, "; "))
				}
				for _, w := range led.Waiters(now) {
					fmt.Fprintf(tw, "waiting\t%s\t%s/%s\tneeds %s\tsince %s\t\n", w.Holder, w.Model, w.Variant.Name, gib(w.Variant.NeedMiB), w.Since.Format(time.TimeOnly))
				}
				for _, a := range led.Expired(now) {
					fmt.Fprintf(tw, "expired\t%s\t%s/%s\t\t\t\n", a.Holder, a.Model, a.Variant)
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "one host (default: every host with a ledger)")
	return cmd
}

func ledgerHosts(cmd *cobra.Command, kv jetstream.KeyValue) ([]string, error) {
	lister, err := kv.ListKeys(cmd.Context())
	if err != nil {
		return nil, err
	}
	var hosts []string
	for k := range lister.Keys() {
		hosts = append(hosts, k)
	}
	slices.Sort(hosts)
	return hosts, nil
}

func gib(m gpu.MiB) string { return fmt.Sprintf("%.1f GiB", float64(m)/1024) }
