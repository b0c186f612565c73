package leader_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/shoal-run/shoal/pkg/leader"
	"github.com/shoal-run/shoal/pkg/natsx/natstest"
)

// waitFor polls cond until it holds or the limit passes.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func TestSetOwnsEachRunOnceAndHandsOverOnClose(t *testing.T) {
	env := natstest.StartTestEnv(t)
	log := slog.New(slog.DiscardHandler)
	// Long, so that "at once" (under ttl/2) and "after the TTL" (over 2/3 of it: the last renewal
	// was at most ttl/3 before the release) stay apart on a loaded machine.
	const ttl = 5 * time.Second
	ctxA, cancelA := context.WithCancel(t.Context())
	ctxB, cancelB := context.WithCancel(t.Context())
	defer cancelB()
	a := leader.NewSet(newReplica(t, env, "a").kv, "planner", "a", ttl, log)
	b := leader.NewSet(newReplica(t, env, "b").kv, "planner", "b", ttl, log)
	runs := []string{"r1", "r2", "r3"}
	for _, run := range runs {
		a.Join(ctxA, run)
	}
	waitFor(t, 5*time.Second, "a owns every run", func() bool { return len(a.Owned()) == len(runs) })
	for _, run := range runs {
		b.Join(ctxB, run)
		b.Join(ctxB, run) // joining twice campaigns once
	}
	time.Sleep(ttl + ttl/2) // past the TTL: renewals keep a's runs
	if got := b.Owned(); len(got) != 0 {
		t.Fatalf("standby owns %v while the owner lives", got)
	}
	cancelA()
	a.Close(context.Background())
	took := waitFor(t, 2*ttl, "the standby takes every run", func() bool { return len(b.Owned()) == len(runs) })
	if took > ttl/2 {
		t.Errorf("takeover after a release took %s; want about at once, not after the TTL (%s)", took, ttl)
	}
	for _, run := range runs {
		if a.Owns(run) {
			t.Errorf("closed set still owns %s", run)
		}
	}
	cancelB()
	b.Close(context.Background())
}

func TestSetStandbyTakesOverFromADeadOwnerWithinTTL(t *testing.T) {
	env := natstest.StartTestEnv(t)
	log := slog.New(slog.DiscardHandler)
	const ttl = 500 * time.Millisecond
	owner := newReplica(t, env, "owner")
	a := leader.NewSet(owner.kv, "archive", "a", ttl, log)
	ctxA, cancelA := context.WithCancel(t.Context())
	defer cancelA()
	a.Join(ctxA, "run")
	waitFor(t, 5*time.Second, "a owns the run", func() bool { return a.Owns("run") })
	b := leader.NewSet(newReplica(t, env, "standby").kv, "archive", "b", ttl, log)
	ctxB, cancelB := context.WithCancel(t.Context())
	b.Join(ctxB, "run")
	owner.nc.Close() // the owner's process dies: no renewal, no release
	took := waitFor(t, 10*time.Second, "the standby owns the run", func() bool { return b.Owns("run") })
	if took > 2*ttl+2*time.Second { // generous: a loaded 2-core machine's timers run late
		t.Errorf("takeover took %s; want within about one TTL (%s) of the last renewal", took, ttl)
	}
	waitFor(t, 2*time.Second, "the dead owner fences itself", func() bool { return !a.Owns("run") })
	cancelB()
	b.Close(context.Background())
	cancelA()
	a.Close(context.Background())
}
