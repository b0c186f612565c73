// Command archive runs one archive replica against a NATS server.
package main

import (
	"flag"
	"log/slog"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/shoal-run/shoal/pkg/daemon"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/services/archive"
)

var version = "dev"

func main() {
	os.Exit(daemon.Main(daemon.Command{Name: "archive", Role: natsauth.Archive, Version: version, Flags: flags}, os.Args[1:]))
}

// flags registers the archive's own settings; it has none beyond those of every service.
func flags(*flag.FlagSet) daemon.Build {
	return func(o daemon.Options, nc *nats.Conn, log *slog.Logger) (daemon.Service, error) {
		return archive.New(archive.Config{Names: o.Names, Telemetry: o.Telemetry}, nc, log)
	}
}
