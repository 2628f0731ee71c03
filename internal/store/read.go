package store

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounds of the read coalescer.
const (
	// readPipelines is how many reads, or pipelines of reads, may be on
	// their way to Redis at once. Each more means smaller pipelines, so
	// more system calls per read on both sides; one alone leaves Redis
	// idle while a reply is read and the next pipeline gathered. On the
	// bench's two cores (BENCH.md) two served the most reads per second.
	// A read waits at most for the round trip before it, and 2 ×
	// maxReadBatch reads per round trip is far more than one Redis serves.
	readPipelines = 2
	// maxReadBatch bounds the reads of one pipeline.
	maxReadBatch = 128
	// readTimeout bounds the round trip of a pipeline of reads, which is
	// tied to no one request: a request that is cancelled must not fail
	// the reads of its neighbours.
	readTimeout = 5 * time.Second
)

// readGroup coalesces concurrent reads of whole keys (HGETALL) into Redis
// pipelines, as the committer does writes (commit.go), so that many reads
// share the system calls and the round trip of one. A read goes out at once
// when fewer than readPipelines are in flight; otherwise it waits, and when
// one comes back every read that waited meanwhile goes out in the next
// pipeline. Every read is still sent after its request arrived, so it sees
// every write acknowledged before: coalescing keeps reads consistent.
//
// It has no goroutine of its own: the first read of a pipeline sends it
// for the others, which saves a hand-over between goroutines per read. The
// zero value is ready to use.
type readGroup struct {
	mu     sync.Mutex
	flying int       // reads or pipelines in flight
	queue  []*readOp // reads waiting for the next pipeline, oldest first
	spare  []*readOp // an emptied queue, for the next one to reuse
}

// readOp is one read waiting in a readGroup.
type readOp struct {
	key    string // the Redis key
	fields map[string]string
	err    error
	// batch is set on the read chosen to send the next pipeline: it holds
	// that read and those that go with it.
	batch []*readOp
	wake  chan struct{} // one token when answered, or chosen to send
}

var readOps = sync.Pool{New: func() any { return &readOp{wake: make(chan struct{}, 1)} }}

// hgetall returns the fields of the hash at key, as HGETALL does, sent
// alone or in a pipeline with other reads. ctx bounds the wait for a
// place in a pipeline and a read sent alone; once in a pipeline, a read
// completes within readTimeout whatever happens to ctx.
func (g *readGroup) hgetall(ctx context.Context, rdb redis.UniversalClient, key string) (map[string]string, error) {
	g.mu.Lock()
	if g.flying < readPipelines {
		g.flying++
		g.mu.Unlock()
		fields, err := rdb.HGetAll(ctx, key).Result()
		g.next()
		return fields, err
	}
	op := readOps.Get().(*readOp)
	op.key = key
	g.queue = append(g.queue, op)
	g.mu.Unlock()

	select {
	case <-op.wake:
	case <-ctx.Done():
		if g.leave(op) {
			op.key = ""
			readOps.Put(op)
			return nil, ctx.Err()
		}
		<-op.wake // already taken into a pipeline: it is answered soon
	}
	if op.batch != nil {
		g.send(rdb, op.batch)
	}
	fields, err := op.fields, op.err
	*op = readOp{wake: op.wake}
	readOps.Put(op)
	return fields, err
}

// leave takes op out of the queue, and reports whether it was still there.
func (g *readGroup) leave(op *readOp) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := slices.Index(g.queue, op)
	if i < 0 {
		return false
	}
	g.queue = slices.Delete(g.queue, i, i+1)
	return true
}

// send sends batch (its first read is the caller's) as one pipeline,
// passes the place in flight on, then answers the others.
func (g *readGroup) send(rdb redis.UniversalClient, batch []*readOp) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	pipe := rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(batch))
	for i, op := range batch {
		cmds[i] = pipe.HGetAll(ctx, op.key)
	}
	_, _ = pipe.Exec(ctx) // each command's own error is read below
	cancel()
	g.next()
	for i, op := range batch {
		op.fields, op.err = cmds[i].Result()
		if i > 0 {
			op.wake <- struct{}{}
		}
	}
	clear(batch)
	g.mu.Lock()
	if g.spare == nil {
		g.spare = batch[:0]
	}
	g.mu.Unlock()
}

// next is called when a read or a pipeline comes back: it hands the place
// in flight to the reads that queued meanwhile, or gives it up.
func (g *readGroup) next() {
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.flying--
		g.mu.Unlock()
		return
	}
	batch := g.queue
	if len(batch) <= maxReadBatch {
		g.queue, g.spare = g.spare, nil
	} else {
		batch = batch[:maxReadBatch:maxReadBatch]
		g.queue = slices.Clone(g.queue[maxReadBatch:])
	}
	g.mu.Unlock()
	batch[0].batch = batch
	batch[0].wake <- struct{}{}
}
