package lock_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/redistest"
)

func mustPermit(t testing.TB, l *lock.Locker, name string, req lock.SemaphoreRequest) lock.Permit {
	t.Helper()
	p, err := l.AcquirePermit(context.Background(), ns, name, req)
	if err != nil {
		t.Fatalf("AcquirePermit(%q, %+v): %v", name, req, err)
	}
	return p
}

func wantFull(t testing.TB, err error, holders int) *lock.FullError {
	t.Helper()
	var fe *lock.FullError
	if !errors.As(err, &fe) || !errors.Is(err, lock.ErrSemaphoreFull) {
		t.Fatalf("got %v, want a *FullError", err)
	}
	if fe.Holders != holders {
		t.Errorf("FullError.Holders = %d, want %d", fe.Holders, holders)
	}
	return fe
}

func TestSemaphoreValidation(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{MaxTTL: time.Minute, MaxWait: 10 * time.Second})
		ctx := context.Background()
		for _, tt := range []struct {
			name, ns, sem string
			req           lock.SemaphoreRequest
		}{
			{"bad name", ns, "jobs//x", lock.SemaphoreRequest{Limit: 1, TTL: time.Second}},
			{"bad namespace", "a/b", "jobs/x", lock.SemaphoreRequest{Limit: 1, TTL: time.Second}},
			{"zero limit", ns, "jobs/x", lock.SemaphoreRequest{TTL: time.Second}},
			{"limit above max", ns, "jobs/x", lock.SemaphoreRequest{Limit: lock.MaxLimit + 1, TTL: time.Second}},
			{"zero ttl", ns, "jobs/x", lock.SemaphoreRequest{Limit: 1}},
			{"ttl above max", ns, "jobs/x", lock.SemaphoreRequest{Limit: 1, TTL: time.Hour}},
			{"wait above max", ns, "jobs/x", lock.SemaphoreRequest{Limit: 1, TTL: time.Second, Wait: time.Minute}},
			{"bad idempotency key", ns, "jobs/x", lock.SemaphoreRequest{Limit: 1, TTL: time.Second, IdempotencyKey: "a/b"}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				if _, err := l.AcquirePermit(ctx, tt.ns, tt.sem, tt.req); !errors.Is(err, lock.ErrInvalidArgument) {
					t.Fatalf("AcquirePermit: %v, want ErrInvalidArgument", err)
				}
			})
		}
		if _, err := l.Semaphore(ctx, ns, "jobs/x"); !errors.Is(err, lock.ErrNotFound) {
			t.Fatalf("Semaphore after refused acquires: %v, want ErrNotFound", err)
		}
		if err := l.ReleasePermit(ctx, ns, "jobs/x", ""); !errors.Is(err, lock.ErrInvalidArgument) {
			t.Errorf("ReleasePermit with no token: %v, want ErrInvalidArgument", err)
		}
		if _, err := l.RefreshPermit(ctx, ns, "jobs/x", "t", 0); !errors.Is(err, lock.ErrInvalidArgument) {
			t.Errorf("RefreshPermit with zero TTL: %v, want ErrInvalidArgument", err)
		}
	})
}

func TestSemaphoreGrantsUpToItsLimit(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		req := lock.SemaphoreRequest{Limit: 3, TTL: 10 * time.Second}
		var permits []lock.Permit
		for i := range 3 {
			// Holders are listed by expiry: make them apart.
			req.Owner, req.TTL = "w"+strconv.Itoa(i), time.Duration(10+i)*time.Second
			permits = append(permits, mustPermit(t, l, "jobs/crawl", req))
		}
		seen := map[string]bool{}
		for _, p := range permits {
			if p.Limit != 3 || len(p.Token) != 32 || seen[p.Token] {
				t.Fatalf("permit %+v: want limit 3 and a fresh 32-digit token", p)
			}
			seen[p.Token] = true
		}
		req.Owner, req.TTL = "w3", 10*time.Second
		_, err := l.AcquirePermit(ctx, ns, "jobs/crawl", req)
		if fe := wantFull(t, err, 3); !fe.ExpiresAt.Equal(permits[0].ExpiresAt) {
			t.Errorf("FullError.ExpiresAt = %v, want the first permit's %v", fe.ExpiresAt, permits[0].ExpiresAt)
		}

		info, err := l.Semaphore(ctx, ns, "jobs/crawl")
		if err != nil {
			t.Fatal(err)
		}
		if info.Limit != 3 || len(info.Holders) != 3 || info.Holders[0].Owner != "w0" || info.Holders[1].Owner != "w1" || info.Holders[2].Owner != "w2" {
			t.Fatalf("Semaphore = %+v, want limit 3 and holders w0, w1, w2", info)
		}

		// Another limit is refused while permits are held.
		_, err = l.AcquirePermit(ctx, ns, "jobs/crawl", lock.SemaphoreRequest{Limit: 5, TTL: time.Second})
		if !errors.Is(err, lock.ErrLimitMismatch) {
			t.Fatalf("acquire with another limit: %v, want ErrLimitMismatch", err)
		}

		if err := l.ReleasePermit(ctx, ns, "jobs/crawl", permits[1].Token); err != nil {
			t.Fatal(err)
		}
		if err := l.ReleasePermit(ctx, ns, "jobs/crawl", permits[1].Token); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("second release: %v, want ErrNotHeld", err)
		}
		p := mustPermit(t, l, "jobs/crawl", req)
		_, err = l.AcquirePermit(ctx, ns, "jobs/crawl", req)
		wantFull(t, err, 3)

		// Releasing every permit deletes the semaphore, limit included.
		for _, tok := range []string{permits[0].Token, permits[2].Token, p.Token} {
			if err := l.ReleasePermit(ctx, ns, "jobs/crawl", tok); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := b.Client.Exists(ctx, keys.Aux(ns, "jobs/crawl", "sem"), keys.Aux(ns, "jobs/crawl", "sem-permits")).Result(); err != nil || n != 0 {
			t.Fatalf("keys left after the last release: %d (%v)", n, err)
		}
		mustPermit(t, l, "jobs/crawl", lock.SemaphoreRequest{Limit: 5, TTL: time.Second})
		if s := l.Stats(); s.Permits != 5 || s.Full != 2 {
			t.Errorf("Stats = %+v: want 5 permits granted and 2 acquires that found it full", s)
		}
	})
}

func TestSemaphorePermitsExpire(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		short := mustPermit(t, l, "jobs/x", lock.SemaphoreRequest{Limit: 2, TTL: 100 * time.Millisecond, Owner: "short"})
		long := mustPermit(t, l, "jobs/x", lock.SemaphoreRequest{Limit: 2, TTL: 10 * time.Second, Owner: "long"})
		refreshed, err := l.RefreshPermit(ctx, ns, "jobs/x", long.Token, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if !refreshed.ExpiresAt.After(long.ExpiresAt) || !refreshed.AcquiredAt.Equal(long.AcquiredAt) || refreshed.Owner != "long" || refreshed.Limit != 2 {
			t.Fatalf("refreshed %+v from %+v: want a later expiry, the same acquisition, owner and limit", refreshed, long)
		}
		time.Sleep(200 * time.Millisecond) // both backends run TTLs in real time

		if _, err := l.RefreshPermit(ctx, ns, "jobs/x", short.Token, time.Second); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("refresh of an expired permit: %v, want ErrNotHeld", err)
		}
		if err := l.ReleasePermit(ctx, ns, "jobs/x", short.Token); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("release of an expired permit: %v, want ErrNotHeld", err)
		}
		info, err := l.Semaphore(ctx, ns, "jobs/x")
		if err != nil || len(info.Holders) != 1 || info.Holders[0].Owner != "long" {
			t.Fatalf("Semaphore = %+v, %v; want only the long permit", info, err)
		}
		mustPermit(t, l, "jobs/x", lock.SemaphoreRequest{Limit: 2, TTL: time.Second, Owner: "next"})
		_, err = l.AcquirePermit(ctx, ns, "jobs/x", lock.SemaphoreRequest{Limit: 2, TTL: time.Second})
		wantFull(t, err, 2)
	})
}

func TestSemaphoreIdempotency(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		req := lock.SemaphoreRequest{Limit: 1, TTL: 5 * time.Second, Owner: "w1", IdempotencyKey: "job-7"}
		first := mustPermit(t, l, "jobs/x", req)
		again := mustPermit(t, l, "jobs/x", req)
		if !again.Replayed || again.Token != first.Token || !again.ExpiresAt.Equal(first.ExpiresAt) || first.Replayed {
			t.Fatalf("again = %+v, first = %+v: want the first permit replayed", again, first)
		}
		other := req
		other.Owner = "w2"
		if _, err := l.AcquirePermit(ctx, ns, "jobs/x", other); !errors.Is(err, lock.ErrInvalidArgument) {
			t.Fatalf("same key, other owner: %v, want ErrInvalidArgument", err)
		}
		if err := l.ReleasePermit(ctx, ns, "jobs/x", first.Token); err != nil {
			t.Fatal(err)
		}
		fresh := mustPermit(t, l, "jobs/x", req)
		if fresh.Replayed || fresh.Token == first.Token {
			t.Fatalf("after release, the key granted %+v: want a new permit", fresh)
		}
		if s := l.Stats(); s.Permits != 2 || s.PermitsReplayed != 1 || s.Full != 0 || s.Grants != 0 {
			t.Errorf("Stats = %+v: want 2 permits, 1 replayed, none full, no lock grants", s)
		}
	})
}

func TestSemaphoreForceRelease(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		if err := l.ForceReleasePermits(ctx, ns, "jobs/x"); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("force release of an empty semaphore: %v, want ErrNotHeld", err)
		}
		p := mustPermit(t, l, "jobs/x", lock.SemaphoreRequest{Limit: 2, TTL: 5 * time.Second})
		mustPermit(t, l, "jobs/x", lock.SemaphoreRequest{Limit: 2, TTL: 5 * time.Second})
		if err := l.ForceReleasePermits(ctx, ns, "jobs/x"); err != nil {
			t.Fatal(err)
		}
		if err := l.ReleasePermit(ctx, ns, "jobs/x", p.Token); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("release after force: %v, want ErrNotHeld", err)
		}
		if _, err := l.Semaphore(ctx, ns, "jobs/x"); !errors.Is(err, lock.ErrNotFound) {
			t.Fatalf("Semaphore after force: %v, want ErrNotFound", err)
		}
	})
}

// TestSemaphoreWaitersAreServedInArrivalOrder has three waiters, on two
// Lockers, line up for a full semaphore; each release goes to the first
// still waiting, and an acquire that does not wait cannot take a permit
// kept for them.
func TestSemaphoreWaitersAreServedInArrivalOrder(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		a := newLocker(t, b, lock.Options{})
		c := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		held := []lock.Permit{
			mustPermit(t, a, "jobs/x", lock.SemaphoreRequest{Limit: 2, TTL: 30 * time.Second}),
			mustPermit(t, a, "jobs/x", lock.SemaphoreRequest{Limit: 2, TTL: 30 * time.Second}),
		}
		type result struct {
			owner string
			p     lock.Permit
			err   error
		}
		got := make(chan result, 3)
		for i, l := range []*lock.Locker{c, a, c} {
			owner := "waiter" + strconv.Itoa(i)
			go func() {
				p, err := l.AcquirePermit(ctx, ns, "jobs/x", lock.SemaphoreRequest{Limit: 2, TTL: 30 * time.Second, Wait: 8 * time.Second, Owner: owner})
				got <- result{owner, p, err}
			}()
			waitFor(t, func() bool {
				info, err := a.Semaphore(ctx, ns, "jobs/x")
				return err == nil && info.Waiters == i+1
			})
		}
		for i, h := range held {
			if err := a.ReleasePermit(ctx, ns, "jobs/x", h.Token); err != nil {
				t.Fatal(err)
			}
			r := <-got
			if r.err != nil || r.owner != "waiter"+strconv.Itoa(i) {
				t.Fatalf("release %d went to %s (%v), want waiter%d", i, r.owner, r.err, i)
			}
			held[i] = r.p
		}
		// waiter2 still waits, so a free permit is kept for it.
		if err := a.ReleasePermit(ctx, ns, "jobs/x", held[0].Token); err != nil {
			t.Fatal(err)
		}
		_, err := a.AcquirePermit(ctx, ns, "jobs/x", lock.SemaphoreRequest{Limit: 2, TTL: time.Second})
		if !errors.Is(err, lock.ErrSemaphoreFull) {
			t.Fatalf("an acquire that does not wait, with waiter2 in line: %v, want ErrSemaphoreFull", err)
		}
		if r := <-got; r.err != nil || r.owner != "waiter2" {
			t.Fatalf("third release went to %s (%v), want waiter2", r.owner, r.err)
		}
	})
}

// TestSemaphoreSkipsLapsedWaiters: a place in line whose lease ran out (its
// instance died) does not keep a free permit.
func TestSemaphoreSkipsLapsedWaiters(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		line, leases := keys.Aux(ns, "jobs/x", "sem-line"), keys.Aux(ns, "jobs/x", "sem-leases")
		past := time.Now().Add(-time.Minute).UnixMilli()
		if err := b.Client.ZAdd(ctx, line, redis.Z{Score: 1, Member: "dead"}).Err(); err != nil {
			t.Fatal(err)
		}
		if err := b.Client.HSet(ctx, leases, "dead", fmt.Sprintf("%d|gone", past)).Err(); err != nil {
			t.Fatal(err)
		}
		mustPermit(t, l, "jobs/x", lock.SemaphoreRequest{Limit: 1, TTL: time.Second})
		if n, err := b.Client.ZCard(ctx, line).Result(); err != nil || n != 0 {
			t.Fatalf("line after the grant: %d places (%v), want the lapsed one dropped", n, err)
		}
	})
}

// TestSemaphoreNeverExceedsItsLimit has workers on two Lockers take and give
// back permits of one semaphore concurrently, and counts how many hold one at
// any moment.
func TestSemaphoreNeverExceedsItsLimit(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		lockers := []*lock.Locker{newLocker(t, b, lock.Options{}), newLocker(t, b, lock.Options{})}
		const limit, workers, rounds = 3, 8, 6
		var holding, most, grants atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for i := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l := lockers[i%2]
				for range rounds {
					p, err := l.AcquirePermit(context.Background(), ns, "jobs/x",
						lock.SemaphoreRequest{Limit: limit, TTL: 10 * time.Second, Wait: 10 * time.Second})
					if err != nil {
						errs <- err
						return
					}
					n := holding.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					grants.Add(1)
					time.Sleep(2 * time.Millisecond)
					holding.Add(-1)
					if err := l.ReleasePermit(context.Background(), ns, "jobs/x", p.Token); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if most.Load() > limit {
			t.Fatalf("%d permits held at once, limit %d", most.Load(), limit)
		}
		if grants.Load() != workers*rounds {
			t.Fatalf("%d grants, want %d", grants.Load(), workers*rounds)
		}
	})
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}
	}
}

func TestSemaphoresAreListed(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		mustPermit(t, l, "jobs/a", lock.SemaphoreRequest{Limit: 2, TTL: 10 * time.Second, Owner: "w1"})
		mustPermit(t, l, "jobs/a", lock.SemaphoreRequest{Limit: 2, TTL: 10 * time.Second, Owner: "w2"})
		pb := mustPermit(t, l, "jobs/b", lock.SemaphoreRequest{Limit: 1, TTL: 10 * time.Second})
		mustPermit(t, l, "other/c", lock.SemaphoreRequest{Limit: 3, TTL: 10 * time.Second})
		// Refused: it must not list a semaphore twice.
		if _, err := l.AcquirePermit(ctx, ns, "jobs/b", lock.SemaphoreRequest{Limit: 1, TTL: time.Minute}); !errors.Is(err, lock.ErrSemaphoreFull) {
			t.Fatalf("acquire of a full semaphore: %v", err)
		}
		names := func(prefix string) []string {
			t.Helper()
			infos, err := l.Semaphores(ctx, ns, prefix)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, i := range infos {
				out = append(out, fmt.Sprintf("%s:%d/%d", i.Name, len(i.Holders), i.Limit))
			}
			return out
		}
		if got := fmt.Sprint(names("jobs/")); got != "[jobs/a:2/2 jobs/b:1/1]" {
			t.Fatalf("Semaphores(jobs/) = %s", got)
		}
		if err := l.ReleasePermit(ctx, ns, "jobs/b", pb.Token); err != nil {
			t.Fatal(err)
		}
		// A script cache emptied (a restart) is reloaded.
		if err := b.Client.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(names("")); got != "[jobs/a:2/2 other/c:1/3]" {
			t.Fatalf("Semaphores() after jobs/b's release = %s", got)
		}
		if _, err := l.Semaphores(ctx, "a/b", ""); !errors.Is(err, lock.ErrInvalidArgument) {
			t.Fatalf("Semaphores in a bad namespace: %v", err)
		}
	})
}
