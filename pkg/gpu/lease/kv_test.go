package lease_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/shoal-run/shoal/pkg/gpu"
	"github.com/shoal-run/shoal/pkg/gpu/lease"
)

// TestKVSemanticsTheLedgerReliesOn checks, against the embedded server, the KV behaviour the
// ledger's compare-and-set and the waiters' watch are built on.
func TestKVSemanticsTheLedgerReliesOn(t *testing.T) {
	kv := startKV(t)
	ctx := t.Context()
	const key = "host-a"

	rev1, err := kv.Create(ctx, key, []byte("1"))
	if err != nil {
		t.Fatalf("create on an absent key: %v", err)
	}
	if _, err := kv.Create(ctx, key, []byte("2")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Errorf("second create: %v, want ErrKeyExists", err)
	}
	rev2, err := kv.Update(ctx, key, []byte("2"), rev1)
	if err != nil || rev2 <= rev1 {
		t.Fatalf("update at the current revision: rev %d, %v; want a later revision than %d", rev2, err, rev1)
	}
	if _, err := kv.Update(ctx, key, []byte("3"), rev1); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Errorf("update at a stale revision: %v, want ErrKeyRevisionMismatch", err)
	}

	// The bucket keeps one revision, so a deleted ledger reads as absent and is created anew.
	if err := kv.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("get after delete: %v, want ErrKeyNotFound", err)
	}
	if _, err := kv.Create(ctx, key, []byte("4")); err != nil {
		t.Errorf("create after delete: %v", err)
	}

	// A metadata-only watch gives the current revision, the end of the initial values, then
	// each new revision.
	w, err := kv.Watch(ctx, key, jetstream.MetaOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	next := func() jetstream.KeyValueEntry {
		select {
		case e := <-w.Updates():
			return e
		case <-time.After(2 * time.Second):
			t.Fatalf("watch: nothing after 2s")
			return nil
		}
	}
	first := next()
	if first == nil || len(first.Value()) != 0 {
		t.Fatalf("watch's first entry = %v, want the current revision without its value", first)
	}
	if e := next(); e != nil {
		t.Fatalf("watch: %v after the current value, want the end-of-initial-values marker", e)
	}
	rev5, err := kv.Update(ctx, key, []byte("5"), first.Revision())
	if err != nil {
		t.Fatal(err)
	}
	if e := next(); e == nil || e.Revision() != rev5 {
		t.Errorf("watch after an update: %v, want revision %d", e, rev5)
	}
}

func TestClaimAfterTheLedgerWasDeleted(t *testing.T) {
	kv := startKV(t)
	const host = "box"
	inv := declared(t, host, "2x24GiB")
	v := gpu.Variant{Name: "q4", NeedMiB: 20 * 1024}
	a := mustClaim(t, newClient(t, kv, host, "a", clientOpts{ttl: time.Second}), inv, v)
	if err := kv.Delete(t.Context(), lease.Key(host)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Lost():
	case <-time.After(time.Second):
		t.Fatalf("Lost not closed 1s after the ledger was deleted")
	}
	b := mustClaim(t, newClient(t, kv, host, "b", clientOpts{ttl: time.Second}), inv, v)
	led := mustRead(t, kv, host)
	if len(led.Allocations) != 1 || led.Allocations[0].Holder != "b" {
		t.Errorf("ledger after a deletion and a new claim: %+v, want b's lease alone", led.Allocations)
	}
	if b.CUDAVisibleDevices() == "" {
		t.Errorf("b granted no GPU")
	}
}

// A waiter that crashed stays in the queue only until its entry expires: the claims behind it
// wait for it that long, and no longer.
func TestCrashedWaiterLeavesTheQueueWithinTTL(t *testing.T) {
	kv := startKV(t)
	const host = "box"
	inv := declared(t, host, "1x24GiB")
	v := gpu.Variant{Name: "q8", NeedMiB: 20 * 1024}
	ghostUntil := time.Now().Add(time.Second)
	led := lease.Ledger{V: 1, Host: host, Inventory: inv, Queue: []lease.Queued{{
		Holder: "ghost", Model: "m", Variant: v, Since: time.Now(), Expires: ghostUntil,
	}}}
	data, err := json.Marshal(&led)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(t.Context(), lease.Key(host), data); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, newClient(t, kv, host, "b", clientOpts{}), inv, v)
	granted := time.Now()
	if early := ghostUntil.Sub(granted); early > 0 {
		t.Errorf("b granted %s before the crashed waiter ahead of it expired", early)
	}
	if late := granted.Sub(ghostUntil); late > 2*time.Second { // generous, for a loaded machine
		t.Errorf("b granted %s after the crashed waiter ahead of it expired, want within 2s", late)
	}
	if queued(mustRead(t, kv, host), "ghost") {
		t.Errorf("the expired waiter is still in the queue")
	}
}
