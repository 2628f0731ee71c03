package lock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/redistest"
)

// noPoll makes the safety-net retry too slow to matter, so that a prompt
// grant proves the event path (release message, local release or expiry
// timer) woke the waiter.
var noPoll = lock.Options{RetryInterval: time.Minute}

type result struct {
	g   lock.Grant
	err error
	at  time.Time // when Acquire returned
}

func acquireAsync(ctx context.Context, l *lock.Locker, name string, req lock.AcquireRequest) <-chan result {
	ch := make(chan result, 1)
	go func() {
		g, err := l.Acquire(ctx, ns, name, req)
		ch <- result{g, err, time.Now()}
	}()
	return ch
}

func TestWaitWokenByRelease(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		for _, tc := range []struct {
			name string
			same bool
		}{
			{"release on another instance", false}, // through pub/sub
			{"release on the same instance", true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				waiters := newLocker(t, b, noPoll)
				holders := waiters
				if !tc.same {
					holders = newLocker(t, b, noPoll)
				}
				ctx := context.Background()
				h := mustAcquire(t, holders, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second, Owner: "h"})
				ch := acquireAsync(ctx, waiters, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Wait: 2 * time.Second, Owner: "w"})
				time.Sleep(100 * time.Millisecond)
				select {
				case r := <-ch:
					t.Fatalf("waiter returned while the lock was held: %+v", r)
				default:
				}
				released := time.Now()
				if err := holders.Release(ctx, ns, "tasks/T1", h.Token); err != nil {
					t.Fatal(err)
				}
				r := <-ch
				if r.err != nil {
					t.Fatalf("waiter: %v", r.err)
				}
				d := r.at.Sub(released)
				t.Logf("granted %v after the release", d)
				if d > 200*time.Millisecond {
					t.Errorf("granted %v after the release, want < 200ms", d)
				}
				if r.g.Fence <= h.Fence || r.g.Owner != "w" {
					t.Errorf("grant %+v after %+v", r.g, h)
				}
				if err := waiters.Release(ctx, ns, "tasks/T1", r.g.Token); err != nil {
					t.Fatal(err)
				}
			})
		}
	})
}

func TestWaitWokenByExpiry(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, noPoll)
		h := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 300 * time.Millisecond})
		start := time.Now()
		r := <-acquireAsync(context.Background(), l, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Wait: 2 * time.Second})
		if r.err != nil {
			t.Fatalf("waiter: %v", r.err)
		}
		late := r.at.Sub(h.ExpiresAt)
		t.Logf("waited %v; granted %v after the holder's expiry", r.at.Sub(start), late)
		if r.g.AcquiredAt.Before(h.ExpiresAt) {
			t.Errorf("granted at %v, before the holder's expiry %v", r.g.AcquiredAt, h.ExpiresAt)
		}
		if late > 100*time.Millisecond {
			t.Errorf("granted %v after the holder's expiry, want < 100ms", late)
		}
	})
}

// TestWaitFIFO: waiters of one Locker get the lock in arrival order.
func TestWaitFIFO(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		h := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second})
		var (
			mu    sync.Mutex
			order []int
			wg    sync.WaitGroup
		)
		for i := 1; i <= 3; i++ {
			wg.Go(func() {
				g, err := l.Acquire(ctx, ns, "tasks/T1", lock.AcquireRequest{TTL: 5 * time.Second, Wait: 5 * time.Second})
				if err != nil {
					t.Errorf("waiter %d: %v", i, err)
					return
				}
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
				if err := l.Release(ctx, ns, "tasks/T1", g.Token); err != nil {
					t.Errorf("waiter %d: release: %v", i, err)
				}
			})
			time.Sleep(30 * time.Millisecond) // let waiter i queue first
		}
		if err := l.Release(ctx, ns, "tasks/T1", h.Token); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if len(order) != 3 || order[0] != 1 || order[1] != 2 || order[2] != 3 {
			t.Fatalf("grant order %v, want [1 2 3]", order)
		}
	})
}

// TestWaitCancel: a cancelled waiter returns at once with ctx's error and
// leaves the queue, so the waiter behind it is served.
func TestWaitCancel(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, noPoll)
		h := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second})
		ctx1, cancel := context.WithCancel(context.Background())
		defer cancel()
		first := acquireAsync(ctx1, l, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Wait: 5 * time.Second})
		time.Sleep(30 * time.Millisecond)
		second := acquireAsync(context.Background(), l, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Wait: 5 * time.Second})
		time.Sleep(70 * time.Millisecond)

		cancelled := time.Now()
		cancel()
		r := <-first
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("cancelled waiter: %v, want context.Canceled", r.err)
		}
		if d := r.at.Sub(cancelled); d > 50*time.Millisecond {
			t.Errorf("cancelled waiter returned after %v, want < 50ms", d)
		}

		time.Sleep(50 * time.Millisecond)
		select {
		case r := <-second:
			t.Fatalf("second waiter returned while the lock was held: %+v", r)
		default:
		}
		released := time.Now()
		if err := l.Release(context.Background(), ns, "tasks/T1", h.Token); err != nil {
			t.Fatal(err)
		}
		r = <-second
		if r.err != nil {
			t.Fatalf("second waiter: %v", r.err)
		}
		if d := r.at.Sub(released); d > 200*time.Millisecond {
			t.Errorf("second waiter granted %v after the release, want < 200ms", d)
		}
	})
}

// TestWaitDeadline: a waiter whose Wait runs out gets the holder's details.
func TestWaitDeadline(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		h := mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second, Owner: "h"})
		start := time.Now()
		_, err := l.Acquire(context.Background(), ns, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Wait: 300 * time.Millisecond})
		took := time.Since(start)
		var he *lock.HeldError
		if !errors.As(err, &he) || he.Holder != "h" || !he.ExpiresAt.Equal(h.ExpiresAt) {
			t.Fatalf("Acquire: %v, want a HeldError naming h until %v", err, h.ExpiresAt)
		}
		if took < 300*time.Millisecond || took > 450*time.Millisecond {
			t.Errorf("gave up after %v, want about 300ms", took)
		}
	})
}

func TestWaitClosed(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, noPoll)
		mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second})
		ch := acquireAsync(context.Background(), l, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Wait: 5 * time.Second})
		time.Sleep(50 * time.Millisecond)
		closed := time.Now()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		r := <-ch
		if !errors.Is(r.err, lock.ErrClosed) || r.at.Sub(closed) > 50*time.Millisecond {
			t.Fatalf("waiter after Close: %v after %v, want ErrClosed at once", r.err, r.at.Sub(closed))
		}
		if _, err := l.Acquire(context.Background(), ns, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Wait: time.Second}); !errors.Is(err, lock.ErrClosed) {
			t.Fatalf("waiting Acquire on a closed Locker: %v", err)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

// TestWaitSafetyNet: when the release message is lost (here the lock key is
// deleted by hand, which publishes nothing), the head waiter still gets the
// lock within about one RetryInterval.
func TestWaitSafetyNet(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{RetryInterval: 100 * time.Millisecond})
		mustAcquire(t, l, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second})
		ch := acquireAsync(context.Background(), l, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Wait: 2 * time.Second})
		time.Sleep(30 * time.Millisecond)
		deleted := time.Now()
		if err := b.Client.Del(context.Background(), keys.Aux(ns, "tasks/T1", "lock")).Err(); err != nil {
			t.Fatal(err)
		}
		r := <-ch
		if r.err != nil {
			t.Fatalf("waiter: %v", r.err)
		}
		if d := r.at.Sub(deleted); d > 250*time.Millisecond {
			t.Errorf("granted %v after the silent release, want about 100ms", d)
		}
	})
}

// A release announces itself on the namespace's release channel only while
// waiters stand in the lock's line: with nobody waiting, the message would
// cost Redis a write to every instance and every instance a read, for
// nothing.
func TestReleaseAnnouncedOnlyToWaiters(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		sub := b.Client.Subscribe(ctx, keys.Namespace(ns, "lock-released"))
		t.Cleanup(func() { _ = sub.Close() })
		if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
			t.Fatal(err)
		}
		msgs := sub.Channel()
		holders, waiters := newLocker(t, b, noPoll), newLocker(t, b, noPoll)

		g := mustAcquire(t, holders, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second, Owner: "h"})
		if err := holders.Release(ctx, ns, "tasks/T1", g.Token); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-msgs:
			t.Errorf("release without waiters announced %q", m.Payload)
		case <-time.After(200 * time.Millisecond):
		}

		g = mustAcquire(t, holders, "tasks/T1", lock.AcquireRequest{TTL: 10 * time.Second, Owner: "h"})
		ch := acquireAsync(ctx, waiters, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Wait: 5 * time.Second, Owner: "w"})
		deadline := time.Now().Add(2 * time.Second)
		for {
			n, err := b.Client.ZCard(ctx, keys.Aux(ns, "tasks/T1", "lock-line")).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the waiter never stood in line")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err := holders.Release(ctx, ns, "tasks/T1", g.Token); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-msgs:
			if m.Payload != "tasks/T1" {
				t.Errorf("release announced %q, want tasks/T1", m.Payload)
			}
		case <-time.After(2 * time.Second):
			t.Error("release with a waiter in line was not announced")
		}
		if r := <-ch; r.err != nil || r.g.Owner != "w" {
			t.Errorf("waiter: %+v, %v", r.g, r.err)
		}
	})
}
