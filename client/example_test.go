package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/memsync/memsync/client"
)

// A worker holds a task's lock while it works, keeps the lease alive, and
// stops if it loses it.
func ExampleClient_AcquireTaskLock() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:8080", client.WithWorkerID("worker-1"))
	if err != nil {
		log.Fatal(err)
	}
	l, err := c.AcquireTaskLock(ctx, "T1", 30*time.Second)
	var held *client.APIError
	if errors.Is(err, client.ErrLockHeld) && errors.As(err, &held) {
		fmt.Printf("busy: %s holds it until %s\n", held.Holder, held.LockExpiresAt)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer l.Release(context.WithoutCancel(ctx))

	lost := l.Keep(ctx)
	select {
	case <-lost:
		log.Print("lost the lock; stopping") // and the fence keeps stale writes out
	case <-time.After(time.Minute): // the work, writing with l.Fence
	}
}

// Update moves a task from pending to processing without losing anyone
// else's change: it retries when the queue changed under it.
func ExampleClient_Update() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:8080", client.WithWorkerID("worker-1"))
	if err != nil {
		log.Fatal(err)
	}
	type queue struct {
		Pending    []string `json:"pending"`
		Processing []string `json:"processing"`
	}
	_, err = c.Update(ctx, "coordination/queue", func(cur *client.Entry) (any, error) {
		var q queue
		if cur != nil {
			if err := cur.Decode(&q); err != nil {
				return nil, err
			}
		}
		if len(q.Pending) == 0 {
			return nil, errors.New("nothing to do")
		}
		return queue{Pending: q.Pending[1:], Processing: append(q.Processing, q.Pending[0])}, nil
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Reading siblings unresolved and writing a resolution back with the version
// read as context collapses them.
func ExampleResolve() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:8080", client.WithWorkerID("worker-1"))
	if err != nil {
		log.Fatal(err)
	}
	e, err := c.Get(ctx, "tasks/T1/state", client.Resolve(client.StrategySiblings))
	if err != nil {
		log.Fatal(err)
	}
	resolved := map[string]any{}
	for _, s := range e.SiblingList {
		var v map[string]any
		if err := s.Decode(&v); err != nil {
			log.Fatal(err)
		}
		for k, x := range v { // your rule here
			resolved[k] = x
		}
	}
	if _, err := c.Put(ctx, "tasks/T1/state", resolved, client.WithContext(e.Version), client.IfMatch(e.ETag)); err != nil {
		log.Fatal(err)
	}
}

// The design document's subscribe('task-sentinel/tasks/*/state', onChange):
// every change of a task's state as it happens, for as long as ctx lasts.
func ExampleClient_Watch() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.New("http://127.0.0.1:8080", client.WithNamespace("task-sentinel"))
	if err != nil {
		log.Fatal(err)
	}
	w, err := c.Watch(ctx, "tasks/*/state")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	for ev := range w.Events() {
		switch ev.Type {
		case client.EventReset:
			log.Printf("events lost (%s): read the task states again", ev.Reason)
		case client.EventPut:
			fmt.Printf("task state changed: %s %s\n", ev.Key, ev.Value)
		default: // deleted, or expired
			fmt.Printf("task state gone: %s (%s)\n", ev.Key, ev.Type)
		}
	}
	if err := w.Err(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Fatal(err)
	}
}

// The design document's write() × 100, then forceSync().
func ExampleClient_PutAsync() {
	ctx := context.Background()
	c, err := client.New("http://127.0.0.1:8080", client.WithWorkerID("worker-1"))
	if err != nil {
		log.Fatal(err)
	}
	for i := range 100 {
		if err := c.PutAsync(ctx, fmt.Sprintf("results/key-%d", i), map[string]int{"n": i}); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := c.Sync(ctx); err != nil {
		log.Fatal(err)
	}
	// All 100 are in Redis now, for every instance to read.
}
