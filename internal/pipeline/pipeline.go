// Package pipeline coalesces concurrent Redis round trips into pipelines, so
// that many requests share the system calls, on both sides, of one round
// trip. Reads of the store and lock requests use it; the store's writes have
// a group committer of their own (they are one script call per group).
package pipeline

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of a Group.
const (
	// DefaultDepth is how many round trips may be in flight at once. Each
	// more means smaller pipelines, so more system calls per call; one
	// alone leaves Redis idle while a reply is read and the next pipeline
	// gathered. On the bench's two cores (BENCH.md) two served the most
	// reads per second.
	DefaultDepth = 2
	// DefaultMax bounds the calls of one pipeline.
	DefaultMax = 128
	// DefaultTimeout bounds the round trip of a pipeline of several
	// calls, which is tied to no one request: a request that is cancelled
	// must not fail its neighbours.
	DefaultTimeout = 5 * time.Second
)

// Group sends concurrent calls to Redis in shared pipelines. A call goes out
// at once, alone, when fewer than Depth round trips are in flight; otherwise
// it waits, and when a round trip comes back every call that waited
// meanwhile goes out in the next pipeline. Every call is still sent after it
// was made, so it sees every write acknowledged before it: coalescing keeps
// reads consistent.
//
// A Group has no goroutine of its own: the first call of a pipeline sends it
// for the others, which saves a hand-over between goroutines per call. The
// zero value is ready to use; set the fields before the first call.
type Group struct {
	Depth   int           // round trips in flight at once; 0: DefaultDepth
	Max     int           // calls in one pipeline; 0: DefaultMax
	Timeout time.Duration // of a shared pipeline's round trip; 0: DefaultTimeout

	mu     sync.Mutex
	flying int     // round trips in flight
	queue  []*call // calls waiting for the next pipeline, oldest first
	spare  []*call // an emptied queue, for the next one to reuse
}

// call is one call waiting in a Group.
type call struct {
	queue func(context.Context, redis.Pipeliner)
	// batch is set on the call chosen to send the next pipeline: it holds
	// that call and those that go with it.
	batch []*call
	wake  chan struct{} // one token when answered, or chosen to send
}

var calls = sync.Pool{New: func() any { return &call{wake: make(chan struct{}, 1)} }}

// Do has queue add its commands to a pipeline, maybe shared with concurrent
// callers, and returns once that pipeline came back: then the commands hold
// their replies or errors (a failed round trip sets every command's error).
// queue is called exactly once, in some goroutine, when Do returns nil; it
// must only add commands, with the context it is given, and keep them for
// its caller.
//
// ctx bounds the wait for a place in a pipeline, and a call sent alone.
// Do returns ctx's error, without calling queue, when ctx ends while the
// call waits; once in a shared pipeline, a call completes within Timeout
// whatever happens to ctx.
func (g *Group) Do(ctx context.Context, rdb redis.Cmdable, queue func(context.Context, redis.Pipeliner)) error {
	g.mu.Lock()
	if g.flying < g.depth() {
		g.flying++
		g.mu.Unlock()
		_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error { // each command keeps its own error
			queue(ctx, p)
			return nil
		})
		g.next()
		return nil
	}
	c := calls.Get().(*call)
	c.queue = queue
	g.queue = append(g.queue, c)
	g.mu.Unlock()

	select {
	case <-c.wake:
	case <-ctx.Done():
		if g.leave(c) {
			c.queue = nil
			calls.Put(c)
			return ctx.Err()
		}
		<-c.wake // already taken into a pipeline: it is answered soon
	}
	if c.batch != nil {
		g.send(rdb, c.batch)
	}
	*c = call{wake: c.wake}
	calls.Put(c)
	return nil
}

func (g *Group) depth() int {
	if g.Depth > 0 {
		return g.Depth
	}
	return DefaultDepth
}

// leave takes c out of the queue, and reports whether it was still there.
func (g *Group) leave(c *call) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := slices.Index(g.queue, c)
	if i < 0 {
		return false
	}
	g.queue = slices.Delete(g.queue, i, i+1)
	return true
}

// send sends batch (its first call is the caller's) as one pipeline, passes
// the place in flight on, then answers the others.
func (g *Group) send(rdb redis.Cmdable, batch []*call) {
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	pipe := rdb.Pipeline()
	for _, c := range batch {
		c.queue(ctx, pipe)
	}
	_, _ = pipe.Exec(ctx) // each command keeps its own error
	cancel()
	g.next()
	for _, c := range batch[1:] {
		c.wake <- struct{}{}
	}
	clear(batch)
	g.mu.Lock()
	if g.spare == nil {
		g.spare = batch[:0]
	}
	g.mu.Unlock()
}

// next is called when a round trip comes back: it hands the place in flight
// to the calls that queued meanwhile, or gives it up.
func (g *Group) next() {
	limit := g.Max
	if limit <= 0 {
		limit = DefaultMax
	}
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.flying--
		g.mu.Unlock()
		return
	}
	batch := g.queue
	if len(batch) <= limit {
		g.queue, g.spare = g.spare, nil
	} else {
		batch = batch[:limit:limit]
		g.queue = slices.Clone(g.queue[limit:])
	}
	g.mu.Unlock()
	batch[0].batch = batch
	batch[0].wake <- struct{}{}
}
