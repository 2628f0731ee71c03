package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// LockHolder and Locks against a server say how many requests wait for the
// lock, and the waiter gets it once the holder lets go.
func TestLockWaitersAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	holder := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	waiter := mustNew(t, srv.URL, client.WithWorkerID("w2"))
	held, err := holder.Lock(ctx, "jobs/nightly", client.LockOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		l, err := waiter.Lock(ctx, "jobs/nightly", client.LockOptions{TTL: 10 * time.Second, Wait: 10 * time.Second})
		if err == nil {
			err = l.Release(ctx)
		}
		got <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		info, err := holder.LockHolder(ctx, "jobs/nightly")
		if err != nil {
			t.Fatal(err)
		}
		if info.Owner != "w1" {
			t.Fatalf("holder %q, want w1", info.Owner)
		}
		if info.Waiters == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters 5 s after one started waiting, want 1", info.Waiters)
		}
	}
	if infos, err := holder.Locks(ctx, "jobs/"); err != nil || len(infos) != 1 || infos[0].Waiters != 1 {
		t.Errorf("Locks = %+v, %v; want jobs/nightly with one waiter", infos, err)
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter did not get the lock within 5 s of its release")
	}
}
