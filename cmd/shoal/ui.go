package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/cmd/shoal/internal/ui"
	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
	"github.com/shoal-run/shoal/pkg/protocol"
)

// uiFlags are the web UI's own flags: where it listens and its certificate.
type uiFlags struct {
	addr, cert, key string
	insecureHTTP    bool
}

func (f *uiFlags) add(cmd *cobra.Command, addrFlag, addrDefault, addrHelp string) {
	cmd.Flags().StringVar(&f.addr, addrFlag, addrDefault, addrHelp)
	cmd.Flags().StringVar(&f.cert, "ui-tls-cert", os.Getenv("SHOAL_UI_TLS_CERT"), "serve the web UI over HTTPS with this certificate (env SHOAL_UI_TLS_CERT); needed beyond loopback")
	cmd.Flags().StringVar(&f.key, "ui-tls-key", os.Getenv("SHOAL_UI_TLS_KEY"), "the web UI certificate's key (env SHOAL_UI_TLS_KEY)")
	cmd.Flags().BoolVar(&f.insecureHTTP, "ui-insecure-http", os.Getenv("SHOAL_UI_INSECURE_HTTP") == "1",
		"serve plain HTTP beyond loopback anyway, e.g. in a container whose port is published on the host's loopback only (env SHOAL_UI_INSECURE_HTTP=1)")
}

func uiCmd() *cobra.Command {
	var f uiFlags
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the read-only web UI of a running deployment: runs, scores, grids, best programs, GPU leases",
		Long: `ui connects to NATS as the CLI does (the seeder's credentials from --state-dir, or --user and
--password-file, or --creds), watches the runs, their results and the GPU leases, and serves a
web page that updates live. It only reads: it answers GET alone and never publishes.

Every HTTP request must log in (basic auth) with the same NATS user and password the UI
connected with; with a .creds file, the UI prints a password of its own. It listens on
127.0.0.1:8080 unless told otherwise, and refuses an address beyond this machine without
--ui-tls-cert and --ui-tls-key.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, auth, err := connectAs(cmd, natsauth.Seeder, "shoal-ui")
			if err != nil {
				return err
			}
			defer natsx.Close(nc, 5*time.Second)
			prefix, _ := cmd.Flags().GetString("prefix")
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			srv, err := newUI(protocol.NewNames(prefix), f, auth, nc, log)
			if err != nil {
				return err
			}
			announceUI(cmd.ErrOrStderr(), srv, auth, cmd)
			return srv.Run(cmd.Context())
		},
	}
	f.add(cmd, "addr", envOr("SHOAL_UI", ui.DefaultAddr), "address to serve the web UI on (env SHOAL_UI)")
	return cmd
}

// newUI builds the web UI on nc, accepting the NATS user and password in auth.
func newUI(names protocol.Names, f uiFlags, auth natsx.Auth, nc *nats.Conn, log *slog.Logger) (*ui.Server, error) {
	pw := auth.Password
	if pw == "" && auth.PasswordFile != "" {
		data, err := os.ReadFile(auth.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("ui: %w", err)
		}
		pw = strings.TrimSpace(string(data))
	}
	user := auth.User
	if pw == "" {
		user = "" // a .creds file or no credentials: the UI makes its own password
	}
	return ui.New(ui.Config{Names: names, Addr: f.addr, User: user, Password: pw, TLSCert: f.cert, TLSKey: f.key, InsecureHTTP: f.insecureHTTP}, nc, log)
}

// announceUI says where the UI is and how to log in, without printing a password that is
// kept in a file.
func announceUI(w io.Writer, srv *ui.Server, auth natsx.Auth, cmd *cobra.Command) {
	how := ""
	switch {
	case auth.User == srv.User() && auth.PasswordFile != "":
		how = fmt.Sprintf("user %s, the password in %s", srv.User(), auth.PasswordFile)
	case auth.User == srv.User() && auth.User != "" && cmd.Flags().Changed("password"):
		how = fmt.Sprintf("user %s and the NATS password you gave", srv.User())
	case auth.User == srv.User() && auth.User != "":
		dir, _ := cmd.Flags().GetString("state-dir")
		how = fmt.Sprintf("user %s, the password in %s", srv.User(), natsauth.PasswordFile(credentialsDir(dir), natsauth.Role(srv.User())))
	default:
		how = fmt.Sprintf("user %s, password %s", srv.User(), srv.Password())
	}
	fmt.Fprintf(w, "web UI (read-only) on %s: log in with %s\n", srv.URL(), how)
}
