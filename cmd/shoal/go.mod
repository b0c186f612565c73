module github.com/shoal-run/shoal/cmd/shoal

go 1.26.0

require (
	github.com/shoal-run/shoal/examples v0.0.0
	github.com/shoal-run/shoal/pkg v0.0.0
	github.com/shoal-run/shoal/services/archive v0.0.0
	github.com/shoal-run/shoal/services/evaluator v0.0.0
	github.com/shoal-run/shoal/services/generator v0.0.0
	github.com/shoal-run/shoal/services/planner v0.0.0
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/mitchellh/colorstring v0.0.0-20190213212951-d06e56a500db // indirect
	github.com/rivo/uniseg v0.4.7 // indirect
	github.com/schollz/progressbar/v3 v3.19.1 // indirect
	github.com/spf13/cobra v1.10.2 // indirect
	github.com/spf13/pflag v1.0.9 // indirect
	go.yaml.in/yaml/v3 v3.0.6 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/term v0.44.0 // indirect
)

replace (
	github.com/shoal-run/shoal/examples => ../../examples
	github.com/shoal-run/shoal/pkg => ../../pkg
	github.com/shoal-run/shoal/services/archive => ../../services/archive
	github.com/shoal-run/shoal/services/evaluator => ../../services/evaluator
	github.com/shoal-run/shoal/services/generator => ../../services/generator
	github.com/shoal-run/shoal/services/planner => ../../services/planner
)
