package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/shoal-run/shoal/pkg/natsauth"
	"github.com/shoal-run/shoal/pkg/natsx"
)

// credentialsDir is where `shoal up` keeps one password per role, under its state dir.
func credentialsDir(stateDir string) string { return filepath.Join(stateDir, "credentials") }

// addAuthFlags registers the state dir and natsx.Auth's flags (--user, --password,
// --password-file, --creds, --tls-cert, --tls-key, --tls-ca, each with its environment
// variable) on every command.
func addAuthFlags(root *cobra.Command) {
	root.PersistentFlags().String("state-dir", envOr("SHOAL_STATE_DIR", ".shoal"),
		"JetStream storage, credentials, logs and extracted examples of up; other commands find the credentials there (env SHOAL_STATE_DIR)")
	var a natsx.Auth
	gfs := flag.NewFlagSet("auth", flag.ContinueOnError)
	a.AddFlags(gfs, "")
	root.PersistentFlags().AddGoFlagSet(gfs)
}

// clientAuth returns how a command connects as role. Credentials named by flags or the
// environment win; else the role's password in the state dir that `shoal up` made; else none
// (a server without users accepts that, one with users refuses it).
func clientAuth(cmd *cobra.Command, role natsauth.Role) (natsx.Auth, error) {
	get := func(name string) string { v, _ := cmd.Flags().GetString(name); return v }
	a := natsx.Auth{
		User: get("user"), Password: get("password"), PasswordFile: get("password-file"), Creds: get("creds"),
		TLSCert: get("tls-cert"), TLSKey: get("tls-key"), TLSCA: get("tls-ca"),
	}
	if a.HasCredentials() {
		if r, err := natsauth.ParseRole(a.User); err == nil {
			a.InboxPrefix = r.InboxPrefix()
		}
		return a, nil
	}
	dir := credentialsDir(get("state-dir"))
	pw, err := natsauth.ReadPassword(dir, role)
	if errors.Is(err, fs.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return a, err
	}
	a.User, a.Password, a.InboxPrefix = string(role), pw, role.InboxPrefix()
	return a, nil
}

// authHint is what to say when the server refused a command's credentials.
func authHint(cmd *cobra.Command) string {
	dir, _ := cmd.Flags().GetString("state-dir")
	return fmt.Sprintf("give --user with --password-file, or --creds; or run where `shoal up` keeps its state (--state-dir, now %s)", dir)
}
