package main

import "errors"

var (
	// errSeedRejected: the archive refused a seed; the message carries its reason.
	errSeedRejected = errors.New("seed rejected")
	// errSeedNoAnswer: no archive answered a seed in time.
	errSeedNoAnswer = errors.New("seed not taken")
	// errRunFailed: the run ended as failed (its seed did not evaluate); the message carries
	// the evaluator's error.
	errRunFailed = errors.New("run failed")
	// errNoSuchRun: a command named a run that was never seeded; the message lists the runs
	// there are.
	errNoSuchRun = errors.New("no such run")
	// errRunFinished: a command that steers a run (pause, resume) named one that is done or
	// failed; the message carries its status.
	errRunFinished = errors.New("run finished")
)
