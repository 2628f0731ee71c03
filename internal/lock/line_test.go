package lock_test

// Tests of the line of waiters shared by every instance: two Lockers on one
// Redis stand for two instances.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/redistest"
)

// lineLen is how many waiters stand in line for lock name.
func lineLen(t *testing.T, rdb redis.UniversalClient, name string) int64 {
	t.Helper()
	n, err := rdb.ZCard(context.Background(), keys.Aux(ns, name, "lock-line")).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitLineLen waits up to 5 s for the line of name to have n waiters.
func waitLineLen(t *testing.T, rdb redis.UniversalClient, name string, n int64) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); lineLen(t, rdb, name) != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("line of %s: %d waiters, want %d", name, lineLen(t, rdb, name), n)
		}
	}
}

// Waiters on two instances, arriving alternately, get the lock in the order
// they arrived. Each winner releases through its own instance, which wakes
// its own next waiter at once while the other instance hears of the release
// only through Redis: without one line for both, the local waiter overtakes.
func TestWaitersServedInArrivalOrderAcrossInstances(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		checkArrivalOrder(t, b.Client, newLocker(t, b, lock.Options{}), newLocker(t, b, lock.Options{}))
	})
}

// The same on a Redis Cluster of three masters: a lock's line is in its
// hash slot, with the lock.
func TestWaitersServedInArrivalOrderOnCluster(t *testing.T) {
	c := redistest.ClusterClient(t, redistest.StartCluster(t, 3))
	instance := func() *lock.Locker {
		l := lock.New(c, lock.Options{})
		t.Cleanup(func() { _ = l.Close() })
		return l
	}
	checkArrivalOrder(t, c, instance(), instance())
}

// Waiters whose arrivals the Redis clock cannot tell apart (a coarse or
// stopped clock: here miniredis's, frozen) still get the lock in the order
// Redis ran their arrivals.
func TestWaitersInOrderWithinOneClockTick(t *testing.T) {
	b := redistest.Mini(t)
	b.Mini.SetTime(time.Now())
	checkArrivalOrder(t, b.Client, newLocker(t, b, lock.Options{}), newLocker(t, b, lock.Options{}))
}

// checkArrivalOrder has waiters arrive alternately on instances a and b
// while a holds the lock, and checks they get it in arrival order.
func checkArrivalOrder(t *testing.T, rdb redis.UniversalClient, a, b *lock.Locker) {
	t.Helper()
	instances := []*lock.Locker{a, b}
	const name, waiters = "tasks/F1", 6
	holder := mustAcquire(t, instances[0], name, lock.AcquireRequest{TTL: 10 * time.Second, Owner: "holder"})

	order := make(chan int, waiters)
	errs := make(chan error, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		l := instances[(i+1)%2] // b, a, b, a, …
		wg.Go(func() {
			g, err := l.Acquire(context.Background(), ns, name,
				lock.AcquireRequest{TTL: 10 * time.Second, Wait: 10 * time.Second, Owner: fmt.Sprintf("w%d", i)})
			if err != nil {
				errs <- fmt.Errorf("waiter %d: %w", i, err)
				return
			}
			order <- i
			time.Sleep(5 * time.Millisecond) // time for an overtaking waiter to show up
			if err := l.Release(context.Background(), ns, name, g.Token); err != nil {
				errs <- fmt.Errorf("waiter %d release: %w", i, err)
			}
		})
		waitLineLen(t, rdb, name, int64(i+1)) // in line before the next arrives
	}
	if err := instances[0].Release(context.Background(), ns, name, holder.Token); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(order)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var got []int
	for i := range order {
		got = append(got, i)
	}
	if fmt.Sprint(got) != fmt.Sprint([]int{0, 1, 2, 3, 4, 5}) {
		t.Errorf("granted in order %v, want arrival order [0 1 2 3 4 5]", got)
	}
	if n := lineLen(t, rdb, name); n != 0 {
		t.Errorf("%d waiters left in line after every grant", n)
	}
}

// A free lock is kept for the first waiter in line while its lease lasts,
// even from an acquire that does not wait; once the lease ends (its instance
// died and nobody renews it) the next acquire drops it and gets the lock.
func TestFreeLockKeptForFirstWaiterUntilItsLeaseEnds(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		l := newLocker(t, b, lock.Options{})
		const name = "tasks/F2"
		now := time.Now()
		// A waiter of an instance that died: in line, its lease ending soon.
		leaseEnd := now.Add(400 * time.Millisecond).UnixMilli()
		if err := b.Client.ZAdd(ctx, keys.Aux(ns, name, "lock-line"), redis.Z{Score: float64(now.UnixMicro()), Member: "ghost-token"}).Err(); err != nil {
			t.Fatal(err)
		}
		if err := b.Client.HSet(ctx, keys.Aux(ns, name, "lock-leases"), "ghost-token", strconv.FormatInt(leaseEnd, 10)+"|ghost").Err(); err != nil {
			t.Fatal(err)
		}

		_, err := l.Acquire(ctx, ns, name, lock.AcquireRequest{TTL: time.Second, Owner: "eager"})
		var he *lock.HeldError
		if !errors.As(err, &he) || he.Holder != "ghost" || he.ExpiresAt.UnixMilli() != leaseEnd {
			t.Fatalf("acquire of a lock kept for a waiter: %v, want held for %q until %d", err, "ghost", leaseEnd)
		}

		// A waiting acquire gets it once the lease has ended, and leaves no
		// one in line.
		g, err := l.Acquire(ctx, ns, name, lock.AcquireRequest{TTL: time.Second, Wait: 5 * time.Second, Owner: "patient"})
		if err != nil {
			t.Fatalf("acquire after the lease: %v", err)
		}
		if took := time.Since(now); took < 400*time.Millisecond {
			t.Errorf("granted %v after the ghost took its place, before its lease of 400 ms ended", took)
		}
		if g.Owner != "patient" {
			t.Errorf("granted to %q", g.Owner)
		}
		if n := lineLen(t, b.Client, name); n != 0 {
			t.Errorf("%d waiters left in line", n)
		}
	})
}

// A waiter that gives up or is cancelled leaves the line, and the one
// behind it is then first.
func TestWaiterThatLeavesGivesUpItsPlace(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		a, bb := newLocker(t, b, lock.Options{}), newLocker(t, b, lock.Options{})
		const name = "tasks/F3"
		holder := mustAcquire(t, a, name, lock.AcquireRequest{TTL: 10 * time.Second})

		// Gives up after its wait.
		if _, err := bb.Acquire(context.Background(), ns, name, lock.AcquireRequest{TTL: time.Second, Wait: 100 * time.Millisecond}); !errors.Is(err, lock.ErrLockHeld) {
			t.Fatalf("waiter that timed out: %v, want ErrLockHeld", err)
		}
		if n := lineLen(t, b.Client, name); n != 0 {
			t.Fatalf("%d waiters in line after the only one gave up", n)
		}

		// Cancelled while first in line, with a second waiter behind it.
		ctx, cancel := context.WithCancel(context.Background())
		first := make(chan error, 1)
		go func() {
			_, err := bb.Acquire(ctx, ns, name, lock.AcquireRequest{TTL: time.Second, Wait: 10 * time.Second, Owner: "first"})
			first <- err
		}()
		waitLineLen(t, b.Client, name, 1)
		second := make(chan error, 1)
		go func() {
			_, err := a.Acquire(context.Background(), ns, name, lock.AcquireRequest{TTL: time.Second, Wait: 10 * time.Second, Owner: "second"})
			second <- err
		}()
		waitLineLen(t, b.Client, name, 2)
		cancel()
		if err := <-first; !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled waiter: %v, want context.Canceled", err)
		}
		waitLineLen(t, b.Client, name, 1)
		if err := a.Release(context.Background(), ns, name, holder.Token); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		select {
		case err := <-second:
			if err != nil {
				t.Fatalf("second waiter: %v", err)
			}
			if took := time.Since(start); took > 500*time.Millisecond {
				t.Errorf("second waiter granted %v after the release, want well under a lease", took)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("second waiter not granted within 5 s of the release")
		}
		if n := lineLen(t, b.Client, name); n != 0 {
			t.Errorf("%d waiters left in line", n)
		}
	})
}

// Waiters that only sleep (not the head of their instance's queue) keep
// their place in line while the holder keeps the lock longer than a lease:
// their instance renews it.
func TestPlacesInLineRenewedWhileWaiting(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		opts := lock.Options{RetryInterval: 50 * time.Millisecond} // lease: 1 s
		holderSide, waitSide := newLocker(t, b, opts), newLocker(t, b, opts)
		const name = "tasks/F4"
		holder := mustAcquire(t, holderSide, name, lock.AcquireRequest{TTL: 10 * time.Second})
		granted := make(chan string, 3)
		for i := range 3 {
			owner := fmt.Sprintf("w%d", i)
			go func() {
				g, err := waitSide.Acquire(ctx, ns, name, lock.AcquireRequest{TTL: 10 * time.Second, Wait: 10 * time.Second, Owner: owner})
				if err != nil {
					granted <- "error: " + err.Error()
					return
				}
				granted <- owner
				_ = waitSide.Release(ctx, ns, name, g.Token)
			}()
			waitLineLen(t, b.Client, name, int64(i+1))
		}
		time.Sleep(1500 * time.Millisecond) // longer than a lease
		leases, err := b.Client.HGetAll(ctx, keys.Aux(ns, name, "lock-leases")).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(leases) != 3 {
			t.Fatalf("%d leases, want 3: %v", len(leases), leases)
		}
		for token, v := range leases {
			end, owner, _ := strings.Cut(v, "|")
			ms, err := strconv.ParseInt(end, 10, 64)
			if err != nil || time.UnixMilli(ms).Before(time.Now().Add(-100*time.Millisecond)) {
				t.Errorf("waiter %s (%s): lease ends %s, in the past", owner, token[:8], end)
			}
		}
		// Holder and List count them, from either instance.
		if info, err := holderSide.Holder(ctx, ns, name); err != nil || info.Waiters != 3 {
			t.Errorf("Holder: %+v, %v; want 3 waiters", info, err)
		}
		if infos, err := waitSide.List(ctx, ns, "tasks/"); err != nil || len(infos) != 1 || infos[0].Waiters != 3 {
			t.Errorf("List: %+v, %v; want tasks/F4 with 3 waiters", infos, err)
		}
		if err := holderSide.Release(ctx, ns, name, holder.Token); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			select {
			case got := <-granted:
				if want := fmt.Sprintf("w%d", i); got != want {
					t.Errorf("grant %d went to %s, want %s", i, got, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("grant %d not made within 5 s", i)
			}
		}
	})
}

// When Redis's line and a Locker's queue disagree on the order of two of
// its waiters (their arrivals reached Redis in the other order), the one
// first in Redis's line is served at once, not after the other gives up.
func TestFirstInLineServedWhenTheLocalQueueDisagrees(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		l := newLocker(t, b, lock.Options{})
		const name = "tasks/F9"
		holder := mustAcquire(t, l, name, lock.AcquireRequest{TTL: 10 * time.Second, Owner: "holder"})
		granted := make(chan string, 2)
		errs := make(chan error, 2)
		for i, owner := range []string{"first", "second"} {
			go func() {
				g, err := l.Acquire(ctx, ns, name, lock.AcquireRequest{TTL: 10 * time.Second, Wait: 8 * time.Second, Owner: owner})
				if err != nil {
					errs <- fmt.Errorf("%s: %w", owner, err)
					return
				}
				granted <- owner
				if err := l.Release(ctx, ns, name, g.Token); err != nil {
					errs <- fmt.Errorf("%s release: %w", owner, err)
				}
			}()
			waitLineLen(t, b.Client, name, int64(i+1))
		}
		// Swap their places in Redis's line only.
		line := keys.Aux(ns, name, "lock-line")
		zs, err := b.Client.ZRangeWithScores(ctx, line, 0, -1).Result()
		if err != nil || len(zs) != 2 {
			t.Fatalf("line %v, %v", zs, err)
		}
		if err := b.Client.ZAdd(ctx, line, redis.Z{Score: zs[1].Score, Member: zs[0].Member},
			redis.Z{Score: zs[0].Score, Member: zs[1].Member}).Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := l.Release(ctx, ns, name, holder.Token); err != nil {
			t.Fatal(err)
		}
		var order []string
		for len(order) < 2 {
			select {
			case owner := <-granted:
				order = append(order, owner)
				t.Logf("%s granted %v after the release", owner, time.Since(start).Round(time.Millisecond))
			case err := <-errs:
				t.Fatal(err)
			case <-time.After(10 * time.Second):
				t.Fatalf("granted %v 10 s after the release", order)
			}
		}
		if fmt.Sprint(order) != "[second first]" {
			t.Errorf("granted in order %v, want Redis's line's [second first]", order)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("both granted %v after the release: the lock waited for a sleeping waiter", took)
		}
	})
}
