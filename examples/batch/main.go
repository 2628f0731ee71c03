// Command batch is the design document's seventh example, batch operations:
// 100 writes, then every value read back.
//
// The design document queues writes in memory and flushes them in batches
// (write, then forceSync). memsync's batch endpoint (POST /v1/batch) and
// queued writes (?async=true, POST /v1/sync) are not built yet, so this
// example makes 100 plain writes, several at a time over kept-alive
// connections; each is in Redis when its call returns, so there is nothing
// to flush.
//
//	make run                          # a server on 127.0.0.1:8080
//	go run ./examples/batch           # MEMSYNC_URL picks another server
package main

import (
	"context"
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
	parallel = 8   // in flight at once
	prefix   = "batch/"
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
	c, err := client.New(baseURL, client.WithWorkerID("batch-writer"), client.WithNamespace(ns),
		client.WithHTTPClient(&http.Client{Transport: tr}))
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()

	start := time.Now()
	err = forEach(ctx, count, func(ctx context.Context, i int) error {
		_, err := c.Put(ctx, key(i), Item{N: i, Name: "item " + strconv.Itoa(i)}, client.TTL(10*time.Minute))
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %d keys in %v (%d at a time)\n", count, time.Since(start).Round(time.Millisecond), parallel)

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
		var it Item
		if err := e.Decode(&it); err != nil {
			return err
		}
		if it.N != i || e.Writer != "batch-writer" {
			return fmt.Errorf("%s holds %+v written by %s", key(i), it, e.Writer)
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "read back %d values in %v: all match\n", count, time.Since(start).Round(time.Millisecond))
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
