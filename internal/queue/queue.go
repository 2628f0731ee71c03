// Package queue provides work queues on Redis with at-least-once delivery,
// as SQS does: a worker claims messages for a visibility timeout, acks each
// one it finished (with the receipt of its claim), or releases it; a
// message whose claimant neither acks nor releases it in time (it crashed)
// is visible again, and the next claim gets it, counting one attempt more.
// Workers may wait for a message: an enqueue wakes the waiting claims of
// every instance (one pattern subscription per Queues, fanned out in the
// process), and a waiting claim also wakes when a delayed message or a
// visibility timeout comes due, and every Options.RetryInterval as a
// safety net for a lost message.
//
// Redis layout for queue Q in namespace N (all in Q's hash slot):
//
//	ms:{N/queues/Q}#queue           sorted set: id → when visible (ms, Redis clock)
//	ms:{N/queues/Q}#queue-inflight  sorted set: id → end of its visibility timeout
//	ms:{N/queues/Q}#queue-messages  hash: "v:<id>" → value, "m:<id>" →
//	                                "<attempts>|<enqueued_at>|<receipt>|<owner>"
//	ms:{N/queues/Q}#queue-seq       string: the last id given
//	ms:{N}#queue-ready              pub/sub channel; message: Q, when a
//	                                message is visible at once
package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/rediserr"
)

// Defaults of Options, and limits.
const (
	DefaultMaxVisibility = 12 * time.Hour
	DefaultMaxWait       = 60 * time.Second
	DefaultRetryInterval = 250 * time.Millisecond
	// MaxDelay is the longest delay of a message.
	MaxDelay = 7 * 24 * time.Hour
	// MaxClaim is the most messages one claim takes.
	MaxClaim = 100
	// MaxOwnerLen is the longest owner of a claim, in bytes.
	MaxOwnerLen = 256
)

// Errors. Redis failures come back wrapped with the operation and are none
// of these.
var (
	// ErrInvalidArgument: a bad name, timeout, delay, count or receipt.
	ErrInvalidArgument = errors.New("queue: invalid argument")
	// ErrNotClaimed: the receipt does not hold the message (it was claimed
	// again since, released, or acked).
	ErrNotClaimed = errors.New("queue: message not claimed by this receipt")
	// ErrClosed: a claim had to wait on closed Queues.
	ErrClosed = errors.New("queue: closed")
	// ErrUnavailable wraps any failure to reach Redis.
	ErrUnavailable = errors.New("queue: backend unavailable")
)

// redisError names the operation of a failed Redis call and marks it
// ErrUnavailable when Redis could not serve (rediserr.Unavailable).
func redisError(op, name string, err error) error {
	if !rediserr.Unavailable(err) {
		return fmt.Errorf("queue: %s %q: %w", op, name, err)
	}
	return fmt.Errorf("%w: %s %q: %w", ErrUnavailable, op, name, err)
}

// Options configure Queues. The zero value is ready to use.
type Options struct {
	// MaxVisibility is the longest visibility timeout a claim or extend
	// takes (DefaultMaxVisibility, 12 h).
	MaxVisibility time.Duration
	// MaxWait is the longest a claim waits (DefaultMaxWait, 60 s).
	MaxWait time.Duration
	// RetryInterval is how often a waiting claim looks again without being
	// woken (DefaultRetryInterval, 250 ms).
	RetryInterval time.Duration
}

// Message is a message of a queue.
type Message struct {
	ID    string
	Value json.RawMessage
	// Attempts counts the claims of the message, this one included.
	Attempts   int
	EnqueuedAt time.Time
	// VisibleAt is when the message is visible (to a claim) again: when its
	// delay ends, or its claim's visibility timeout.
	VisibleAt time.Time
	// Receipt proves the claim to Ack, Release and Extend: 32 hex digits;
	// empty but for a claimed message.
	Receipt string
}

// ClaimRequest says how to claim.
type ClaimRequest struct {
	// Visibility is how long the messages stay claimed unless acked,
	// released or extended: at least 1 ms, at most Options.MaxVisibility.
	Visibility time.Duration
	// Wait is how long to wait for a message when none is visible: 0 does
	// not wait; at most Options.MaxWait.
	Wait time.Duration
	// Max is the most messages to take, 1 to MaxClaim (0 means 1).
	Max int
	// Owner names the claimant (at most MaxOwnerLen bytes).
	Owner string
}

// Counters are Queues' counts since it started, for metrics.
type Counters struct {
	Enqueued    uint64 // messages added
	Claimed     uint64 // messages claimed
	Redelivered uint64 // of those, claimed before (Attempts > 1)
	Acked       uint64 // messages acked
}

// Counters returns the counts.
func (q *Queues) Counters() Counters {
	return Counters{Enqueued: q.enqueued.Load(), Claimed: q.claimed.Load(), Redelivered: q.redelivered.Load(), Acked: q.acked.Load()}
}

// Stats count a queue's messages.
type Stats struct {
	Visible  int // claimable now (their timeout passed, for some)
	Delayed  int // visible later
	InFlight int // claimed, their visibility timeout running
}

// Queues serves the queues of every namespace of one Redis. It is safe for
// concurrent use; create one per process and Close it when done.
type Queues struct {
	rdb  redis.UniversalClient
	opts Options
	ps   *redis.PubSub

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{} // by ready key

	enqueued, claimed, redelivered, acked atomic.Uint64

	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// readyPattern matches the ready channel of every namespace.
var readyPattern = keys.Namespace("*", "queue-ready")

func readyChannel(ns string) string { return keys.Namespace(ns, "queue-ready") }

// queueKeys are the Redis keys of queue name in ns: ready, details, in
// flight, the id counter.
func queueKeys(ns, name string) (ready, details, inflight, seq string) {
	k := "queues/" + name
	return keys.Aux(ns, k, "queue"), keys.Aux(ns, k, "queue-messages"), keys.Aux(ns, k, "queue-inflight"), keys.Aux(ns, k, "queue-seq")
}

// New returns Queues on rdb, subscribed at once to the ready channels of
// every namespace. rdb stays the caller's.
func New(rdb redis.UniversalClient, opts Options) *Queues {
	if opts.MaxVisibility <= 0 {
		opts.MaxVisibility = DefaultMaxVisibility
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRetryInterval
	}
	q := &Queues{rdb: rdb, opts: opts, waiters: make(map[string]map[chan struct{}]struct{}), done: make(chan struct{})}
	q.ps = rdb.PSubscribe(context.Background(), readyPattern)
	ch := q.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024))
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		q.dispatch(ch)
	}()
	return q
}

// Close stops the subscription; waiting claims return ErrClosed.
func (q *Queues) Close() error {
	q.closeOnce.Do(func() {
		close(q.done)
		q.closeErr = q.ps.Close()
		q.wg.Wait()
	})
	return q.closeErr
}

// validName checks a namespace and a queue name (one key segment).
func validName(ns, name string) error {
	if err := keys.ValidateNamespace(ns); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if !keys.ValidSegment(name) {
		return fmt.Errorf("%w: %w: queue name %q must be 1-128 characters of [A-Za-z0-9._:@-], not . or ..", ErrInvalidArgument, keys.ErrInvalidKey, name)
	}
	return nil
}

// Enqueue adds a message to queue name, visible after delay (0: at once).
// value must be valid JSON.
func (q *Queues) Enqueue(ctx context.Context, ns, name string, value json.RawMessage, delay time.Duration) (Message, error) {
	if err := validName(ns, name); err != nil {
		return Message{}, err
	}
	if delay < 0 || delay > MaxDelay {
		return Message{}, fmt.Errorf("%w: delay %v must be between 0 and %v", ErrInvalidArgument, delay, MaxDelay)
	}
	if !json.Valid(value) {
		return Message{}, fmt.Errorf("%w: the value is not JSON", ErrInvalidArgument)
	}
	ready, details, _, seq := queueKeys(ns, name)
	res, err := enqueueScript.Run(ctx, q.rdb, []string{ready, details, seq},
		string(value), delay.Milliseconds(), readyChannel(ns), name).Slice()
	if err != nil {
		return Message{}, redisError("enqueue", name, err)
	}
	if len(res) != 3 {
		return Message{}, fmt.Errorf("queue: enqueue %q: unexpected script reply %v", name, res)
	}
	q.enqueued.Add(1)
	id, _ := res[0].(string)
	enq, _ := res[1].(int64)
	at, _ := res[2].(int64)
	return Message{ID: id, Value: value, EnqueuedAt: time.UnixMilli(enq), VisibleAt: time.UnixMilli(at)}, nil
}

// Claim takes up to req.Max visible messages of queue name, oldest first,
// waiting up to req.Wait for one when none is visible; it returns none
// (and no error) when the wait ends first. Errors: ErrInvalidArgument,
// ErrClosed, ctx's error, or a Redis failure.
func (q *Queues) Claim(ctx context.Context, ns, name string, req ClaimRequest) ([]Message, error) {
	if err := validName(ns, name); err != nil {
		return nil, err
	}
	if req.Max == 0 {
		req.Max = 1
	}
	switch {
	case req.Visibility < time.Millisecond || req.Visibility > q.opts.MaxVisibility:
		return nil, fmt.Errorf("%w: visibility %v must be between 1ms and %v", ErrInvalidArgument, req.Visibility, q.opts.MaxVisibility)
	case req.Wait < 0 || req.Wait > q.opts.MaxWait:
		return nil, fmt.Errorf("%w: wait %v must be between 0 and %v", ErrInvalidArgument, req.Wait, q.opts.MaxWait)
	case req.Max < 1 || req.Max > MaxClaim:
		return nil, fmt.Errorf("%w: max %d must be between 1 and %d", ErrInvalidArgument, req.Max, MaxClaim)
	case len(req.Owner) > MaxOwnerLen:
		return nil, fmt.Errorf("%w: owner is %d bytes, more than %d", ErrInvalidArgument, len(req.Owner), MaxOwnerLen)
	}
	deadline := time.Now().Add(req.Wait)
	var wake chan struct{}
	if req.Wait > 0 {
		select {
		case <-q.done:
			return nil, ErrClosed
		default:
		}
		ready, _, _, _ := queueKeys(ns, name)
		wake = make(chan struct{}, 1)
		q.register(ready, wake)
		defer q.unregister(ready, wake)
	}
	timer := time.NewTimer(req.Wait)
	defer timer.Stop()
	for {
		msgs, next, err := q.tryClaim(ctx, ns, name, req)
		left := time.Until(deadline)
		if err != nil || len(msgs) > 0 || left <= 0 {
			return msgs, err
		}
		sleep := min(left, q.opts.RetryInterval)
		if next > 0 {
			sleep = min(sleep, next+time.Millisecond)
		}
		timer.Reset(sleep)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("queue: claim %q: %w", name, ctx.Err())
		case <-q.done:
			return nil, ErrClosed
		case <-wake:
		case <-timer.C:
		}
	}
}

// tryClaim runs claimScript once; next is how long until a message may be
// visible when none was (0 for an empty queue).
func (q *Queues) tryClaim(ctx context.Context, ns, name string, req ClaimRequest) ([]Message, time.Duration, error) {
	ready, details, inflight, _ := queueKeys(ns, name)
	args := []any{req.Visibility.Milliseconds(), req.Owner}
	for range req.Max {
		r, err := newReceipt()
		if err != nil {
			return nil, 0, err
		}
		args = append(args, r)
	}
	res, err := claimScript.Run(ctx, q.rdb, []string{ready, details, inflight}, args...).Slice()
	if err != nil {
		return nil, 0, redisError("claim", name, err)
	}
	if len(res) < 2 || (len(res)-2)%5 != 0 {
		return nil, 0, fmt.Errorf("queue: claim %q: unexpected script reply %v", name, res)
	}
	now, _ := res[0].(int64)
	if len(res) == 2 {
		next, _ := res[1].(int64)
		if next == 0 {
			return nil, 0, nil
		}
		return nil, max(time.Duration(next-now)*time.Millisecond, 0), nil
	}
	msgs := make([]Message, (len(res)-2)/5)
	for j := range msgs {
		i := 2 + 5*j
		id, _ := res[i].(string)
		value, _ := res[i+1].(string)
		attempts, _ := res[i+2].(int64)
		enq, _ := res[i+3].(int64)
		until, _ := res[i+4].(int64)
		msgs[j] = Message{ID: id, Value: json.RawMessage(value), Attempts: int(attempts),
			EnqueuedAt: time.UnixMilli(enq), VisibleAt: time.UnixMilli(until), Receipt: args[2+j].(string)}
		q.claimed.Add(1)
		if attempts > 1 {
			q.redelivered.Add(1)
		}
	}
	return msgs, 0, nil
}

// Ack deletes message id, which receipt's claim holds: the work is done.
// ErrNotClaimed when it does not hold it; then nothing changes.
func (q *Queues) Ack(ctx context.Context, ns, name, id, receipt string) error {
	if err := validMessage(ns, name, id, receipt); err != nil {
		return err
	}
	ready, details, inflight, _ := queueKeys(ns, name)
	n, err := ackScript.Run(ctx, q.rdb, []string{details, ready, inflight}, id, receipt).Int()
	if err != nil {
		return redisError("ack", name, err)
	}
	if n == 0 {
		return ErrNotClaimed
	}
	q.acked.Add(1)
	return nil
}

// Release gives message id back, visible after delay (0: at once), for
// another claim. ErrNotClaimed when receipt does not hold it.
func (q *Queues) Release(ctx context.Context, ns, name, id, receipt string, delay time.Duration) error {
	if err := validMessage(ns, name, id, receipt); err != nil {
		return err
	}
	if delay < 0 || delay > MaxDelay {
		return fmt.Errorf("%w: delay %v must be between 0 and %v", ErrInvalidArgument, delay, MaxDelay)
	}
	ready, details, inflight, _ := queueKeys(ns, name)
	n, err := releaseScript.Run(ctx, q.rdb, []string{details, ready, inflight}, id, receipt,
		delay.Milliseconds(), readyChannel(ns), name).Int()
	if err != nil {
		return redisError("release", name, err)
	}
	if n == 0 {
		return ErrNotClaimed
	}
	if delay == 0 {
		q.wake(ready) // this instance's claims need not wait for the message
	}
	return nil
}

// Extend sets the visibility timeout of message id to visibility from now
// and returns when it ends. ErrNotClaimed when receipt does not hold it, or
// a claim found its timeout passed.
func (q *Queues) Extend(ctx context.Context, ns, name, id, receipt string, visibility time.Duration) (time.Time, error) {
	if err := validMessage(ns, name, id, receipt); err != nil {
		return time.Time{}, err
	}
	if visibility < time.Millisecond || visibility > q.opts.MaxVisibility {
		return time.Time{}, fmt.Errorf("%w: visibility %v must be between 1ms and %v", ErrInvalidArgument, visibility, q.opts.MaxVisibility)
	}
	_, details, inflight, _ := queueKeys(ns, name)
	until, err := extendScript.Run(ctx, q.rdb, []string{details, inflight}, id, receipt, visibility.Milliseconds()).Int64()
	if err != nil {
		return time.Time{}, redisError("extend", name, err)
	}
	if until == 0 {
		return time.Time{}, ErrNotClaimed
	}
	return time.UnixMilli(until), nil
}

// Stats counts queue name's messages; a queue never used has none.
func (q *Queues) Stats(ctx context.Context, ns, name string) (Stats, error) {
	if err := validName(ns, name); err != nil {
		return Stats{}, err
	}
	ready, _, inflight, _ := queueKeys(ns, name)
	res, err := statsScript.Run(ctx, q.rdb, []string{ready, inflight}).Int64Slice()
	if err != nil {
		return Stats{}, redisError("stats", name, err)
	}
	if len(res) != 3 {
		return Stats{}, fmt.Errorf("queue: stats %q: unexpected script reply %v", name, res)
	}
	return Stats{Visible: int(res[0]), Delayed: int(res[1]), InFlight: int(res[2])}, nil
}

// Purge deletes queue name and every message in it, claimed or not; it
// returns how many there were.
func (q *Queues) Purge(ctx context.Context, ns, name string) (int, error) {
	if err := validName(ns, name); err != nil {
		return 0, err
	}
	ready, details, inflight, seq := queueKeys(ns, name)
	var n1, n2 *redis.IntCmd
	_, err := q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n1, n2 = p.ZCard(ctx, ready), p.ZCard(ctx, inflight)
		p.Del(ctx, ready, details, inflight, seq)
		return nil
	})
	if err != nil {
		return 0, redisError("purge", name, err)
	}
	return int(n1.Val() + n2.Val()), nil
}

// validMessage checks a message's address and receipt.
func validMessage(ns, name, id, receipt string) error {
	if err := validName(ns, name); err != nil {
		return err
	}
	if _, err := strconv.ParseUint(id, 10, 64); err != nil || len(id) != 16 {
		return fmt.Errorf("%w: message id %q must be 16 digits", ErrInvalidArgument, id)
	}
	if receipt == "" || strings.ContainsAny(receipt, "|") {
		return fmt.Errorf("%w: receipt %q", ErrInvalidArgument, receipt)
	}
	return nil
}

func newReceipt() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

func (q *Queues) register(ready string, wake chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.waiters[ready] == nil {
		q.waiters[ready] = make(map[chan struct{}]struct{})
	}
	q.waiters[ready][wake] = struct{}{}
}

func (q *Queues) unregister(ready string, wake chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.waiters[ready], wake)
	if len(q.waiters[ready]) == 0 {
		delete(q.waiters, ready)
	}
}

// wake wakes every claim waiting on a queue (ready key), or on every queue
// for "".
func (q *Queues) wake(ready string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, ws := range q.waiters {
		if ready != "" && k != ready {
			continue
		}
		for w := range ws {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
}

// dispatch wakes the claims waiting on the queues named by ready messages
// until the subscription is closed.
func (q *Queues) dispatch(ch <-chan any) {
	prefix, suffix, _ := strings.Cut(readyPattern, "*")
	for msg := range ch {
		switch m := msg.(type) {
		case *redis.Subscription:
			q.wake("") // (re)subscribed: messages may have been missed
		case *redis.Message:
			ns, ok1 := strings.CutPrefix(m.Channel, prefix)
			ns, ok2 := strings.CutSuffix(ns, suffix)
			if !ok1 || !ok2 || !keys.ValidSegment(m.Payload) {
				continue
			}
			ready, _, _, _ := queueKeys(ns, m.Payload)
			q.wake(ready)
		}
	}
}
