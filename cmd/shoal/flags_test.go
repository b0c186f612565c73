package main

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestFlagUsagesHaveNoBackticks: pflag reads the first `word` in a flag's description as
// the name of its value, so "`up` embeds a server" shows in --help as "--nats-url up". No
// flag of any command may carry a backtick.
func TestFlagUsagesHaveNoBackticks(t *testing.T) {
	var visit func(*cobra.Command)
	visit = func(cmd *cobra.Command) {
		check := func(f *pflag.Flag) {
			if strings.Contains(f.Usage, "`") {
				name, _ := pflag.UnquoteUsage(f)
				t.Errorf("%s --%s: usage %q holds a backtick: --help shows it as --%s %s", cmd.CommandPath(), f.Name, f.Usage, f.Name, name)
			}
		}
		cmd.LocalFlags().VisitAll(check)
		cmd.PersistentFlags().VisitAll(check)
		for _, sub := range cmd.Commands() {
			visit(sub)
		}
	}
	root := rootCmd()
	visit(root)

	// What a newcomer reads first: the global flags' value names are their types.
	var help strings.Builder
	root.SetOut(&help)
	root.SetArgs([]string{"up", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--nats-url string", "--state-dir string", "--no-seed  "} {
		if !strings.Contains(help.String(), want) {
			t.Errorf("shoal up --help lacks %q:\n%s", want, help.String())
		}
	}
}
