package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// A semaphore against a server: permits up to the limit, semaphore_full
// with its figures, refresh and Keep on the semaphore's route, release.
func TestSemaphoreAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	w1 := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	w2 := mustNew(t, srv.URL, client.WithWorkerID("w2"))
	a, err := w1.AcquirePermit(ctx, "jobs/crawl", 2, client.LockOptions{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	b, err := w2.AcquirePermit(ctx, "jobs/crawl", 2, client.LockOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if a.Limit != 2 || a.Fence != 0 || a.Owner != "w1" || a.Token == b.Token {
		t.Fatalf("permits %+v and %+v", a, b)
	}
	_, err = w2.AcquirePermit(ctx, "jobs/crawl", 2, client.LockOptions{TTL: time.Second})
	var ae *client.APIError
	if !errors.Is(err, client.ErrSemaphoreFull) || !errors.As(err, &ae) || ae.Holders != 2 || !ae.LockExpiresAt.Equal(a.ExpiresAt()) || ae.RetryAfter <= 0 {
		t.Fatalf("third acquire: %v (%+v), want ErrSemaphoreFull with 2 holders until %v", err, ae, a.ExpiresAt())
	}
	if _, err := w2.AcquirePermit(ctx, "jobs/crawl", 3, client.LockOptions{TTL: time.Second}); !errors.Is(err, client.ErrLimitMismatch) {
		t.Fatalf("another limit: %v, want ErrLimitMismatch", err)
	}

	before := a.ExpiresAt()
	if err := a.Refresh(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if !a.ExpiresAt().After(before) {
		t.Fatalf("refresh left the expiry at %v", a.ExpiresAt())
	}
	info, err := w1.Semaphore(ctx, "jobs/crawl")
	if err != nil {
		t.Fatal(err)
	}
	if info.Limit != 2 || len(info.Holders) != 2 || info.Holders[0].Owner != "w2" || info.Holders[1].Owner != "w1" ||
		!info.Holders[1].ExpiresAt.Equal(a.ExpiresAt()) {
		t.Fatalf("Semaphore = %+v: want w2 then w1 (refreshed to %v)", info, a.ExpiresAt())
	}

	if list, err := w1.Semaphores(ctx, "jobs/"); err != nil || len(list) != 1 || list[0].Name != "jobs/crawl" || len(list[0].Holders) != 2 {
		t.Fatalf("Semaphores(jobs/) = %+v, %v", list, err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx); !errors.Is(err, client.ErrLockNotHeld) {
		t.Fatalf("second release: %v, want ErrLockNotHeld", err)
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := w1.Semaphore(ctx, "jobs/crawl"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Semaphore after both releases: %v, want ErrNotFound", err)
	}
	if list, err := w1.Semaphores(ctx, ""); err != nil || len(list) != 0 {
		t.Fatalf("Semaphores after both releases = %+v, %v; want none", list, err)
	}
	if _, err := w1.AcquirePermit(ctx, "jobs/crawl", 1, client.LockOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w1.ForceReleaseSemaphore(ctx, "jobs/crawl"); err != nil {
		t.Fatal(err)
	}
	if err := w1.ForceReleaseSemaphore(ctx, "jobs/crawl"); !errors.Is(err, client.ErrLockNotHeld) {
		t.Fatalf("second force: %v, want ErrLockNotHeld", err)
	}
	for _, bad := range []struct {
		name  string
		limit int
	}{{"", 1}, {"jobs/refresh", 1}, {"jobs/x", 0}} {
		if _, err := w1.AcquirePermit(ctx, bad.name, bad.limit, client.LockOptions{}); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("AcquirePermit(%q, %d): %v, want ErrInvalid", bad.name, bad.limit, err)
		}
	}
}

// TestPermitKeep: Keep refreshes a permit through the semaphore's route, so
// it outlives its TTL.
func TestPermitKeep(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	p, err := c.AcquirePermit(ctx, "jobs/x", 1, client.LockOptions{TTL: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	lost := p.Keep(ctx)
	time.Sleep(time.Second)
	select {
	case <-lost:
		t.Fatal("Keep stopped: the permit was lost")
	default:
	}
	if _, err := c.AcquirePermit(ctx, "jobs/x", 1, client.LockOptions{TTL: time.Second}); !errors.Is(err, client.ErrSemaphoreFull) {
		t.Fatalf("acquire while kept: %v, want ErrSemaphoreFull", err)
	}
	if err := p.Release(ctx); err != nil {
		t.Fatal(err)
	}
	<-lost
}
