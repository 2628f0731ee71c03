package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/lock"
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

// behindBusyRedis runs f while a script keeps Redis busy for 200 ms: what
// f sends then waits, and runs once the script ends.
func behindBusyRedis(t *testing.T, c *redis.Client, f func()) {
	t.Helper()
	busy := make(chan error, 1)
	go func() {
		busy <- c.Eval(context.Background(), `
local function now() local t = redis.call("TIME") return t[1] * 1000000 + t[2] end
local start = now()
while now() - start < 200000 do end
return 1`, nil).Err()
	}()
	time.Sleep(50 * time.Millisecond) // the script is running
	f()
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
}

// awaitKey waits until key exists.
func awaitKey(t *testing.T, c *redis.Client, key string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for c.Exists(context.Background(), key).Val() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared: the timed-out write never ran, and this test needs it to have", key)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// clientWithReadTimeout returns a client of srv configured as the server's
// (tune), with readTimeout (0: the server's). A short readTimeout must cut
// the command under test, not what comes before it: the client keeps idle
// connections (MinIdleConns), dialed before it is returned, so that neither
// that command nor a retry of it (were the client to retry) waits for a
// connection's handshake, which would time out too.
func clientWithReadTimeout(t *testing.T, srv *redistest.Server, readTimeout time.Duration) *redis.Client {
	t.Helper()
	opts := tune(&redis.Options{Addr: srv.Addr})
	if readTimeout > 0 {
		opts.ReadTimeout, opts.MinIdleConns = readTimeout, 4
	}
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { rdb.Close() })
	awaitIdleConns(t, rdb)
	return rdb
}

// awaitIdleConns waits until rdb holds its MinIdleConns idle connections,
// which it dials again in the background after timeouts closed some.
func awaitIdleConns(t *testing.T, rdb *redis.Client) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); int(rdb.PoolStats().IdleConns) < rdb.Options().MinIdleConns; {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle connections, want %d", rdb.PoolStats().IdleConns, rdb.Options().MinIdleConns)
		}
		time.Sleep(time.Millisecond)
	}
}

// storeWithReadTimeout returns a store on clientWithReadTimeout's client.
// With a readTimeout, the scripts are loaded first through a client with
// the server's timeouts, and the store learns they are there.
func storeWithReadTimeout(t *testing.T, srv *redistest.Server, readTimeout time.Duration) *store.Store {
	t.Helper()
	s := func(readTimeout time.Duration) *store.Store {
		s, err := store.New(clientWithReadTimeout(t, srv, readTimeout), store.Config{})
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

// What a client does about such a timeout: send the write again under the
// same idempotency key, and be told it was applied. Here Redis is kept busy
// by a slow script for longer than a read timeout of 1 ms, then runs the
// write; the retry through a client with the server's own timeouts is
// answered with that write, and Redis has one version and one event.
func TestTimedOutWriteIsRetriedUnderItsIdempotencyKey(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	c := srv.Client(t)
	hasty, patient := storeWithReadTimeout(t, srv, time.Millisecond), storeWithReadTimeout(t, srv, 0)
	req := store.PutRequest{Value: json.RawMessage(`{"status":"done"}`), Writer: "w1", IdempotencyKey: "finish-T1", IfNoneMatch: true}

	behindBusyRedis(t, c, func() {
		if _, err := hasty.Put(ctx, "test", "tasks/T1/state", req); !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("a put behind a busy Redis, with a read timeout of 1 ms: %v, want ErrUnavailable", err)
		}
	})
	key := "ms:{test/tasks/T1}/state"
	awaitKey(t, c, key)

	res, err := patient.Put(ctx, "test", "tasks/T1/state", req)
	if err != nil || !res.Replayed {
		t.Fatalf("the retry: replayed %v, %v; want the timed-out write's answer", res.Replayed, err)
	}
	if clocks := c.HGet(ctx, key, "clocks").Val(); clocks != "1|w1|w1=1" {
		t.Errorf("clocks = %q, want one write by w1", clocks)
	}
	if seq, err := c.Get(ctx, "ms:{#memsync}#events-seq").Int(); err != nil || seq != 1 {
		t.Errorf("events logged: %d, %v; want 1", seq, err)
	}
	// Without the key, the same retry is refused: If-None-Match fails on
	// the key its own first attempt created.
	req.IdempotencyKey = ""
	if _, err := patient.Put(ctx, "test", "tasks/T1/state", req); !errors.Is(err, store.ErrPreconditionFailed) {
		t.Errorf("the retry without an idempotency key: %v, want ErrPreconditionFailed", err)
	}
}

// The same for a lock: an acquire held back behind a busy Redis past a read
// timeout of 1 ms is granted once Redis runs it, but its caller hears 503.
// Sent again under its idempotency key, it gets that grant, whose token
// releases the lock; without the key it would get 409 for its own lock
// until the lease ran out.
func TestTimedOutLockIsRetriedUnderItsIdempotencyKey(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	ctx := context.Background()
	c := srv.Client(t)
	lockerOn := func(rdb *redis.Client) *lock.Locker {
		l := lock.New(rdb, lock.Options{})
		t.Cleanup(func() { l.Close() })
		return l
	}
	hastyClient := clientWithReadTimeout(t, srv, time.Millisecond)
	patient, hasty := lockerOn(clientWithReadTimeout(t, srv, 0)), lockerOn(hastyClient)
	req := lock.AcquireRequest{TTL: time.Minute, Owner: "w1", IdempotencyKey: "take-T1"}
	// Both load the script while Redis is idle; the hasty one may need
	// tries (it times out after 1 ms), and then keeps its connections.
	g, err := patient.Acquire(ctx, "test", "tasks/T0", lock.AcquireRequest{TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for try := 0; ; try++ {
		_, err := hasty.Acquire(ctx, "test", "tasks/T0", lock.AcquireRequest{TTL: time.Second})
		if errors.Is(err, lock.ErrLockHeld) {
			break
		}
		if try == 100 {
			t.Fatalf("no acquire on the hasty client answered within 1 ms: %v", err)
		}
	}
	if err := patient.Release(ctx, "test", "tasks/T0", g.Token); err != nil {
		t.Fatal(err)
	}
	awaitIdleConns(t, hastyClient) // the tries that timed out closed theirs

	behindBusyRedis(t, c, func() {
		if _, err := hasty.Acquire(ctx, "test", "tasks/T1", req); !errors.Is(err, lock.ErrUnavailable) {
			t.Fatalf("an acquire behind a busy Redis, with a read timeout of 1 ms: %v, want ErrUnavailable", err)
		}
	})
	awaitKey(t, c, "ms:{test/tasks/T1}#lock")

	without := req
	without.IdempotencyKey = ""
	if _, err := patient.Acquire(ctx, "test", "tasks/T1", without); !errors.Is(err, lock.ErrLockHeld) {
		t.Errorf("the retry without the idempotency key: %v, want ErrLockHeld (its own grant)", err)
	}
	again, err := patient.Acquire(ctx, "test", "tasks/T1", req)
	if err != nil || !again.Replayed {
		t.Fatalf("the retry: %+v, %v; want the timed-out acquire's grant", again, err)
	}
	if err := patient.Release(ctx, "test", "tasks/T1", again.Token); err != nil {
		t.Errorf("release with the token given again: %v", err)
	}
}
