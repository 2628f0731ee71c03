package lock_test

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/redistest"
)

// TestSafety runs 8 instances (each its own Locker and Redis connection pool)
// through acquire / work / release cycles on one lock, with a short TTL that
// some work overruns on purpose, and checks the history: fences strictly
// increase in grant order, and no grant starts while the previous holder
// still believed it held the lock (before both its release and its expiry).
// Real redis-server only: it is about Redis's atomicity and clock, not Lua.
func TestSafety(t *testing.T) {
	checkSafety(t, redistest.Start(t, redistest.Options{}), 8, 100, false)
}

// TestSafetyAcrossRestart is TestSafety on a persistent redis-server that
// is restarted once half the grants are in: fences keep increasing through
// it, and no two holders overlap, although clients lose Redis meanwhile.
func TestSafetyAcrossRestart(t *testing.T) {
	checkSafety(t, redistest.Start(t, redistest.Options{Persistent: true}), 4, 80, true)
}

func checkSafety(t *testing.T, s *redistest.Server, clients, cycles int, restart bool) {
	t.Helper()
	const (
		ttl = 150 * time.Millisecond
		// Redis stamps grants to the millisecond (floor), the test's own
		// clock to the nanosecond.
		tolerance = 2 * time.Millisecond
	)
	type hold struct {
		client   int
		g        lock.Grant
		end      time.Time // when the holder stopped believing: its release call, or its expiry
		released bool      // Release succeeded (false: the lease had run out, or its reply was lost)
	}
	var (
		mu        sync.Mutex
		holds     []hold
		wg        sync.WaitGroup
		restarted = make(chan struct{})
		outages   int
		before    int // grants in before the restart
	)
	if restart {
		// Restart once half the grants are in, while the clients go on.
		wg.Go(func() {
			defer close(restarted)
			for {
				mu.Lock()
				n := len(holds)
				mu.Unlock()
				if n >= clients*cycles/2 {
					s.Restart(t)
					mu.Lock()
					before = len(holds)
					mu.Unlock()
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	for c := range clients {
		l := lock.New(s.Client(t), lock.Options{})
		t.Cleanup(func() { _ = l.Close() })
		rng := rand.New(rand.NewPCG(uint64(c), 42))
		wg.Go(func() {
			ctx := context.Background()
			for range cycles {
				g, err := l.Acquire(ctx, ns, "tasks/safety", lock.AcquireRequest{TTL: ttl, Wait: 10 * time.Second, Owner: string(rune('a' + c))})
				for restart && errors.Is(err, lock.ErrUnavailable) {
					// Redis is restarting: try again, as a worker would.
					mu.Lock()
					outages++
					mu.Unlock()
					time.Sleep(10 * time.Millisecond)
					g, err = l.Acquire(ctx, ns, "tasks/safety", lock.AcquireRequest{TTL: ttl, Wait: 10 * time.Second, Owner: string(rune('a' + c))})
				}
				if err != nil {
					t.Errorf("client %d: %v", c, err)
					return
				}
				work := time.Duration(rng.IntN(2000)) * time.Microsecond
				if rng.IntN(50) == 0 {
					work = ttl + 20*time.Millisecond // overrun: the lease ends mid-work
				}
				time.Sleep(work)
				end := time.Now()
				err = l.Release(ctx, ns, "tasks/safety", g.Token)
				if err != nil && !errors.Is(err, lock.ErrNotHeld) && !(restart && errors.Is(err, lock.ErrUnavailable)) {
					t.Errorf("client %d: release: %v", c, err)
					return
				}
				if end.After(g.ExpiresAt) {
					// The lease ran out mid-work: the lock was free from then.
					end = g.ExpiresAt
				}
				// A holder stops working under the lock when it asks to
				// release it, whatever the answer: a release that Redis ran
				// but whose reply a restart lost is still a release.
				mu.Lock()
				holds = append(holds, hold{client: c, g: g, end: end, released: err == nil})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if len(holds) != clients*cycles {
		t.Fatalf("%d grants, want %d", len(holds), clients*cycles)
	}
	if restart {
		<-restarted
		if before == 0 || before >= len(holds) {
			t.Fatalf("the restart came after %d of %d grants: not in the middle", before, len(holds))
		}
		t.Logf("redis-server restarted after %d of %d grants", before, len(holds))
	}
	// Grant order is acquisition order (by the Redis clock); fences must
	// follow it strictly.
	slices.SortFunc(holds, func(a, b hold) int { return cmp.Compare(a.g.Fence, b.g.Fence) })
	expired := 0
	for i, h := range holds {
		if !h.released {
			expired++
		}
		if i == 0 {
			continue
		}
		p := holds[i-1]
		if h.g.Fence == p.g.Fence {
			t.Fatalf("fence %d granted twice: %+v and %+v", h.g.Fence, p, h)
		}
		if h.g.AcquiredAt.Before(p.g.AcquiredAt) {
			t.Errorf("fence %d granted at %v, before fence %d at %v", h.g.Fence, h.g.AcquiredAt, p.g.Fence, p.g.AcquiredAt)
		}
		if h.g.AcquiredAt.Add(tolerance).Before(p.end) {
			t.Errorf("client %d got fence %d at %v while client %d (fence %d) held the lock until %v",
				h.client, h.g.Fence, h.g.AcquiredAt, p.client, p.g.Fence, p.end)
		}
	}
	t.Logf("%d grants, %d leases ran out before their release, %d acquires retried while Redis restarted", len(holds), expired, outages)
	if expired == 0 {
		t.Errorf("no lease ran out: the test did not exercise expiry")
	}
}

// TestFencePersistence: fences keep increasing across a restart of a
// persistent Redis, and after the counter key is lost.
func TestFencePersistence(t *testing.T) {
	s := redistest.Start(t, redistest.Options{Persistent: true})
	ctx := context.Background()
	acquire := func(name string) lock.Grant {
		t.Helper()
		// A fresh client and Locker each time: the restart breaks connections.
		l := lock.New(s.Client(t), lock.Options{})
		defer l.Close()
		g, err := l.Acquire(ctx, ns, name, lock.AcquireRequest{TTL: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx, ns, name, g.Token); err != nil {
			t.Fatal(err)
		}
		return g
	}
	var last int64
	next := func(name, when string) {
		t.Helper()
		g := acquire(name)
		if g.Fence <= last {
			t.Fatalf("%s: fence %d, not above %d", when, g.Fence, last)
		}
		last = g.Fence
	}
	for range 3 {
		next("tasks/T1", "before the restart")
	}
	s.Restart(t)
	next("tasks/T1", "after the restart")
	c := s.Client(t)
	if err := c.Del(ctx, keys.Aux(ns, "tasks/T1", "lock-fence")).Err(); err != nil {
		t.Fatal(err)
	}
	next("tasks/T1", "after the counter was deleted")
	next("tasks/T1", "after that")

	// The counter itself is persisted: push it far ahead of the clock, so
	// that only the stored counter can explain the next fence.
	far := time.Now().Add(24 * time.Hour).UnixMicro()
	if err := c.Set(ctx, keys.Aux(ns, "tasks/T2", "lock-fence"), far, 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	if g := acquire("tasks/T2"); g.Fence != far+1 {
		t.Fatalf("fence after restart %d, want the persisted counter + 1 = %d", g.Fence, far+1)
	}
}
