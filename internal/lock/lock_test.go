package lock_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/redistest"
)

const ns = "test"

// newLocker returns a Locker on b, closed when the test ends (before the
// backend's client, whose cleanup was registered earlier).
func newLocker(t testing.TB, b redistest.Backend, opts lock.Options) *lock.Locker {
	t.Helper()
	l := lock.New(b.Client, opts)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func mustAcquire(t testing.TB, l *lock.Locker, name string, req lock.AcquireRequest) lock.Grant {
	t.Helper()
	g, err := l.Acquire(context.Background(), ns, name, req)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", name, err)
	}
	return g
}

func TestValidation(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{MaxTTL: time.Minute, MaxWait: 10 * time.Second})
		ctx := context.Background()
		ok := lock.AcquireRequest{TTL: time.Second}
		tests := []struct {
			name, ns, lock string
			req            lock.AcquireRequest
			invalidKey     bool
		}{
			{"empty namespace", "", "tasks/T1", ok, true},
			{"bad namespace", "a/b", "tasks/T1", ok, true},
			{"empty name", ns, "", ok, true},
			{"empty segment", ns, "tasks//T1", ok, true},
			{"dot segment", ns, "tasks/../T1", ok, true},
			{"bad character", ns, "tasks/T 1", ok, true},
			{"nine segments", ns, "a/b/c/d/e/f/g/h/i", ok, true},
			{"zero ttl", ns, "tasks/T1", lock.AcquireRequest{}, false},
			{"negative ttl", ns, "tasks/T1", lock.AcquireRequest{TTL: -time.Second}, false},
			{"sub-millisecond ttl", ns, "tasks/T1", lock.AcquireRequest{TTL: 500 * time.Microsecond}, false},
			{"ttl above max", ns, "tasks/T1", lock.AcquireRequest{TTL: time.Minute + time.Millisecond}, false},
			{"negative wait", ns, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Wait: -1}, false},
			{"wait above max", ns, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Wait: 11 * time.Second}, false},
			{"owner too long", ns, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Owner: strings.Repeat("w", lock.MaxOwnerLen+1)}, false},
			{"bad idempotency key", ns, "tasks/T1", lock.AcquireRequest{TTL: time.Second, IdempotencyKey: "a b"}, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := l.Acquire(ctx, tt.ns, tt.lock, tt.req)
				if !errors.Is(err, lock.ErrInvalidArgument) {
					t.Fatalf("Acquire: got %v, want ErrInvalidArgument", err)
				}
				if got := errors.Is(err, keys.ErrInvalidKey); got != tt.invalidKey {
					t.Errorf("errors.Is(err, keys.ErrInvalidKey) = %v, want %v (%v)", got, tt.invalidKey, err)
				}
			})
		}
		// Nothing was created by the rejected calls.
		if _, err := l.Holder(ctx, ns, "tasks/T1"); !errors.Is(err, lock.ErrNotFound) {
			t.Fatalf("Holder after rejected acquires: %v, want ErrNotFound", err)
		}

		g := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: time.Second})
		for _, tt := range []struct {
			name  string
			token string
			ttl   time.Duration
		}{
			{"empty token", "", time.Second},
			{"zero ttl", g.Token, 0},
			{"ttl above max", g.Token, 2 * time.Minute},
		} {
			t.Run("refresh "+tt.name, func(t *testing.T) {
				if _, err := l.Refresh(ctx, ns, "tasks/T1", tt.token, tt.ttl); !errors.Is(err, lock.ErrInvalidArgument) {
					t.Fatalf("Refresh: got %v, want ErrInvalidArgument", err)
				}
			})
		}
		if err := l.Release(ctx, ns, "tasks/T1", ""); !errors.Is(err, lock.ErrInvalidArgument) {
			t.Fatalf("Release with an empty token: %v, want ErrInvalidArgument", err)
		}
		for _, f := range []func() error{
			func() error { return l.Release(ctx, ns, "bad name", g.Token) },
			func() error { return l.ForceRelease(ctx, "", "tasks/T1") },
			func() error { _, err := l.Holder(ctx, ns, "/x"); return err },
			func() error { _, err := l.List(ctx, "a/b", ""); return err },
		} {
			if err := f(); !errors.Is(err, lock.ErrInvalidArgument) {
				t.Errorf("got %v, want ErrInvalidArgument", err)
			}
		}
	})
}

func TestAcquireReleaseFence(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		before := time.Now()
		g := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second, Owner: "w1"})
		if g.Name != "tasks/T1" || g.Owner != "w1" || len(g.Token) != 32 || g.Fence <= 0 {
			t.Fatalf("grant %+v", g)
		}
		if d := g.ExpiresAt.Sub(g.AcquiredAt); d != 10*time.Second {
			t.Errorf("ExpiresAt-AcquiredAt = %v, want 10s", d)
		}
		// The counter is stored as a plain integer, and the first fence of a
		// name is seeded from the Redis clock in microseconds.
		if c, err := b.Client.Get(ctx, keys.Aux(ns, "tasks/T1", "lock-fence")).Result(); err != nil || c != strconv.FormatInt(g.Fence, 10) {
			t.Errorf("fence counter = %q, %v; want %d", c, err, g.Fence)
		}
		// It outlives the lease by a week, then goes.
		const week = 7 * 24 * time.Hour
		if d, err := b.Client.PTTL(ctx, keys.Aux(ns, "tasks/T1", "lock-fence")).Result(); err != nil || d <= week || d > week+10*time.Second {
			t.Errorf("fence counter's TTL = %v, %v; want the lease's 10 s and a week", d, err)
		}
		if lo := g.AcquiredAt.UnixMicro(); g.Fence < lo || g.Fence > lo+1000 {
			t.Errorf("first fence %d is not the grant time in µs (%d)", g.Fence, lo)
		}
		if g.AcquiredAt.Before(before.Add(-time.Second)) || g.AcquiredAt.After(time.Now().Add(time.Second)) {
			t.Errorf("AcquiredAt %v is not about now", g.AcquiredAt)
		}

		info, err := l.Holder(ctx, ns, "tasks/T1")
		if err != nil {
			t.Fatal(err)
		}
		want := lock.Info{Name: g.Name, Owner: g.Owner, Fence: g.Fence, AcquiredAt: g.AcquiredAt, ExpiresAt: g.ExpiresAt}
		if info != want {
			t.Fatalf("Holder = %+v, want %+v", info, want)
		}

		_, err = l.Acquire(ctx, ns, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Owner: "w2"})
		var he *lock.HeldError
		if !errors.Is(err, lock.ErrLockHeld) || !errors.As(err, &he) {
			t.Fatalf("second Acquire: %v, want a *HeldError", err)
		}
		if he.Holder != "w1" || !he.ExpiresAt.Equal(g.ExpiresAt) {
			t.Fatalf("HeldError = %+v, want holder w1 until %v", he, g.ExpiresAt)
		}

		// An emptied script cache (a restart, SCRIPT FLUSH) is survived:
		// Release pipelines EVALSHA and must fall back to EVAL.
		if err := b.Client.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx, ns, "tasks/T1", g.Token); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Holder(ctx, ns, "tasks/T1"); !errors.Is(err, lock.ErrNotFound) {
			t.Fatalf("Holder after Release: %v, want ErrNotFound", err)
		}
		if err := l.Release(ctx, ns, "tasks/T1", g.Token); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("second Release: %v, want ErrNotHeld", err)
		}

		prev := g.Fence
		for range 5 {
			g2 := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Owner: "w2"})
			if g2.Fence <= prev {
				t.Fatalf("fence %d after %d: not increasing", g2.Fence, prev)
			}
			if g2.Token == g.Token {
				t.Fatal("token reused")
			}
			prev = g2.Fence
			if err := l.Release(ctx, ns, "tasks/T1", g2.Token); err != nil {
				t.Fatal(err)
			}
		}

		// Fences are per name: another lock has its own, also increasing.
		o := mustAcquire(t, l, "tasks/T2", lock.AcquireRequest{TTL: time.Second})
		if o.Fence <= 0 {
			t.Fatalf("fence %d", o.Fence)
		}
	})
}

func TestWrongTokenAndExpiry(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		g := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second, Owner: "w1"})
		before, err := l.Holder(ctx, ns, "tasks/T1")
		if err != nil {
			t.Fatal(err)
		}
		wrong := strings.Repeat("0", 32)
		if err := l.Release(ctx, ns, "tasks/T1", wrong); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Release with a wrong token: %v, want ErrNotHeld", err)
		}
		if _, err := l.Refresh(ctx, ns, "tasks/T1", wrong, time.Minute); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Refresh with a wrong token: %v, want ErrNotHeld", err)
		}
		if after, err := l.Holder(ctx, ns, "tasks/T1"); err != nil || after != before {
			t.Fatalf("Holder after wrong-token calls = %+v, %v; want %+v unchanged", after, err, before)
		}
		if err := l.Release(ctx, ns, "tasks/T1", g.Token); err != nil {
			t.Fatal(err)
		}

		// After the lease ends the token is worthless, and a successor's lock
		// is untouched by it.
		g = mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 50 * time.Millisecond, Owner: "w1"})
		time.Sleep(80 * time.Millisecond)
		if _, err := l.Holder(ctx, ns, "tasks/T1"); !errors.Is(err, lock.ErrNotFound) {
			t.Fatalf("Holder after expiry: %v, want ErrNotFound", err)
		}
		if _, err := l.Refresh(ctx, ns, "tasks/T1", g.Token, time.Second); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Refresh after expiry: %v, want ErrNotHeld", err)
		}
		if _, err := l.Holder(ctx, ns, "tasks/T1"); !errors.Is(err, lock.ErrNotFound) {
			t.Fatalf("a failed Refresh revived the lock: %v", err)
		}
		g2 := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second, Owner: "w2"})
		held, _ := l.Holder(ctx, ns, "tasks/T1")
		if err := l.Release(ctx, ns, "tasks/T1", g.Token); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Release by an expired holder: %v, want ErrNotHeld", err)
		}
		if _, err := l.Refresh(ctx, ns, "tasks/T1", g.Token, time.Minute); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Refresh by an expired holder: %v, want ErrNotHeld", err)
		}
		if after, err := l.Holder(ctx, ns, "tasks/T1"); err != nil || after != held || after.Fence != g2.Fence {
			t.Fatalf("successor's lock changed: %+v, %v; want %+v", after, err, held)
		}
	})
}

func TestRefresh(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		g := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 100 * time.Millisecond, Owner: "w1"})
		r, err := l.Refresh(ctx, ns, "tasks/T1", g.Token, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r.Fence != g.Fence || r.Token != g.Token || r.Owner != "w1" || !r.AcquiredAt.Equal(g.AcquiredAt) {
			t.Fatalf("Refresh changed the grant: %+v, was %+v", r, g)
		}
		if !r.ExpiresAt.After(g.ExpiresAt.Add(time.Second)) {
			t.Fatalf("ExpiresAt %v not extended from %v", r.ExpiresAt, g.ExpiresAt)
		}
		time.Sleep(150 * time.Millisecond) // past the first lease
		info, err := l.Holder(ctx, ns, "tasks/T1")
		if err != nil {
			t.Fatalf("Holder after the original TTL: %v", err)
		}
		if !info.ExpiresAt.Equal(r.ExpiresAt) {
			t.Fatalf("Holder ExpiresAt %v, want %v", info.ExpiresAt, r.ExpiresAt)
		}
		// Refresh may shorten the lease too.
		if _, err := l.Refresh(ctx, ns, "tasks/T1", g.Token, 30*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		time.Sleep(60 * time.Millisecond)
		if _, err := l.Holder(ctx, ns, "tasks/T1"); !errors.Is(err, lock.ErrNotFound) {
			t.Fatalf("Holder after a shortened lease: %v, want ErrNotFound", err)
		}
	})
}

func TestForceRelease(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		g := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second})
		if err := l.ForceRelease(ctx, ns, "tasks/T1"); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Holder(ctx, ns, "tasks/T1"); !errors.Is(err, lock.ErrNotFound) {
			t.Fatalf("Holder after ForceRelease: %v", err)
		}
		if err := l.ForceRelease(ctx, ns, "tasks/T1"); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("ForceRelease of a free lock: %v, want ErrNotHeld", err)
		}
		if err := l.Release(ctx, ns, "tasks/T1", g.Token); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Release after ForceRelease: %v, want ErrNotHeld", err)
		}
		if _, err := l.Refresh(ctx, ns, "tasks/T1", g.Token, time.Second); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Refresh after ForceRelease: %v, want ErrNotHeld", err)
		}
		if g2 := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: time.Second}); g2.Fence <= g.Fence {
			t.Fatalf("fence %d after %d", g2.Fence, g.Fence)
		}
	})
}

func TestList(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		// Every acquire trims the index, so that the one below does.
		l := newLocker(t, b, lock.Options{TrimInterval: time.Nanosecond})
		ctx := context.Background()
		long := lock.AcquireRequest{TTL: 10 * time.Second, Owner: "w1"}
		short := lock.AcquireRequest{TTL: 40 * time.Millisecond, Owner: "w2"}
		t2 := mustAcquire(t, l, "tasks/T2", long)
		mustAcquire(t, l, "tasks/T1", long)
		mustAcquire(t, l, "tasks/T3", short)
		mustAcquire(t, l, "workers/W1", long)
		mustAcquire(t, l, "tasks", long)
		mustAcquire(t, l, "other/x", short)
		// Another namespace is listed separately.
		if _, err := l.Acquire(ctx, "other-ns", "tasks/T9", long); err != nil {
			t.Fatal(err)
		}
		time.Sleep(70 * time.Millisecond) // the short ones expire unreleased

		names := func(prefix string) []string {
			t.Helper()
			infos, err := l.List(ctx, ns, prefix)
			if err != nil {
				t.Fatal(err)
			}
			out := []string{}
			for _, in := range infos {
				h, err := l.Holder(ctx, ns, in.Name)
				if err != nil || h != in {
					t.Errorf("List entry %+v, Holder %+v, %v", in, h, err)
				}
				out = append(out, in.Name)
			}
			return out
		}
		check := func(prefix string, want ...string) {
			t.Helper()
			if got := names(prefix); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("List(%q) = %v, want %v", prefix, got, want)
			}
		}
		check("", "tasks", "tasks/T1", "tasks/T2", "workers/W1")
		check("tasks/", "tasks/T1", "tasks/T2")
		check("tasks", "tasks", "tasks/T1", "tasks/T2")
		check("workers/", "workers/W1")
		check("nothing/")

		if err := l.Release(ctx, ns, "tasks/T2", t2.Token); err != nil {
			t.Fatal(err)
		}
		check("tasks/", "tasks/T1")
		// Re-acquired after a release and refreshed: listed once.
		t2 = mustAcquire(t, l, "tasks/T2", long)
		if _, err := l.Refresh(ctx, ns, "tasks/T2", t2.Token, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		check("tasks/", "tasks/T1", "tasks/T2")
		if err := l.ForceRelease(ctx, ns, "tasks/T1"); err != nil {
			t.Fatal(err)
		}
		check("tasks/", "tasks/T2")

		infos, err := l.List(ctx, "other-ns", "")
		if err != nil || len(infos) != 1 || infos[0].Name != "tasks/T9" {
			t.Fatalf("List(other-ns) = %+v, %v", infos, err)
		}

		// The index trims entries of grants that expired unreleased.
		mustAcquire(t, l, "trigger", long)
		members, err := b.Client.ZRange(ctx, keys.Namespace(ns, "locks"), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		// Released and force-released grants were removed, expired ones
		// trimmed: one member per live lock is left.
		if len(members) != 4 {
			t.Errorf("index members %v, want the 4 live grants (tasks, tasks/T2, trigger, workers/W1)", members)
		}
		for _, m := range members {
			if strings.HasPrefix(m, "tasks/T3#") || strings.HasPrefix(m, "other/x#") || strings.HasPrefix(m, "tasks/T1#") {
				t.Errorf("dead member %q still indexed: %v", m, members)
			}
		}
	})
}

// TestRace: 1,000 goroutines try one free lock at once; exactly one wins.
func TestRace(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		const n = 1000
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []lock.Grant
			others  []error
		)
		start := make(chan struct{})
		for range n {
			wg.Go(func() {
				<-start
				g, err := l.Acquire(ctx, ns, "tasks/race", lock.AcquireRequest{TTL: 10 * time.Second})
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					winners = append(winners, g)
				} else {
					others = append(others, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%d winners, want 1", len(winners))
		}
		for _, err := range others {
			if !errors.Is(err, lock.ErrLockHeld) {
				t.Fatalf("loser got %v, want ErrLockHeld", err)
			}
		}
		info, err := l.Holder(ctx, ns, "tasks/race")
		if err != nil || info.Fence != winners[0].Fence {
			t.Fatalf("Holder = %+v, %v; winner %+v", info, err, winners[0])
		}
	})
}

// The index is trimmed along with an acquire at most once per TrimInterval
// and namespace, not at every acquire (on a real redis-server, whose
// command statistics count the trims).
func TestIndexTrimmedOncePerInterval(t *testing.T) {
	b := redistest.Real(t)
	l := newLocker(t, b, lock.Options{TrimInterval: time.Hour})
	ctx := context.Background()
	if err := b.Client.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		mustAcquire(t, l, "trim/l"+strconv.Itoa(i), lock.AcquireRequest{TTL: time.Second})
	}
	mustAcquire(t, l, "trim/again", lock.AcquireRequest{TTL: time.Second}) // the same namespace: no trim
	if _, err := l.Acquire(ctx, "other-ns", "x", lock.AcquireRequest{TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	stats, err := b.Client.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	trims := 0
	for _, line := range strings.Split(stats, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_zremrangebyscore:calls="); ok {
			trims, _ = strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
		}
	}
	if trims != 2 {
		t.Errorf("52 acquires in two namespaces trimmed %d times, want 2 (once per namespace)", trims)
	}
}
