package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// GetIfChanged against a server: nothing while the key is as read, the new
// entry once it changed.
func TestGetIfChangedAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	first, err := c.Put(ctx, "tasks/T1/state", map[string]string{"status": "running"})
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]client.GetOption{nil, {client.Consistent()}} {
		e, changed, err := c.GetIfChanged(ctx, "tasks/T1/state", first.ETag, opts...)
		if err != nil || changed || e != nil {
			t.Errorf("GetIfChanged(current etag) = %v, %v, %v; want nil, false, nil", e, changed, err)
		}
	}
	second, err := c.Put(ctx, "tasks/T1/state", map[string]string{"status": "done"})
	if err != nil {
		t.Fatal(err)
	}
	e, changed, err := c.GetIfChanged(ctx, "tasks/T1/state", first.ETag)
	if err != nil || !changed || e == nil || e.ETag != second.ETag {
		t.Fatalf("GetIfChanged(old etag) = %+v, %v, %v; want the entry of etag %s", e, changed, err, second.ETag)
	}
	var v map[string]string
	if err := e.Decode(&v); err != nil || v["status"] != "done" {
		t.Errorf("changed entry = %v, %v", v, err)
	}
	if _, _, err := c.GetIfChanged(ctx, "tasks/none/state", first.ETag); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("GetIfChanged of a missing key: %v, want ErrNotFound", err)
	}
}

// Put under an IdempotencyKey, sent again: the entry of the first write,
// marked Replayed; the same key on another value is ErrInvalid. Typed
// writes take it too.
func TestIdempotencyKeyAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	put := func(value string) (*client.Entry, error) {
		return c.Put(ctx, "tasks/T1/state", value, client.IfNoneMatch(), client.IdempotencyKey("create-T1"))
	}
	first, err := put("new")
	if err != nil || first.Replayed {
		t.Fatalf("first put: %+v, %v", first, err)
	}
	again, err := put("new")
	if err != nil || !again.Replayed || again.ETag != first.ETag || again.Version["w1"] != 1 {
		t.Errorf("the put again = %+v, %v; want the first write's entry, Replayed", again, err)
	}
	if _, err := put("other"); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("the idempotency key on another value: %v, want ErrInvalid", err)
	}
	for i := range 2 {
		e, err := c.SyncTaskState(ctx, "T2", "running", client.IdempotencyKey("start-T2"))
		if err != nil || e.Replayed != (i == 1) || e.Version["w1"] != 1 {
			t.Errorf("typed write, attempt %d: %+v, %v", i+1, e, err)
		}
	}
}

// Lock under an IdempotencyKey, sent again while its grant holds the lock:
// the same grant, Replayed and refreshed; the token releases the lock.
func TestLockIdempotencyKeyAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	opts := client.LockOptions{TTL: 10 * time.Second, IdempotencyKey: "take-jobs"}
	first, err := c.Lock(ctx, "jobs/nightly", opts)
	if err != nil || first.Replayed {
		t.Fatalf("first lock: %+v, %v", first, err)
	}
	time.Sleep(5 * time.Millisecond) // a refresh then shows in ExpiresAt
	again, err := c.Lock(ctx, "jobs/nightly", opts)
	if err != nil || !again.Replayed || again.Token != first.Token || again.Fence != first.Fence {
		t.Fatalf("the lock again: %+v, %v; want the first grant, Replayed", again, err)
	}
	if !again.ExpiresAt().After(first.ExpiresAt()) {
		t.Errorf("the grant given again expires at %v, not after the first answer's %v: it was not refreshed",
			again.ExpiresAt(), first.ExpiresAt())
	}
	if _, err := c.Lock(ctx, "jobs/nightly", client.LockOptions{TTL: time.Second, IdempotencyKey: "take-jobs"}); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("the key with another TTL: %v, want ErrInvalid", err)
	}
	if err := again.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LockHolder(ctx, "jobs/nightly"); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("after release: %v, want ErrNotFound", err)
	}
}

// BatchIdempotent sent again: its put is Replayed, not applied again.
func TestBatchIdempotentAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	ops := []client.BatchOp{{Op: client.OpPut, Key: "jobs/J1/state", Value: "queued"}}
	for i := range 2 {
		res, err := c.BatchIdempotent(ctx, "import-1", ops)
		if err != nil || len(res) != 1 || res[0].Err != nil || res[0].Replayed != (i == 1) ||
			res[0].Entry.Replayed != (i == 1) || res[0].Entry.Version["w1"] != 1 {
			t.Errorf("attempt %d: %+v, %v", i+1, res, err)
		}
	}
	if _, err := c.BatchIdempotent(ctx, "", ops); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("empty key: %v, want ErrInvalid", err)
	}
}

// BatchAtomicIdempotent sent again: answered whole as applied, though its
// IfMatch no longer holds, and so is a batch of deletes only, though a key
// it deleted was written again; on another batch, or on gets only,
// ErrInvalid.
func TestBatchAtomicIdempotentAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	e, err := c.Put(ctx, "jobs/J1/owner", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	ops := []client.BatchOp{
		{Op: client.OpPut, Key: "jobs/J1/owner", Value: "w1", IfMatch: e.ETag},
		{Op: client.OpDelete, Key: "jobs/J1/owner-wanted"},
		{Op: client.OpGet, Key: "jobs/J1/owner"},
	}
	if _, err := c.Put(ctx, "jobs/J1/owner-wanted", true); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		res, err := c.BatchAtomicIdempotent(ctx, "claim-1", ops)
		if err != nil || len(res) != 3 || res[0].Replayed != (i == 1) || res[0].Entry.Version["w1"] != 2 ||
			res[1].Replayed != (i == 1) || res[2].Replayed || string(res[2].Entry.Value) != `"w1"` {
			t.Errorf("attempt %d: %+v, %v", i+1, res, err)
		}
	}
	if _, err := c.BatchAtomicIdempotent(ctx, "claim-1", ops[:1]); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("the key on another batch: %v, want ErrInvalid", err)
	}
	if _, err := c.BatchAtomicIdempotent(ctx, "claim-2", ops[2:]); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("a batch of gets only: %v, want ErrInvalid", err)
	}
	release := []client.BatchOp{{Op: client.OpDelete, Key: "jobs/J1/owner"}}
	for i := range 2 {
		res, err := c.BatchAtomicIdempotent(ctx, "release-1", release)
		if err != nil || len(res) != 1 || res[0].Err != nil || res[0].Replayed != (i == 1) {
			t.Errorf("deletes only, attempt %d: %+v, %v", i+1, res, err)
		}
		if i == 0 {
			if _, err := c.Put(ctx, "jobs/J1/owner", "w2"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if e, err := c.Get(ctx, "jobs/J1/owner"); err != nil || string(e.Value) != `"w2"` {
		t.Errorf("jobs/J1/owner after the deletes were sent again = %+v, %v; want the write after them", e, err)
	}
	if _, err := c.BatchAtomicIdempotent(ctx, "", ops); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("empty key: %v, want ErrInvalid", err)
	}
}

// PutAsync sent twice under one IdempotencyKey: applied once.
func TestPutAsyncIdempotentAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	for range 2 {
		if err := c.PutAsync(ctx, "jobs/J2/state", "queued", client.IdempotencyKey("enqueue-J2")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	e, err := c.Get(ctx, "jobs/J2/state", client.Consistent())
	if err != nil || e.Version["w1"] != 1 {
		t.Errorf("after the flush: %+v, %v; want w1: 1", e, err)
	}
}

// WaitForChange against a server: Get waits for a key to be created,
// GetIfChanged for it to change, and each gives up after its wait.
func TestWaitForChangeAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	writeSoon := func(value string) {
		go func() {
			// Once the read waits (its watcher is open), or after 5 s.
			for deadline := time.Now().Add(5 * time.Second); srv.Hub.Stats().Watchers == 0 && time.Now().Before(deadline); {
				time.Sleep(2 * time.Millisecond)
			}
			if _, err := c.Put(ctx, "jobs/J1/result", value); err != nil {
				t.Errorf("put: %v", err)
			}
		}()
	}
	writeSoon("first")
	e, err := c.Get(ctx, "jobs/J1/result", client.WaitForChange(30*time.Second))
	var v string
	if err != nil || e.Decode(&v) != nil || v != "first" {
		t.Fatalf("Get waiting for the key: %+v, %v; want the value written meanwhile", e, err)
	}
	writeSoon("second")
	changed, ok, err := c.GetIfChanged(ctx, "jobs/J1/result", e.ETag, client.WaitForChange(30*time.Second))
	if err != nil || !ok || changed.Decode(&v) != nil || v != "second" {
		t.Fatalf("GetIfChanged waiting for a change: %+v, %v, %v; want the value written meanwhile", changed, ok, err)
	}
	if _, ok, err := c.GetIfChanged(ctx, "jobs/J1/result", changed.ETag, client.WaitForChange(50*time.Millisecond)); ok || err != nil {
		t.Errorf("GetIfChanged with nothing changing: %v, %v; want not changed after the wait", ok, err)
	}
	if _, err := c.Get(ctx, "jobs/J2/result", client.WaitForChange(50*time.Millisecond)); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("Get of a key nobody writes: %v, want ErrNotFound after the wait", err)
	}
}

// DeletePrefix against a server: the subtree goes, its neighbours stay.
func TestDeletePrefixAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	for _, key := range []string{"tasks/T1/state", "tasks/T1/agents/a1", "tasks/T10/state"} {
		if _, err := c.Put(ctx, key, 1); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := c.DeletePrefix(ctx, "tasks/T1/"); err != nil || n != 2 {
		t.Errorf("DeletePrefix = %d, %v; want 2", n, err)
	}
	if keys, err := c.Keys(ctx, "tasks/"); err != nil || len(keys) != 1 || keys[0] != "tasks/T10/state" {
		t.Errorf("keys left = %v, %v; want tasks/T10/state", keys, err)
	}
	if _, err := c.DeletePrefix(ctx, ""); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("DeletePrefix(\"\") = %v, want ErrInvalid", err)
	}
}

// Entries against a server: every key under the prefix with its entry,
// across the server's pages, with Resolve and WithSiblings passed on and
// the options that do not apply to a listing taking no effect.
func TestEntriesAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	for start := 0; start < 1003; start += 1000 { // two batches, two pages
		var ops []client.BatchOp
		for i := start; i < min(start+1000, 1003); i++ {
			ops = append(ops, client.BatchOp{Op: client.OpPut, Key: fmt.Sprintf("tasks/T1/agents/a%04d", i), Value: i})
		}
		if _, err := c.Batch(ctx, ops, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := mustNew(t, srv.URL, client.WithWorkerID("w2")).Put(ctx, "tasks/T1/agents/a0000", "w2's"); err != nil {
		t.Fatal(err) // a sibling of w1's 0
	}
	all, err := c.Entries(ctx, "tasks/T1/", client.Consistent(), client.WaitForChange(time.Second))
	if err != nil || len(all) != 1003 {
		t.Fatalf("Entries = %d entries, %v; want 1003", len(all), err)
	}
	for i, e := range all {
		var v any
		if err := e.Decode(&v); i > 0 && (err != nil || v != float64(i)) || e.Key != fmt.Sprintf("tasks/T1/agents/a%04d", i) {
			t.Fatalf("entry %d = %s %s", i, e.Key, e.Value)
		}
	}
	if all[0].Siblings != 2 || all[0].SiblingList != nil {
		t.Errorf("entry 0: %d siblings, list %v; want 2, no list", all[0].Siblings, all[0].SiblingList)
	}
	for _, opts := range [][]client.GetOption{{client.WithSiblings()}, {client.Resolve(client.StrategySiblings)}} {
		got, err := c.Entries(ctx, "tasks/T1/agents/a0000", opts...)
		if err != nil || len(got) != 1 || len(got[0].SiblingList) != 2 {
			t.Errorf("Entries with %d options = %v, %v; want one entry listing 2 siblings", len(opts), got, err)
		}
	}
	if got, err := c.Entries(ctx, "nothing/"); err != nil || got == nil || len(got) != 0 {
		t.Errorf("Entries of nothing = %v, %v; want empty", got, err)
	}
}
