// Package async queues writes in memory and flushes them to the store in
// batches: the design document's write() and forceSync(), behind
// PUT ?async=true and POST /v1/sync.
//
// A queued write is flushed within Options.Interval (default 100 ms), or as
// soon as Options.Size (default 100) writes are waiting, in the order it was
// accepted, together with every other waiting write in one Redis pipeline
// (store.Batch). A flush that fails keeps its writes queued, at the head, and
// they are tried again: while the process lives, an accepted write is never
// dropped for an outage. Close flushes everything before the process exits.
//
// Delivery is at least once: a flush cut off after Redis applied a write but
// before the reply came back sends that write again. Both copies come from
// the same writer, so the second supersedes the first (same value, the
// writer's counter one higher) instead of standing as a sibling.
package async

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/memsync/memsync/internal/store"
)

// Defaults of Options.
const (
	DefaultInterval = 100 * time.Millisecond
	DefaultSize     = 100
	// DefaultMaxPending bounds the queue: past it, writes are refused with
	// ErrFull (503) rather than queued without limit while Redis is away.
	DefaultMaxPending = 100_000
	// DefaultMaxPendingBytes bounds the values waiting, since one value may
	// be as large as a request body: past it, writes are refused with
	// ErrFull too.
	DefaultMaxPendingBytes = 64 << 20
	// chunkTimeout bounds one pipeline of a flush. It is not tied to the
	// caller's context: a caller that gives up must not cut a pipeline in
	// half, which would only send its writes twice.
	chunkTimeout = 10 * time.Second
	// closeRetry is the pause between flush attempts in Close.
	closeRetry = 100 * time.Millisecond
)

// Errors of Enqueue. Both wrap store.ErrUnavailable: the write was not
// accepted, and a retry later may be.
var (
	ErrFull   = fmt.Errorf("%w: async: too many writes are waiting to be flushed", store.ErrUnavailable)
	ErrClosed = fmt.Errorf("%w: async: the queue is closed (shutting down)", store.ErrUnavailable)
)

// Writer is what a Queue flushes into; *store.Store is one.
type Writer interface {
	Batch(ctx context.Context, ops []store.BatchOp, atomic bool) ([]store.BatchResult, error)
	CheckOp(op store.BatchOp) error
}

// Options tune a Queue. Zero fields take the defaults.
type Options struct {
	Interval   time.Duration // flush at least this often (DefaultInterval)
	Size       int           // flush as soon as this many writes wait (DefaultSize)
	MaxPending int           // refuse writes past this many waiting (DefaultMaxPending)
	// MaxPendingBytes refuses writes once their values waiting add up to
	// this many bytes (DefaultMaxPendingBytes).
	MaxPendingBytes int
	// Now stamps accepted writes; nil means time.Now.
	Now func() time.Time
	// Log hears flush failures and dropped writes; nil discards.
	Log *slog.Logger
	// OnFlush, if set, hears every flush that wrote something or failed:
	// how many writes it wrote, and why some stay queued (nil: none do).
	OnFlush func(written int, err error)
}

// Queue holds accepted writes until they are flushed. It is safe for
// concurrent use.
type Queue struct {
	w    Writer
	opt  Options
	kick chan struct{} // Size reached: Run flushes now
	// flushing is a one-slot semaphore: one flush at a time, so that
	// writes reach Redis in the order they were accepted.
	flushing chan struct{}

	mu sync.Mutex
	// pending is FIFO; a flush reads its head without the lock, since
	// Enqueue only ever appends and only the flush holding the semaphore
	// removes.
	pending []store.BatchOp
	queued  map[keyID]int // writes per key still pending, in flight included
	bytes   int           // of the values in pending
	closed  bool
	// waiting is the sum of queued, written under mu and read without
	// it: Queued, which every read and write of this instance asks,
	// answers no without the lock while nothing waits.
	waiting atomic.Int64

	flushes, flushed atomic.Uint64
}

// Stats are a Queue's counters, for metrics.
type Stats struct {
	Pending int    // writes accepted and not yet in Redis
	Flushes uint64 // pipelines of queued writes sent to Redis
	Flushed uint64 // writes they wrote
}

// Stats returns the queue's counters.
func (q *Queue) Stats() Stats {
	return Stats{Pending: q.Pending(), Flushes: q.flushes.Load(), Flushed: q.flushed.Load()}
}

type keyID struct{ ns, key string }

// New returns a Queue flushing into w. Call Run to flush on a timer, and
// Close before the process exits.
func New(w Writer, opt Options) *Queue {
	if opt.Interval <= 0 {
		opt.Interval = DefaultInterval
	}
	if opt.Size <= 0 {
		opt.Size = DefaultSize
	}
	if opt.MaxPending <= 0 {
		opt.MaxPending = DefaultMaxPending
	}
	if opt.MaxPendingBytes <= 0 {
		opt.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	return &Queue{w: w, opt: opt, kick: make(chan struct{}, 1), flushing: make(chan struct{}, 1),
		queued: map[keyID]int{}}
}

// Options returns the options in force, defaults filled in.
func (q *Queue) Options() Options { return q.opt }

// Enqueue accepts a put or a delete for a later flush. The write is
// validated now (store.ErrInvalidKey, store.ErrInvalidArgument), stamped
// with the time it was accepted (its timestamp and the start of its TTL),
// and must not be conditional: an If-Match could only be checked at the
// flush, when nobody is left to hear that it failed. It returns ErrFull or
// ErrClosed when the write is not accepted.
func (q *Queue) Enqueue(op store.BatchOp) error {
	if op.Kind != store.OpPut && op.Kind != store.OpDelete {
		return fmt.Errorf("%w: only puts and deletes can be queued", store.ErrInvalidArgument)
	}
	if op.IfMatch != "" || op.IfNoneMatch {
		return fmt.Errorf("%w: a conditional write (If-Match, If-None-Match) cannot be queued: its outcome would be known only after the answer", store.ErrInvalidArgument)
	}
	if op.At.IsZero() {
		op.At = q.opt.Now()
	}
	if err := q.w.CheckOp(op); err != nil {
		return err
	}
	q.mu.Lock()
	switch {
	case q.closed:
		q.mu.Unlock()
		return ErrClosed
	case len(q.pending) >= q.opt.MaxPending, q.bytes+len(op.Value) > q.opt.MaxPendingBytes:
		q.mu.Unlock()
		return ErrFull
	}
	q.pending = append(q.pending, op)
	q.bytes += len(op.Value)
	q.queued[keyID{op.Namespace, op.Key}]++
	q.waiting.Add(1)
	n := len(q.pending)
	q.mu.Unlock()
	if n >= q.opt.Size {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// Pending returns how many accepted writes are not yet in Redis.
func (q *Queue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.pending)
}

// Queued reports whether a write of key in namespace ns is waiting (or
// being flushed): a read of it must Flush first to see it.
func (q *Queue) Queued(ns, key string) bool {
	if q.waiting.Load() == 0 {
		return false // an Enqueue that returned before this call counted
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.queued[keyID{ns, key}] > 0
}

// Flush writes every write accepted before the call to Redis, in order, in
// pipelines of up to store.MaxBatchOps, and returns how many this call
// wrote (a flush already running when it was called wrote the others: it
// waits for that one first). On error, the writes not yet in Redis stay
// queued, first in line, for the next flush. ctx bounds the wait and stops
// the flush between pipelines, never in the middle of one.
func (q *Queue) Flush(ctx context.Context) (int, error) {
	select {
	case q.flushing <- struct{}{}:
	case <-ctx.Done():
		return 0, fmt.Errorf("async: flush: %w", ctx.Err())
	}
	defer func() { <-q.flushing }()

	q.mu.Lock()
	left := len(q.pending)
	q.mu.Unlock()
	written := 0
	var err error
	for left > 0 && err == nil {
		if err = ctx.Err(); err != nil {
			err = fmt.Errorf("async: flush: %w", err)
			break
		}
		q.mu.Lock()
		chunk := q.pending[:min(left, store.MaxBatchOps)]
		q.mu.Unlock()
		var n int
		n, err = q.flushChunk(ctx, chunk)
		written += n
		left -= len(chunk)
	}
	if written > 0 || err != nil {
		if q.opt.OnFlush != nil {
			q.opt.OnFlush(written, err)
		}
	}
	return written, err
}

// flushChunk sends chunk, the head of the queue, and takes out of the queue
// what Redis took or refused for good; writes that met an outage go back to
// the head, in order, and the error says why.
func (q *Queue) flushChunk(ctx context.Context, chunk []store.BatchOp) (int, error) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), chunkTimeout)
	results, err := q.w.Batch(bctx, chunk, false)
	cancel()
	q.flushes.Add(1)
	if err != nil {
		return 0, fmt.Errorf("async: flush of %d writes: %w", len(chunk), err)
	}
	var retry []store.BatchOp
	var firstErr error
	written := 0
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, r := range results {
		op := chunk[i]
		switch {
		case r.Err == nil || errors.Is(r.Err, store.ErrNotFound): // a delete of an absent key is done too
			written++
		case retryable(r.Err):
			retry = append(retry, op)
			if firstErr == nil {
				firstErr = r.Err
			}
			continue
		default:
			// Redis refused it for good (it passed validation, so this is
			// a bug or a corrupt key): retrying would wedge the queue.
			q.opt.Log.Error("async: dropping a queued write that Redis refused", "namespace", op.Namespace,
				"key", op.Key, "writer", op.Writer, "err", r.Err)
		}
		q.bytes -= len(op.Value)
		id := keyID{op.Namespace, op.Key}
		if q.queued[id]--; q.queued[id] <= 0 {
			delete(q.queued, id)
		}
		q.waiting.Add(-1)
	}
	// The chunk is the head of pending: drop it, then put the writes to
	// retry back in its last slots, so they stay first and in order.
	rest := len(chunk) - len(retry)
	copy(q.pending[rest:len(chunk)], retry)
	clear(q.pending[:rest]) // let the values be collected
	q.pending = q.pending[rest:]
	if len(q.pending) == 0 {
		q.pending = nil
	}
	q.flushed.Add(uint64(written))
	if firstErr != nil {
		return written, fmt.Errorf("async: %d of %d writes stay queued: %w", len(retry), len(chunk), firstErr)
	}
	return written, nil
}

// retryable reports whether a write that failed with err may succeed later.
func retryable(err error) bool {
	return errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// Run flushes every Interval, and as soon as Size writes wait, until ctx is
// done. A failed flush is logged and tried again at the next tick. Run does
// not flush at the end: Close does.
func (q *Queue) Run(ctx context.Context) {
	t := time.NewTicker(q.opt.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-q.kick:
		}
		if q.Pending() == 0 {
			continue
		}
		if _, err := q.Flush(ctx); err != nil && ctx.Err() == nil {
			q.opt.Log.Warn("async: flush failed; the writes stay queued and are retried", "pending", q.Pending(), "err", err)
		}
	}
}

// Close stops accepting writes (Enqueue returns ErrClosed) and flushes
// everything queued, retrying failed flushes until ctx is done. It returns
// how many writes it flushed, and an error naming how many were lost when
// ctx ended first.
func (q *Queue) Close(ctx context.Context) (int, error) {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	total := 0
	for {
		n, err := q.Flush(ctx)
		total += n
		if err == nil && q.Pending() == 0 {
			return total, nil
		}
		t := time.NewTimer(closeRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			if err == nil {
				err = ctx.Err()
			}
			return total, fmt.Errorf("async: close: %d queued writes were not flushed: %w", q.Pending(), err)
		case <-t.C:
		}
	}
}
