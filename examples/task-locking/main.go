// Command task-locking is the design document's second example, task
// execution with locking: two workers race for one task's lock; the loser
// is told who holds it and until when, then waits for it; each grant carries
// a larger fencing token, which the work hands to the storage it writes so
// that a holder whose lease silently ran out cannot overwrite a newer one's
// result.
//
//	make run                          # a server on 127.0.0.1:8080
//	go run ./examples/task-locking    # MEMSYNC_URL picks another server
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/memsync/memsync/client"
)

func main() {
	baseURL := os.Getenv("MEMSYNC_URL")
	if baseURL == "" {
		baseURL = "http://127.0.0.1:8080"
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := run(ctx, baseURL, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "task-locking:", err)
		os.Exit(1)
	}
}

// lockTTL is the lease. The design document asks for 30 s; Keep refreshes
// it every third, so a short one shows the refreshes in a short run.
const lockTTL = 900 * time.Millisecond

func run(ctx context.Context, baseURL string, out io.Writer) error {
	ns := "example-locking-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	const task = "T1"
	w1, err := client.New(baseURL, client.WithWorkerID("worker-1"), client.WithNamespace(ns))
	if err != nil {
		return err
	}
	w2, err := client.New(baseURL, client.WithWorkerID("worker-2"), client.WithNamespace(ns))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "namespace %s, task %s\n", ns, task)

	// worker-1 gets the lock.
	l1, err := w1.AcquireTaskLock(ctx, task, lockTTL)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "worker-1: acquired lock %s, fence %d, expires %s\n", l1.Name, l1.Fence, l1.ExpiresAt().Format(time.RFC3339Nano))

	// worker-2 tries too, and is told who holds it.
	_, err = w2.AcquireTaskLock(ctx, task, lockTTL)
	var ae *client.APIError
	if !errors.Is(err, client.ErrLockHeld) || !errors.As(err, &ae) {
		return fmt.Errorf("worker-2 acquired a held lock (err %v)", err)
	}
	fmt.Fprintf(out, "worker-2: %d %s: held by %s until %s, retry after %v\n",
		ae.Status, ae.Code, ae.Holder, ae.LockExpiresAt.Format(time.RFC3339Nano), ae.RetryAfter)

	// worker-2 now waits for it (the server wakes it on release), while
	// worker-1 works under the lock for longer than one TTL: Keep refreshes
	// the lease and says if it is lost.
	type result struct {
		l   *client.Lock
		err error
	}
	waited := make(chan result, 1)
	go func() {
		l, err := w2.Lock(ctx, client.TaskLockName(task), client.LockOptions{TTL: lockTTL, Wait: 10 * time.Second})
		waited <- result{l, err}
	}()

	if err := work(ctx, w1, l1, task, 2*lockTTL, out); err != nil {
		return err
	}
	if err := l1.Release(ctx); err != nil {
		return err
	}
	fmt.Fprintln(out, "worker-1: released")

	r := <-waited
	if r.err != nil {
		return fmt.Errorf("worker-2 waiting for the lock: %w", r.err)
	}
	l2 := r.l
	fmt.Fprintf(out, "worker-2: acquired after waiting, fence %d\n", l2.Fence)
	if l2.Fence <= l1.Fence {
		return fmt.Errorf("fence went from %d to %d; it must increase", l1.Fence, l2.Fence)
	}
	fmt.Fprintf(out, "fence increased: %d -> %d\n", l1.Fence, l2.Fence)

	holder, err := w1.TaskLockHolder(ctx, task)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "holder of %s: %s (fence %d)\n", holder.Name, holder.Owner, holder.Fence)

	// worker-1's old handle is worthless now: its token no longer holds.
	if err := l1.Refresh(ctx, 0); !errors.Is(err, client.ErrLockNotHeld) {
		return fmt.Errorf("refresh with a released token: %v, want lock_not_held", err)
	}
	fmt.Fprintln(out, "worker-1: refresh with the old token: lock_not_held")

	if err := l2.Release(ctx); err != nil {
		return err
	}
	if _, err := w1.TaskLockHolder(ctx, task); !errors.Is(err, client.ErrNotFound) {
		return fmt.Errorf("holder after the last release: %v, want not found", err)
	}
	fmt.Fprintln(out, "worker-2: released; nobody holds the lock")
	return nil
}

// work stands for the protected work: it runs for d under the lock, and
// stops early if the lock is lost. The fence goes with every write.
func work(ctx context.Context, c *client.Client, l *client.Lock, task string, d time.Duration, out io.Writer) error {
	lost := l.Keep(ctx)
	if _, err := c.SyncTaskState(ctx, task, map[string]any{"status": "running", "worker": c.WorkerID(), "fence": l.Fence}); err != nil {
		return err
	}
	select {
	case <-lost:
		// It is not safe to assume the lock is held: stop, and let the
		// fence reject anything already on its way.
		return fmt.Errorf("%s: lost the lock of %s", c.WorkerID(), task)
	case <-time.After(d):
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, err := c.SyncTaskState(ctx, task, map[string]any{"status": "done", "worker": c.WorkerID(), "fence": l.Fence}); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: worked %v (longer than the %v TTL; Keep refreshed it), lease now ends %s\n",
		c.WorkerID(), d, lockTTL, l.ExpiresAt().Format(time.RFC3339Nano))
	return nil
}
