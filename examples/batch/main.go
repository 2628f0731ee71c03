// Command batch is the design document's seventh example, batch
// operations:
//
//	for (let i = 0; i < 100; i++) await memorySync.write(`key-${i}`, value);
//	await memorySync.forceSync();
//
// as 100 PutAsync calls, each answered as soon as the server has queued the
// write (202), then Sync, after which all 100 are in Redis; every value is
// read back. Then the same 100 keys are rewritten by one Batch call, one
// request and one Redis round trip, and an atomic batch whose second
// precondition fails shows that it applies nothing.
//
//	make run                          # a server on 127.0.0.1:8080
//	go run ./examples/batch           # MEMSYNC_URL picks another server
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
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
		fmt.Fprintln(os.Stderr, "batch:", err)
		os.Exit(1)
	}
}

const (
	count    = 100 // writes
	parallel = 8   // reads in flight at once
	prefix   = "batch/"
	writer   = "batch-writer"
)

// Item is one written value.
type Item struct {
	N    int    `json:"n"`
	Name string `json:"name"`
}

func key(i int) string { return fmt.Sprintf("%skey-%03d", prefix, i) }

func run(ctx context.Context, baseURL string, out io.Writer) error {
	ns := "example-batch-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(out, "namespace %s\n", ns)

	// Keep one idle connection per concurrent call, so that every call
	// reuses one (the default keeps 2 per host).
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = parallel
	c, err := client.New(baseURL, client.WithWorkerID(writer), client.WithNamespace(ns),
		client.WithHTTPClient(&http.Client{Transport: tr}))
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()

	// write() × 100, then forceSync().
	start := time.Now()
	for i := range count {
		if err := c.PutAsync(ctx, key(i), Item{N: i, Name: "item " + strconv.Itoa(i)}, client.TTL(10*time.Minute)); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "queued %d writes in %v\n", count, time.Since(start).Round(time.Millisecond))
	flushed, err := c.Sync(ctx)
	if err != nil {
		return err
	}
	// The server also flushes on its own (every 100 ms, and whenever 100
	// writes wait), so this call may find fewer than 100 left, or none.
	fmt.Fprintf(out, "synced: every queued write is in Redis (this sync flushed %d)\n", flushed)

	keys, err := c.Keys(ctx, prefix)
	if err != nil {
		return err
	}
	if len(keys) != count {
		return fmt.Errorf("listed %d keys, want %d", len(keys), count)
	}
	fmt.Fprintf(out, "listed %d keys under %s: %s … %s\n", len(keys), prefix, keys[0], keys[len(keys)-1])

	start = time.Now()
	err = forEach(ctx, count, func(ctx context.Context, i int) error {
		e, err := c.Get(ctx, key(i))
		if err != nil {
			return err
		}
		return check(e, i, 1)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "read back %d values in %v: all match\n", count, time.Since(start).Round(time.Millisecond))

	// The same 100 keys rewritten in one request.
	ops := make([]client.BatchOp, count)
	for i := range ops {
		ops[i] = client.BatchOp{Op: client.OpPut, Key: key(i), Value: Item{N: i, Name: "item " + strconv.Itoa(i) + ", batched"},
			TTL: new(10 * time.Minute)}
	}
	start = time.Now()
	results, err := c.Batch(ctx, ops, false)
	if err != nil {
		return err
	}
	statuses := map[int]int{}
	for i, r := range results {
		if r.Err != nil {
			return fmt.Errorf("batch op %d: %w", i, r.Err)
		}
		if err := check(r.Entry, i, 2); err != nil {
			return err
		}
		statuses[r.Status]++
	}
	first, last := results[0].Entry, results[count-1].Entry
	fmt.Fprintf(out, "batch of %d puts in one request (%v): %d × %d; %s at version %v … %s at version %v\n",
		count, time.Since(start).Round(time.Millisecond), statuses[http.StatusOK], http.StatusOK,
		first.Key, first.Version, last.Key, last.Version)

	// All or nothing: the second op's precondition fails, so the first
	// does not apply either.
	_, err = c.Batch(ctx, []client.BatchOp{
		{Op: client.OpPut, Key: key(0), Value: Item{N: -1, Name: "never written"}, IfMatch: first.ETag},
		{Op: client.OpPut, Key: key(1), Value: Item{N: -1, Name: "never written"}, IfMatch: `"stale"`},
	}, true)
	var refused *client.APIError
	if !errors.Is(err, client.ErrPreconditionFailed) || !errors.As(err, &refused) {
		return fmt.Errorf("atomic batch with a stale precondition: %v, want precondition_failed", err)
	}
	e, err := c.Get(ctx, key(0))
	if err != nil {
		return err
	}
	if err := check(e, 0, 2); err != nil {
		return err
	}
	fmt.Fprintf(out, "atomic batch refused: %d %s at op %d; nothing applied (%s unchanged)\n",
		refused.Status, refused.Code, refused.Op, key(0))
	return nil
}

// check verifies that e holds item i as the writer's write number writes.
func check(e *client.Entry, i int, writes uint64) error {
	var it Item
	if err := e.Decode(&it); err != nil {
		return err
	}
	if it.N != i || e.Writer != writer || e.Version[writer] != writes {
		return fmt.Errorf("%s holds %+v written by %s at version %v; want item %d at %s:%d", e.Key, it, e.Writer, e.Version, i, writer, writes)
	}
	return nil
}

// forEach calls fn for 0..n-1, parallel at a time, and returns the first
// error (after which the remaining calls are skipped).
func forEach(ctx context.Context, n int, fn func(context.Context, int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	errs := make(chan error, parallel)
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if len(all) > 0 {
		return all[0]
	}
	return ctx.Err()
}
