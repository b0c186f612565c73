module github.com/shoal-run/shoal/cmd/shoal

go 1.26

require (
	github.com/shoal-run/shoal/pkg v0.0.0
	github.com/shoal-run/shoal/examples v0.0.0
	github.com/shoal-run/shoal/services/planner v0.0.0
	github.com/shoal-run/shoal/services/generator v0.0.0
	github.com/shoal-run/shoal/services/evaluator v0.0.0
	github.com/shoal-run/shoal/services/archive v0.0.0
)

replace (
	github.com/shoal-run/shoal/pkg => ../../pkg
	github.com/shoal-run/shoal/examples => ../../examples
	github.com/shoal-run/shoal/services/planner => ../../services/planner
	github.com/shoal-run/shoal/services/generator => ../../services/generator
	github.com/shoal-run/shoal/services/evaluator => ../../services/evaluator
	github.com/shoal-run/shoal/services/archive => ../../services/archive
)
