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
// ErrUnavailable, and Redis applies it exactly once.
//
// Or not at all: the client hangs up at its timeout, and when Redis answers
// the index updates that precede the script in the pipeline before it has
// read the whole script call, the client's kernel resets the connection
// and Redis drops the rest. Then the attempt proves nothing, and another
// one is made.
func TestTimedOutWriteIsNotSentAgain(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	s := storeWithReadTimeout(t, srv, time.Millisecond)
	c := srv.Client(t)
	for attempt := range 10 {
		ns := fmt.Sprintf("test%d", attempt)
		ops := make([]store.BatchOp, 1000)
		for i := range ops {
			ops[i] = store.BatchOp{Kind: store.OpPut, Namespace: ns, Key: fmt.Sprintf("tasks/T%d/state", i),
				PutRequest: store.PutRequest{Value: json.RawMessage(`{"status":"running"}`), Writer: "w1"}}
		}
		before, _ := c.Get(ctx, "ms:{#memsync}#events-seq").Int()
		if _, err := s.Batch(ctx, ops, false); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("a batch slower than the read timeout: %v, want ErrUnavailable", err)
		}
		time.Sleep(100 * time.Millisecond) // for a second run, were there one
		seq, err := c.Get(ctx, "ms:{#memsync}#events-seq").Int()
		if errors.Is(err, redis.Nil) || err == nil && seq == before {
			continue // the batch never reached Redis whole
		}
		if err != nil || seq-before != len(ops) {
			t.Errorf("events logged: %d, %v; want %d (the batch ran once)", seq-before, err, len(ops))
		}
		clocks, err := c.HGet(ctx, "ms:{"+ns+"/tasks/T0}/state", "clocks").Result()
		if err != nil || clocks != "1|w1|w1=1" {
			t.Errorf("tasks/T0/state clocks = %q, %v; want one write by w1", clocks, err)
		}
		return
	}
	t.Fatal("in 10 attempts, no batch reached Redis whole: this test needs one to")
}

// storeWithReadTimeout returns a store on srv through a client configured as
// the server's (tune), with readTimeout (0: the server's). A short
// readTimeout must cut the write, not what comes before it: the scripts are
// loaded first through a client with the server's timeouts, and the client
// keeps idle connections (MinIdleConns), dialed before the test begins, so
// that neither a write nor a retry of it (were the client to retry) waits
// for a handshake, which would time out too.
func storeWithReadTimeout(t *testing.T, srv *redistest.Server, readTimeout time.Duration) *store.Store {
	t.Helper()
	const idle = 4
	s := func(readTimeout time.Duration) *store.Store {
		opts := tune(&redis.Options{Addr: srv.Addr})
		if readTimeout > 0 {
			opts.ReadTimeout, opts.MinIdleConns = readTimeout, idle
		}
		rdb := redis.NewClient(opts)
		t.Cleanup(func() { rdb.Close() })
		for deadline := time.Now().Add(5 * time.Second); int(rdb.PoolStats().IdleConns) < opts.MinIdleConns; {
			if time.Now().After(deadline) {
				t.Fatalf("%d idle connections, want %d", rdb.PoolStats().IdleConns, opts.MinIdleConns)
			}
			time.Sleep(time.Millisecond)
		}
		s, err := store.New(rdb, store.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	if readTimeout == 0 {
		return s(0)
	}
	if err := s(0).LoadScripts(context.Background()); err != nil {
		t.Fatal(err)
	}
	hasty := s(readTimeout)
	for try := 0; hasty.LoadScripts(context.Background()) != nil; try++ { // it learns they are there
		if try == 100 {
			t.Fatalf("no SCRIPT LOAD of a cached script answered within %v", readTimeout)
		}
	}
	return hasty
}
