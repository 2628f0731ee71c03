// Package queue provides work queues on Redis with at-least-once delivery,
// as SQS does: a worker claims messages for a visibility timeout, acks each
// one it finished (with the receipt of its claim), or releases it; a
// message whose claimant neither acks nor releases it in time (it crashed)
// is visible again, and the next claim gets it, counting one attempt more.
// Workers may wait for a message: an enqueue wakes, on every instance, the
// claim waiting there longest (one pattern subscription per Queues, package
// wakeup), so that an instance serves its waiting claims in line; a waiting
// claim also wakes when a delayed message or a
// visibility timeout comes due, and every Options.RetryInterval as a
// safety net for a lost message.
//
// A message may bound its attempts: one claimed that many times goes to
// the queue's dead letters when it would be claimed again, where it waits
// to be read, given back (Redrive) or dropped. An enqueue may carry an
// idempotency key, which the queue remembers for Options.DedupWindow: sent again,
// it adds nothing. Queues lists the queues of a namespace from an index
// that enqueues fill and purges empty.
//
// Redis layout for queue Q in namespace N (all in Q's hash slot):
//
//	ms:{N/queues/Q}#queue           sorted set: id → when visible (ms, Redis clock)
//	ms:{N/queues/Q}#queue-inflight  sorted set: id → end of its visibility timeout
//	ms:{N/queues/Q}#queue-messages  hash: "v:<id>" → value, "m:<id>" →
//	                                "<attempts>|<enqueued_at>|<receipt>|<owner>",
//	                                "x:<id>" → most attempts, "d:<id>" → dead
//	                                since, "k:<idempotency key>" → the answer
//	ms:{N/queues/Q}#queue-seq       string: the last id given
//	ms:{N/queues/Q}#queue-dead      sorted set: dead letters, id → id
//	ms:{N/queues/Q}#queue-dedup     sorted set: idempotency key → when forgotten
//	ms:{N}#queues                   sorted set, the namespace's index: Q → when
//	                                last enqueued to (ms)
//	ms:{N}#queue-ready              pub/sub channel; message: Q, when a
//	                                message is visible at once
package queue

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/rediserr"
	"github.com/memsync/memsync/internal/wakeup"
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
	// MaxAttempts is the largest bound on a message's attempts.
	MaxAttempts = 1000
	// MaxDeadPage is the most dead letters one Dead or Redrive call takes.
	MaxDeadPage = 1000
	// MaxTTL is the longest a message lives.
	MaxTTL = 14 * 24 * time.Hour
	// DefaultDedupWindow is how long a queue remembers an enqueue's
	// idempotency key.
	DefaultDedupWindow = time.Hour
	// MaxLength is the largest EnqueueRequest.MaxLength.
	MaxLength = 10_000_000
)

// Errors. Redis failures come back wrapped with the operation and are none
// of these.
var (
	// ErrInvalidArgument: a bad name, timeout, delay, count or receipt.
	ErrInvalidArgument = errors.New("queue: invalid argument")
	// ErrNotClaimed: the receipt does not hold the message (it was claimed
	// again since, released, acked, or went to the dead letters).
	ErrNotClaimed = errors.New("queue: message not claimed by this receipt")
	// ErrQueueFull: the queue held EnqueueRequest.MaxLength messages
	// already; nothing was added.
	ErrQueueFull = errors.New("queue: full")
	// ErrNotDead: no dead letter has the id.
	ErrNotDead = errors.New("queue: no such dead letter")
	// ErrIdempotencyMismatch: the queue remembers the enqueue's idempotency
	// key for another value, delay, bound on attempts or TTL. It is an
	// ErrInvalidArgument.
	ErrIdempotencyMismatch = fmt.Errorf("%w: idempotency key reused for another message", ErrInvalidArgument)
	// ErrClosed: a claim had to wait on closed Queues.
	ErrClosed = errors.New("queue: closed")
	// ErrUnavailable wraps any failure to reach Redis.
	ErrUnavailable = errors.New("queue: backend unavailable")
)

// redisError names the operation of a failed Redis call and marks it
// ErrUnavailable when Redis could not serve (rediserr.Unavailable).
func redisError(op, name string, err error) error {
	return rediserr.Wrap("queue", ErrUnavailable, op, name, err)
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
	// DedupWindow is how long a queue remembers an enqueue's idempotency
	// key (DefaultDedupWindow, 1 h).
	DedupWindow time.Duration
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
	// MaxAttempts bounds Attempts (0: no bound): a message claimed that
	// many times goes to the dead letters when it would be claimed again.
	MaxAttempts int
	// DeadAt is when it went to the dead letters (zero but for those).
	DeadAt time.Time
	// ExpiresAt is when the message expires: a claim deletes it rather
	// than take it once that has passed. Zero: it lives until acked.
	ExpiresAt time.Time
	// Owner names the claimant of its latest claim (read of dead letters).
	Owner string
}

// EnqueueRequest says what to add.
type EnqueueRequest struct {
	// Value must be valid JSON.
	Value json.RawMessage
	// Delay: the message is visible after it (0: at once; at most MaxDelay).
	Delay time.Duration
	// MaxAttempts bounds the message's claims, 0 (no bound) to
	// MaxAttempts.
	MaxAttempts int
	// TTL is how long the message lives, from now: past it, unclaimed or
	// whose claim lapsed, it is deleted, never claimed. 0: until acked;
	// else more than Delay and at most MaxTTL.
	TTL time.Duration
	// IdempotencyKey, when set, makes the enqueue safe to send again: for
	// Options.DedupWindow the queue answers the same request under the same key
	// with the first one's message, adding nothing. The same key with
	// another value, Delay, MaxAttempts or TTL is ErrIdempotencyMismatch.
	IdempotencyKey string
	// MaxLength, when set (1 to MaxLength), adds the message only while
	// the queue holds fewer messages (visible, delayed and claimed; dead
	// letters not counted), else ErrQueueFull: a producer's backpressure.
	// An enqueue its idempotency key replays is answered as before, full
	// or not.
	MaxLength int
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
	Replayed    uint64 // enqueues answered by their idempotency key, adding nothing
	Claimed     uint64 // messages claimed
	Redelivered uint64 // of those, claimed before (Attempts > 1)
	Acked       uint64 // messages acked
	Expired     uint64 // messages deleted past their TTL
	Dead        uint64 // messages that went to the dead letters
	Redriven    uint64 // dead letters given back
}

// Counters returns the counts.
func (q *Queues) Counters() Counters {
	return Counters{Enqueued: q.enqueued.Load(), Replayed: q.replayed.Load(), Claimed: q.claimed.Load(),
		Redelivered: q.redelivered.Load(), Acked: q.acked.Load(), Expired: q.expired.Load(), Dead: q.dead.Load(), Redriven: q.redriven.Load()}
}

// Stats count a queue's messages.
type Stats struct {
	Visible  int // claimable now (their timeout passed, for some)
	Delayed  int // visible later
	InFlight int // claimed, their visibility timeout running
	Dead     int // dead letters
}

// QueueInfo names a queue with its counts.
type QueueInfo struct {
	Name string
	Stats
}

// Queues serves the queues of every namespace of one Redis. It is safe for
// concurrent use; create one per process and Close it when done.
type Queues struct {
	rdb    redis.UniversalClient
	opts   Options
	wakeup *wakeup.Hub // by ready key

	enqueued, replayed, claimed, redelivered, acked, expired, dead, redriven atomic.Uint64
}

// readyKind names the channels that announce a message visible now.
const readyKind = "queue-ready"

func readyChannel(ns string) string { return wakeup.Channel(ns, readyKind) }

// queueKeys are the Redis keys of queue name in ns: ready, details, in
// flight, the id counter.
func queueKeys(ns, name string) (ready, details, inflight, seq string) {
	k := "queues/" + name
	return keys.Aux(ns, k, "queue"), keys.Aux(ns, k, "queue-messages"), keys.Aux(ns, k, "queue-inflight"), keys.Aux(ns, k, "queue-seq")
}

// moreKeys are the other Redis keys of queue name in ns: the dead letters,
// the remembered idempotency keys.
func moreKeys(ns, name string) (dead, dedup string) {
	k := "queues/" + name
	return keys.Aux(ns, k, "queue-dead"), keys.Aux(ns, k, "queue-dedup")
}

// indexKey is namespace ns's index of queues.
func indexKey(ns string) string { return keys.Namespace(ns, "queues") }

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
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	q := &Queues{rdb: rdb, opts: opts}
	// One message is for one claim: it wakes the claim of each instance
	// that waits longest, which takes it or, beaten by another instance,
	// waits on.
	q.wakeup = wakeup.New(rdb, readyKind, wakeup.First, func(ns, name string) (string, bool) {
		if !keys.ValidSegment(name) {
			return "", false
		}
		ready, _, _, _ := queueKeys(ns, name)
		return ready, true
	})
	return q
}

// Close stops the subscription; waiting claims return ErrClosed.
func (q *Queues) Close() error { return q.wakeup.Close() }

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

// Enqueue adds a message to queue name. It reports whether the queue
// answered from the request's idempotency key, adding nothing; the message
// is then the first enqueue's, without its value.
func (q *Queues) Enqueue(ctx context.Context, ns, name string, req EnqueueRequest) (Message, bool, error) {
	if err := validName(ns, name); err != nil {
		return Message{}, false, err
	}
	switch {
	case req.Delay < 0 || req.Delay > MaxDelay:
		return Message{}, false, fmt.Errorf("%w: delay %v must be between 0 and %v", ErrInvalidArgument, req.Delay, MaxDelay)
	case req.TTL < 0 || req.TTL > MaxTTL || req.TTL > 0 && req.TTL <= req.Delay:
		return Message{}, false, fmt.Errorf("%w: ttl %v must be 0 (until acked), or more than the delay and at most %v", ErrInvalidArgument, req.TTL, MaxTTL)
	case req.MaxAttempts < 0 || req.MaxAttempts > MaxAttempts:
		return Message{}, false, fmt.Errorf("%w: max attempts %d must be between 0 (no bound) and %d", ErrInvalidArgument, req.MaxAttempts, MaxAttempts)
	case req.IdempotencyKey != "" && !keys.ValidSegment(req.IdempotencyKey):
		return Message{}, false, fmt.Errorf("%w: idempotency key %q must be 1-128 characters of [A-Za-z0-9._:@-]", ErrInvalidArgument, req.IdempotencyKey)
	case req.MaxLength < 0 || req.MaxLength > MaxLength:
		return Message{}, false, fmt.Errorf("%w: max length %d must be between 0 (no bound) and %d", ErrInvalidArgument, req.MaxLength, MaxLength)
	case !json.Valid(req.Value):
		return Message{}, false, fmt.Errorf("%w: the value is not JSON", ErrInvalidArgument)
	}
	ready, details, inflight, seq := queueKeys(ns, name)
	_, dedup := moreKeys(ns, name)
	digest := ""
	if req.IdempotencyKey != "" {
		h := sha256.New()
		fmt.Fprintf(h, "%d\x00%d\x00%d\x00", req.Delay.Milliseconds(), req.MaxAttempts, req.TTL.Milliseconds())
		h.Write(req.Value)
		digest = hex.EncodeToString(h.Sum(nil)[:12])
	}
	var cmd *redis.Cmd
	run := func(p redis.Pipeliner) {
		cmd = enqueueScript.EvalSha(ctx, p, []string{ready, details, seq, dedup, inflight},
			string(req.Value), req.Delay.Milliseconds(), readyChannel(ns), name,
			req.MaxAttempts, req.IdempotencyKey, digest, q.opts.DedupWindow.Milliseconds(), req.TTL.Milliseconds(), req.MaxLength)
		// The index is in another hash slot: its entry goes in the same
		// round trip, not the same script. A purge racing with an enqueue
		// may leave a queue with messages out of it until the next one.
		p.ZAdd(ctx, indexKey(ns), redis.Z{Score: float64(time.Now().UnixMilli()), Member: name})
	}
	exec := func() error {
		_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error { run(p); return nil })
		return err
	}
	err := exec()
	if rediserr.NoScript(cmd.Err()) {
		// A script cache emptied (by a restart, or first use): load it.
		if err = enqueueScript.Load(ctx, q.rdb).Err(); err == nil {
			err = exec()
		}
	}
	if err != nil {
		return Message{}, false, redisError("enqueue", name, err)
	}
	res, err := cmd.Slice()
	if err != nil {
		return Message{}, false, redisError("enqueue", name, err)
	}
	if len(res) != 4 {
		return Message{}, false, fmt.Errorf("queue: enqueue %q: unexpected script reply %v", name, res)
	}
	id, _ := res[0].(string)
	enq, _ := res[1].(int64)
	at, _ := res[2].(int64)
	replayed, _ := res[3].(int64)
	m := Message{ID: id, EnqueuedAt: time.UnixMilli(enq), VisibleAt: time.UnixMilli(at), MaxAttempts: req.MaxAttempts}
	if req.TTL > 0 {
		m.ExpiresAt = m.EnqueuedAt.Add(req.TTL)
	}
	switch replayed {
	case -2:
		return Message{}, false, fmt.Errorf("%w: queue %q holds %d messages or more (max_length)", ErrQueueFull, name, req.MaxLength)
	case -1:
		return Message{}, false, fmt.Errorf("%w: key %q was used on queue %q for message %s, with another value, delay, max attempts or ttl",
			ErrIdempotencyMismatch, req.IdempotencyKey, name, id)
	case 1:
		q.replayed.Add(1)
		return m, true, nil
	}
	q.enqueued.Add(1)
	m.Value = req.Value
	return m, false, nil
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
	var wake <-chan struct{}
	if req.Wait > 0 {
		select {
		case <-q.wakeup.Done():
			return nil, ErrClosed
		default:
		}
		ready, _, _, _ := queueKeys(ns, name)
		var unregister func()
		wake, unregister = q.wakeup.Register(ready)
		defer unregister()
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
		case <-q.wakeup.Done():
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
	dead, _ := moreKeys(ns, name)
	res, err := claimScript.Run(ctx, q.rdb, []string{ready, details, inflight, dead}, args...).Slice()
	if err != nil {
		return nil, 0, redisError("claim", name, err)
	}
	const head, per = 4, 7
	if len(res) < head || (len(res)-head)%per != 0 {
		return nil, 0, fmt.Errorf("queue: claim %q: unexpected script reply %v", name, res)
	}
	now, _ := res[0].(int64)
	died, _ := res[2].(int64)
	expired, _ := res[3].(int64)
	q.dead.Add(uint64(max(died, 0)))
	q.expired.Add(uint64(max(expired, 0)))
	if len(res) == head {
		next, _ := res[1].(int64)
		if next == 0 {
			return nil, 0, nil
		}
		return nil, max(time.Duration(next-now)*time.Millisecond, 0), nil
	}
	msgs := make([]Message, (len(res)-head)/per)
	for j := range msgs {
		i := head + per*j
		id, _ := res[i].(string)
		value, _ := res[i+1].(string)
		attempts, _ := res[i+2].(int64)
		enq, _ := res[i+3].(int64)
		until, _ := res[i+4].(int64)
		most, _ := res[i+5].(int64)
		expires, _ := res[i+6].(int64)
		msgs[j] = Message{ID: id, Value: json.RawMessage(value), Attempts: int(attempts), MaxAttempts: int(most),
			EnqueuedAt: time.UnixMilli(enq), VisibleAt: time.UnixMilli(until), Receipt: args[2+j].(string), Owner: req.Owner}
		if expires > 0 {
			msgs[j].ExpiresAt = time.UnixMilli(expires)
		}
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
		q.wakeup.WakeFirst(ready) // this instance's claims need not wait for the message
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
	infos, err := q.stats(ctx, ns, []string{name})
	if err != nil {
		return Stats{}, err
	}
	return infos[0].Stats, nil
}

// Queues returns the queues of namespace ns whose names start with prefix
// (all of them for ""), sorted by name, with their counts. A queue is
// listed from its first enqueue until it is purged, with messages or not.
// It reads the namespace's index, never the keyspace.
func (q *Queues) Queues(ctx context.Context, ns, prefix string) ([]QueueInfo, error) {
	if err := keys.ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	members, err := q.rdb.ZRange(ctx, indexKey(ns), 0, -1).Result()
	if err != nil {
		return nil, redisError("list", prefix, err)
	}
	var names []string
	for _, name := range members {
		if strings.HasPrefix(name, prefix) && keys.ValidSegment(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return q.stats(ctx, ns, names)
}

// stats counts the named queues' messages in one round trip.
func (q *Queues) stats(ctx context.Context, ns string, names []string) ([]QueueInfo, error) {
	out := make([]QueueInfo, len(names))
	if len(names) == 0 {
		return out, nil
	}
	cmds := make([]*redis.Cmd, len(names))
	read := func() error {
		_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, name := range names {
				ready, _, inflight, _ := queueKeys(ns, name)
				dead, _ := moreKeys(ns, name)
				cmds[i] = statsScript.EvalSha(ctx, p, []string{ready, inflight, dead})
			}
			return nil
		})
		return err
	}
	err := read()
	if rediserr.NoScript(err) {
		if err = statsScript.Load(ctx, q.rdb).Err(); err == nil {
			err = read()
		}
	}
	if err != nil {
		return nil, redisError("stats", names[0], err)
	}
	for i, name := range names {
		res, err := cmds[i].Int64Slice()
		if err != nil {
			return nil, redisError("stats", name, err)
		}
		if len(res) != 4 {
			return nil, fmt.Errorf("queue: stats %q: unexpected script reply %v", name, res)
		}
		out[i] = QueueInfo{Name: name, Stats: Stats{Visible: int(res[0]), Delayed: int(res[1]), InFlight: int(res[2]), Dead: int(res[3])}}
	}
	return out, nil
}

// Dead reads up to limit (1 to MaxDeadPage) dead letters of queue name,
// in the order added, starting after id after ("": from the first); it
// also returns how many there are in all.
func (q *Queues) Dead(ctx context.Context, ns, name, after string, limit int) ([]Message, int, error) {
	if err := validName(ns, name); err != nil {
		return nil, 0, err
	}
	if after != "" && !validID(after) {
		return nil, 0, fmt.Errorf("%w: after %q must be a message id (16 digits)", ErrInvalidArgument, after)
	}
	if limit < 1 || limit > MaxDeadPage {
		return nil, 0, fmt.Errorf("%w: limit %d must be between 1 and %d", ErrInvalidArgument, limit, MaxDeadPage)
	}
	_, details, _, _ := queueKeys(ns, name)
	dead, _ := moreKeys(ns, name)
	res, err := deadScript.Run(ctx, q.rdb, []string{dead, details}, after, limit).Slice()
	if err != nil {
		return nil, 0, redisError("dead letters", name, err)
	}
	const per = 5
	if len(res) < 1 || (len(res)-1)%per != 0 {
		return nil, 0, fmt.Errorf("queue: dead letters %q: unexpected script reply %v", name, res)
	}
	total, _ := res[0].(int64)
	msgs := make([]Message, (len(res)-1)/per)
	for j := range msgs {
		i := 1 + per*j
		id, _ := res[i].(string)
		value, _ := res[i+1].(string)
		details, _ := res[i+2].(string)
		most, _ := res[i+3].(int64)
		deadAt, _ := res[i+4].(int64)
		m := Message{ID: id, Value: json.RawMessage(value), MaxAttempts: int(most), DeadAt: time.UnixMilli(deadAt)}
		// "<attempts>|<enqueued_at>||<owner>"
		parts := strings.SplitN(details, "|", 4)
		if len(parts) == 4 {
			m.Attempts, _ = strconv.Atoi(parts[0])
			enq, _ := strconv.ParseInt(parts[1], 10, 64)
			m.EnqueuedAt, m.Owner = time.UnixMilli(enq), parts[3]
		}
		msgs[j] = m
	}
	return msgs, int(total), nil
}

// Redrive gives dead letters of queue name back, visible at once, their
// attempts counted from 0 again: those of ids (the ones dead of them), or
// else up to limit (1 to MaxDeadPage), oldest first. It returns how many
// it gave back and how many dead letters are left.
func (q *Queues) Redrive(ctx context.Context, ns, name string, ids []string, limit int) (int, int, error) {
	if err := validName(ns, name); err != nil {
		return 0, 0, err
	}
	if len(ids) > MaxDeadPage {
		return 0, 0, fmt.Errorf("%w: %d ids, more than %d", ErrInvalidArgument, len(ids), MaxDeadPage)
	}
	for _, id := range ids {
		if !validID(id) {
			return 0, 0, fmt.Errorf("%w: message id %q must be 16 digits", ErrInvalidArgument, id)
		}
	}
	if len(ids) == 0 && (limit < 1 || limit > MaxDeadPage) {
		return 0, 0, fmt.Errorf("%w: limit %d must be between 1 and %d", ErrInvalidArgument, limit, MaxDeadPage)
	}
	ready, details, _, _ := queueKeys(ns, name)
	dead, _ := moreKeys(ns, name)
	args := []any{readyChannel(ns), name, max(limit, 1)}
	for _, id := range ids {
		args = append(args, id)
	}
	res, err := redriveScript.Run(ctx, q.rdb, []string{dead, details, ready}, args...).Int64Slice()
	if err != nil {
		return 0, 0, redisError("redrive", name, err)
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("queue: redrive %q: unexpected script reply %v", name, res)
	}
	if res[0] > 0 {
		q.redriven.Add(uint64(res[0]))
		q.wakeup.Wake(ready)
	}
	return int(res[0]), int(res[1]), nil
}

// DropDead deletes dead letter id of queue name; ErrNotDead when no dead
// letter has the id.
func (q *Queues) DropDead(ctx context.Context, ns, name, id string) error {
	if err := validName(ns, name); err != nil {
		return err
	}
	if !validID(id) {
		return fmt.Errorf("%w: message id %q must be 16 digits", ErrInvalidArgument, id)
	}
	_, details, _, _ := queueKeys(ns, name)
	dead, _ := moreKeys(ns, name)
	n, err := dropDeadScript.Run(ctx, q.rdb, []string{dead, details}, id).Int()
	if err != nil {
		return redisError("drop dead letter", name, err)
	}
	if n == 0 {
		return ErrNotDead
	}
	return nil
}

// Purge deletes queue name and every message in it, claimed, dead or
// not, with the idempotency keys it remembers; it returns how many
// messages there were. The queue leaves the namespace's index.
func (q *Queues) Purge(ctx context.Context, ns, name string) (int, error) {
	if err := validName(ns, name); err != nil {
		return 0, err
	}
	ready, details, inflight, seq := queueKeys(ns, name)
	dead, dedup := moreKeys(ns, name)
	var n1, n2, n3 *redis.IntCmd
	_, err := q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n1, n2, n3 = p.ZCard(ctx, ready), p.ZCard(ctx, inflight), p.ZCard(ctx, dead)
		p.Del(ctx, ready, details, inflight, seq, dead, dedup)
		return nil
	})
	if err == nil {
		err = q.rdb.ZRem(ctx, indexKey(ns), name).Err()
	}
	if err != nil {
		return 0, redisError("purge", name, err)
	}
	return int(n1.Val() + n2.Val() + n3.Val()), nil
}

// validID reports a message id: 16 digits.
func validID(id string) bool {
	_, err := strconv.ParseUint(id, 10, 64)
	return err == nil && len(id) == 16
}

// validMessage checks a message's address and receipt.
func validMessage(ns, name, id, receipt string) error {
	if err := validName(ns, name); err != nil {
		return err
	}
	if !validID(id) {
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
