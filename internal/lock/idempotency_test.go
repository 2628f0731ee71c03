package lock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/redistest"
)

// An acquire sent again under its idempotency key, while the grant it made
// holds the lock, gets that grant again, token and fence included, instead
// of being refused for the lock it holds itself. Once the grant ends the
// key means nothing: the next acquire under it is a new grant.
func TestIdempotentAcquire(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		l := newLocker(t, b, lock.Options{})
		ctx := context.Background()
		req := lock.AcquireRequest{TTL: 10 * time.Second, Owner: "w1", IdempotencyKey: "take-T1"}
		first := mustAcquire(t, l, "tasks/T1", req)
		if first.Replayed {
			t.Fatal("the first acquire is marked Replayed")
		}
		again := mustAcquire(t, l, "tasks/T1", req)
		if !again.Replayed || again.Token != first.Token || again.Fence != first.Fence ||
			!again.AcquiredAt.Equal(first.AcquiredAt) || !again.ExpiresAt.Equal(first.ExpiresAt) {
			t.Errorf("the acquire again = %+v, want the first grant %+v, Replayed", again, first)
		}
		waiting := req
		waiting.Wait = 5 * time.Second
		if g, err := l.Acquire(ctx, ns, "tasks/T1", waiting); err != nil || g.Token != first.Token {
			t.Errorf("a waiting acquire under the key: %+v, %v; want the first grant at once", g, err)
		}

		other := req
		other.TTL = time.Second
		if _, err := l.Acquire(ctx, ns, "tasks/T1", other); !errors.Is(err, lock.ErrInvalidArgument) {
			t.Errorf("the key with another TTL: %v, want ErrInvalidArgument", err)
		}
		other = req
		other.IdempotencyKey = "take-T1-again"
		if _, err := l.Acquire(ctx, ns, "tasks/T1", other); !errors.Is(err, lock.ErrLockHeld) {
			t.Errorf("another key: %v, want ErrLockHeld", err)
		}
		if _, err := l.Acquire(ctx, ns, "tasks/T1", lock.AcquireRequest{TTL: time.Second, Owner: "w1"}); !errors.Is(err, lock.ErrLockHeld) {
			t.Errorf("no key: %v, want ErrLockHeld", err)
		}
		if s := l.Stats(); s.Grants != 1 || s.Replayed != 2 {
			t.Errorf("grants counted = %d, replayed %d; want 1, 2: a grant given again is not a new one", s.Grants, s.Replayed)
		}

		// The token given again releases the lock.
		if err := l.Release(ctx, ns, "tasks/T1", again.Token); err != nil {
			t.Fatalf("release with the token given again: %v", err)
		}
		next := mustAcquire(t, l, "tasks/T1", req)
		if next.Replayed || next.Token == first.Token || next.Fence <= first.Fence {
			t.Errorf("the key after the release = %+v; want a new grant, fence above %d", next, first.Fence)
		}
	})
}
