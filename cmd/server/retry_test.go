package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

// A write whose reply does not come within the Redis read timeout may have
// run, and may still run once Redis gets to it, so the client must not send
// it again: a script run twice applies its writes twice (second versions,
// second events, a conditional write answered 412 for a change it made
// itself, a lock refused to the request that took it). Here a batch of
// 1,000 creates takes Redis longer than a read timeout cut to 1 ms, on a
// client otherwise configured as the server's (tune): the batch fails with
// ErrUnavailable, and Redis applied it exactly once.
func TestTimedOutWriteIsNotSentAgain(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	opts := tune(&redis.Options{Addr: srv.Addr})
	opts.ReadTimeout = time.Millisecond
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	s, err := store.New(rdb, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ops := make([]store.BatchOp, 1000)
	for i := range ops {
		ops[i] = store.BatchOp{Kind: store.OpPut, Namespace: "test", Key: fmt.Sprintf("tasks/T%d/state", i),
			PutRequest: store.PutRequest{Value: json.RawMessage(`{"status":"running"}`), Writer: "w1"}}
	}
	if _, err := s.Batch(ctx, ops, false); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a batch slower than the read timeout: %v, want ErrUnavailable", err)
	}
	// Redis got the batch whole and ran it once.
	c := srv.Client(t)
	seq, err := c.Get(ctx, "ms:{#memsync}#events-seq").Int()
	if err != nil || seq != len(ops) {
		t.Errorf("events logged: %d, %v; want %d (the batch ran once)", seq, err, len(ops))
	}
	clocks, err := c.HGet(ctx, "ms:{test/tasks/T0}/state", "clocks").Result()
	if err != nil || clocks != "1|w1|w1=1" {
		t.Errorf("tasks/T0/state clocks = %q, %v; want one write by w1", clocks, err)
	}
}
