// Command generator runs one replica of shoal's generator service.
package main

import (
	"os"

	"github.com/shoal-run/shoal/pkg/daemon"
	"github.com/shoal-run/shoal/pkg/natsauth"
)

var version = "dev"

func main() {
	os.Exit(daemon.Main(daemon.Command{Name: "generator", Role: natsauth.Generator, Version: version, Flags: flags}, os.Args[1:]))
}
