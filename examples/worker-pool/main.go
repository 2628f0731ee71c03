// Command worker-pool shows what a fleet of workers reaches for once it
// shares more than state: a work queue, from which workers claim tasks for
// a visibility timeout, so that a task whose worker crashed is delivered
// again; a semaphore, so that at most two of three workers call a
// rate-limited API at once (the third is told the semaphore is full, then
// waits in line for a permit); and claims bound to a worker's heartbeat
// (ephemeral keys), so that a task claimed by a worker that crashes is free
// again, for another worker that watches for it, without anyone cleaning
// up.
//
//	make run                         # a server on 127.0.0.1:8080
//	go run ./examples/worker-pool    # MEMSYNC_URL picks another server
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
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
		fmt.Fprintln(os.Stderr, "worker-pool:", err)
		os.Exit(1)
	}
}

// heartbeatTTL is short so that a crash shows in a short run; a real
// worker beats every few seconds with a TTL of 30 s.
const heartbeatTTL = time.Second

func run(ctx context.Context, baseURL string, out io.Writer) error {
	ns := "example-pool-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(out, "namespace %s\n", ns)
	workers := make([]*client.Client, 3)
	stops := make([]func(), 3)
	for i := range workers {
		c, err := client.New(baseURL, client.WithWorkerID(fmt.Sprintf("worker-%d", i+1)), client.WithNamespace(ns))
		if err != nil {
			return err
		}
		if _, err := c.Heartbeat(ctx, client.HeartbeatTTL(heartbeatTTL)); err != nil {
			return err
		}
		workers[i] = c
		stops[i] = c.StartHeartbeat(ctx, heartbeatTTL/3, client.HeartbeatTTL(heartbeatTTL))
		defer stops[i]()
	}
	if err := workTheQueue(ctx, workers, out); err != nil {
		return err
	}
	if err := shareTheAPI(ctx, workers, out); err != nil {
		return err
	}
	return takeOverAClaim(ctx, workers, stops[0], out)
}

// workTheQueue has workers take 6 tasks from a queue. worker-1 claims one
// and crashes before acking it; once its claim's visibility timeout passes,
// another worker's claim gets the task again, attempt 2.
func workTheQueue(ctx context.Context, workers []*client.Client, out io.Writer) error {
	const queue = "tasks"
	for i := 1; i <= 6; i++ {
		if _, err := workers[0].Enqueue(ctx, queue, map[string]any{"task": fmt.Sprintf("T%d", i)}, client.EnqueueOptions{}); err != nil {
			return err
		}
	}
	lost, err := workers[0].Claim(ctx, queue, client.ClaimOptions{Visibility: 300 * time.Millisecond})
	if err != nil || len(lost) != 1 {
		return fmt.Errorf("worker-1's claim: %v, %v", lost, err)
	}
	fmt.Fprintf(out, "worker-1 claimed message %s, then crashed\n", lost[0].ID)

	var mu sync.Mutex
	done := map[string]int{} // task → attempts of the claim that did it
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, w := range workers[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				finished := len(done) == 6
				mu.Unlock()
				if finished {
					return
				}
				msgs, err := w.Claim(ctx, queue, client.ClaimOptions{Visibility: 10 * time.Second, Wait: time.Second})
				if err != nil {
					errs <- err
					return
				}
				for _, m := range msgs {
					var job struct{ Task string }
					if err := m.Decode(&job); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					done[job.Task] = m.Attempts
					mu.Unlock()
					if err := m.Ack(ctx); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if err := lost[0].Ack(ctx); !errors.Is(err, client.ErrNotClaimed) {
		return fmt.Errorf("worker-1's late ack: %v, want ErrNotClaimed", err)
	}
	fmt.Fprintf(out, "6 tasks done by worker-2 and worker-3; T1 on attempt %d; worker-1's late ack: not_claimed\n", done["T1"])
	return nil
}

// shareTheAPI has three workers call an API that allows two callers at once.
func shareTheAPI(ctx context.Context, workers []*client.Client, out io.Writer) error {
	const api, limit = "apis/geocoder", 2
	opts := client.LockOptions{TTL: 10 * time.Second}
	p1, err := workers[0].AcquirePermit(ctx, api, limit, opts)
	if err != nil {
		return err
	}
	p2, err := workers[1].AcquirePermit(ctx, api, limit, opts)
	if err != nil {
		return err
	}
	_, err = workers[2].AcquirePermit(ctx, api, limit, opts)
	var apiErr *client.APIError
	if !errors.Is(err, client.ErrSemaphoreFull) || !errors.As(err, &apiErr) {
		return fmt.Errorf("worker-3 got %v, want the semaphore full", err)
	}
	fmt.Fprintf(out, "worker-3: 409 semaphore_full: %d holders, the first until %s\n", apiErr.Holders, apiErr.LockExpiresAt.Format(time.RFC3339))

	// worker-3 waits in line; worker-1's release hands it the permit.
	got := make(chan error, 1)
	go func() {
		opts := opts
		opts.Wait = 10 * time.Second
		p3, err := workers[2].AcquirePermit(ctx, api, limit, opts)
		if err == nil {
			fmt.Fprintln(out, "worker-3: permit after waiting")
			err = p3.Release(ctx)
		}
		got <- err
	}()
	for {
		info, err := workers[0].Semaphore(ctx, api)
		if err != nil {
			return err
		}
		if info.Waiters == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p1.Release(ctx); err != nil {
		return err
	}
	if err := <-got; err != nil {
		return err
	}
	if err := p2.Release(ctx); err != nil {
		return err
	}

	// Then all three call it 5 times each, never more than two at once.
	var calling, most atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, len(workers))
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				opts := opts
				opts.Wait = 10 * time.Second
				p, err := w.AcquirePermit(ctx, api, limit, opts)
				if err != nil {
					errs <- err
					return
				}
				n := calling.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(20 * time.Millisecond) // the call
				calling.Add(-1)
				if err := p.Release(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	fmt.Fprintf(out, "15 calls by 3 workers, at most %d at once\n", most.Load())
	if most.Load() > limit {
		return fmt.Errorf("%d callers at once, limit %d", most.Load(), limit)
	}
	return nil
}

// takeOverAClaim has worker-1 claim a task with a key bound to its
// heartbeat, then crash (its beats stop); worker-2, watching the claims,
// sees the claim deleted once the heartbeat expired, and claims the task.
func takeOverAClaim(ctx context.Context, workers []*client.Client, crash func(), out io.Writer) error {
	const claim = "tasks/T1/claim"
	if _, err := workers[0].Put(ctx, claim, "worker-1", client.Ephemeral(), client.IfNoneMatch()); err != nil {
		return err
	}
	fmt.Fprintln(out, "worker-1 claimed T1 (bound to its heartbeat)")
	w, err := workers[1].Watch(ctx, "tasks/*/claim", client.Types(client.EventDelete))
	if err != nil {
		return err
	}
	defer w.Close()
	// A claim held by a live worker is refused.
	if _, err := workers[1].Put(ctx, claim, "worker-2", client.Ephemeral(), client.IfNoneMatch()); !errors.Is(err, client.ErrPreconditionFailed) {
		return fmt.Errorf("worker-2 claimed a held task: %v", err)
	}

	crash()
	crashed := time.Now()
	fmt.Fprintln(out, "worker-1 crashed")
	select {
	case e, ok := <-w.Events():
		if !ok {
			return fmt.Errorf("the watch ended: %v", w.Err())
		}
		fmt.Fprintf(out, "%s deleted %.1f s after worker-1 stopped beating\n", e.Key, time.Since(crashed).Seconds())
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, err := workers[1].Put(ctx, claim, "worker-2", client.Ephemeral(), client.IfNoneMatch()); err != nil {
		return err
	}
	fmt.Fprintln(out, "worker-2 claimed T1")
	return nil
}
