// Command queue is the design document's fourth example, queue management:
// producers add tasks to the shared queue (coordination/queue) at the same
// time without losing any, workers claim tasks from it without ever claiming
// one twice, and the assignments and metrics are shared the same way.
//
// Two tools do this. Plain writes (SyncQueue, SyncAssignments, SyncMetrics)
// are kept side by side when concurrent and deep-merged on read, lists
// unioned: good for adding. Taking a task out needs a compare-and-set:
// Update reads the queue, and writes the change with the version it read,
// failing (and retrying) if anyone changed the queue in between.
//
//	make run                          # a server on 127.0.0.1:8080
//	go run ./examples/queue           # MEMSYNC_URL picks another server
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
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
		fmt.Fprintln(os.Stderr, "queue:", err)
		os.Exit(1)
	}
}

// Queue is the design document's queue value.
type Queue struct {
	Pending    []string `json:"pending"`
	Processing []string `json:"processing"`
}

// queueKey is the key behind SyncQueue and Queue, for Update.
const queueKey = "coordination/queue"

// errEmpty stops a claim: there is nothing pending.
var errEmpty = errors.New("queue empty")

func run(ctx context.Context, baseURL string, out io.Writer) error {
	ns := "example-queue-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(out, "namespace %s\n", ns)
	newClient := func(worker string) (*client.Client, error) {
		return client.New(baseURL, client.WithWorkerID(worker), client.WithNamespace(ns))
	}

	// Two producers enqueue at the same time.
	batches := map[string][]string{"producer-1": {"T1", "T2"}, "producer-2": {"T3", "T4"}}
	var wg sync.WaitGroup
	errs := make(chan error, len(batches))
	for producer, tasks := range batches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := newClient(producer)
			if err == nil {
				_, err = c.SyncQueue(ctx, Queue{Pending: tasks, Processing: []string{}})
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	observer, err := newClient("observer")
	if err != nil {
		return err
	}
	e, err := observer.Queue(ctx)
	if err != nil {
		return err
	}
	var q Queue
	if err := e.Decode(&q); err != nil {
		return err
	}
	fmt.Fprintf(out, "two producers enqueued concurrently: pending %v (strategy %s, %d siblings merged)\n", q.Pending, e.Strategy, e.Siblings)
	if len(q.Pending) != 4 {
		return fmt.Errorf("pending %v: want all 4 tasks", q.Pending)
	}
	fmt.Fprintf(out, "pending has %d tasks\n", len(q.Pending))

	// Three workers claim tasks until none is left.
	var mu sync.Mutex
	claimedBy := map[string][]string{} // task → workers that claimed it
	workers := []string{"worker-1", "worker-2", "worker-3"}
	errs = make(chan error, len(workers))
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- work(ctx, newClient, w, func(task string) {
				mu.Lock()
				defer mu.Unlock()
				claimedBy[task] = append(claimedBy[task], w)
				fmt.Fprintf(out, "%s claimed %s\n", w, task)
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}

	if e, err = observer.Queue(ctx); err != nil {
		return err
	}
	if err := e.Decode(&q); err != nil {
		return err
	}
	fmt.Fprintf(out, "queue now: pending %v, processing %v\n", q.Pending, q.Processing)
	var assignments map[string]string
	if e, err = observer.Assignments(ctx); err != nil {
		return err
	}
	if err := e.Decode(&assignments); err != nil {
		return err
	}
	fmt.Fprintf(out, "assignments (merged from %d workers' writes): %s\n", e.Siblings, e.Value)
	if e, err = observer.Metrics(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "metrics: %s\n", e.Value)

	for _, tasks := range batches {
		for _, task := range tasks {
			if n := len(claimedBy[task]); n != 1 {
				return fmt.Errorf("%s claimed %d times (%v)", task, n, claimedBy[task])
			}
			if assignments[task] != claimedBy[task][0] {
				return fmt.Errorf("assignment of %s is %q, want %q", task, assignments[task], claimedBy[task][0])
			}
		}
	}
	if len(q.Pending) != 0 || len(q.Processing) != 4 {
		return fmt.Errorf("queue %+v: want nothing pending, 4 processing", q)
	}
	fmt.Fprintf(out, "each of the %d tasks was claimed exactly once\n", len(claimedBy))
	return nil
}

// work claims tasks for worker until the queue is empty, recording each
// claim in the shared assignments, then publishes its count to the metrics.
func work(ctx context.Context, newClient func(string) (*client.Client, error), worker string, claimed func(task string)) error {
	c, err := newClient(worker)
	if err != nil {
		return err
	}
	mine := map[string]string{} // this worker's assignments
	for {
		var task string
		_, err := c.Update(ctx, queueKey, func(cur *client.Entry) (any, error) {
			var q Queue
			if cur != nil {
				if err := cur.Decode(&q); err != nil {
					return nil, err
				}
			}
			if len(q.Pending) == 0 {
				return nil, errEmpty
			}
			sort.Strings(q.Pending) // lowest id first
			task = q.Pending[0]
			return Queue{Pending: q.Pending[1:], Processing: append(q.Processing, task)}, nil
		})
		if errors.Is(err, errEmpty) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: claim: %w", worker, err)
		}
		claimed(task)
		mine[task] = worker
		// A plain write replaces this worker's own earlier write and is
		// merged with other workers' writes: so each worker writes all of
		// its assignments, and the server merges the workers' maps.
		if _, err := c.SyncAssignments(ctx, mine); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond) // the work
	}
	_, err = c.SyncMetrics(ctx, map[string]any{worker: map[string]int{"claimed": len(mine)}})
	return err
}
