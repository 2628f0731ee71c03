// Package lock provides leased, fenced mutual-exclusion locks on Redis.
//
// A lock is named like a memsync key ("tasks/T1") inside a namespace. Acquire
// grants it for a TTL and returns a random token, which Release and Refresh
// must present, and a fencing token (Fence) that strictly increases with every
// grant of that name, across Redis restarts too. A lease can end without the
// holder knowing (a GC pause, a network partition): it is NOT safe to assume
// the lock is still held after ExpiresAt, so hand Fence to the storage the lock
// protects and let it reject writes carrying a smaller fence than it has seen
// (Kleppmann, "How to do distributed locking").
//
// Waiting (AcquireRequest.Wait > 0) is event driven: a release publishes the
// lock name on the namespace's release channel, one pattern subscription per
// Locker fans it out to the waiters in the process, and waiters are served in
// arrival order across every instance, through a line in Redis (see wait.go).
// A waiter also wakes when the holder's TTL runs out, and, as a safety net for
// a lost message, retries every Options.RetryInterval.
//
// Redis layout for lock L in namespace N (all of one lock in L's subtree hash
// slot; see package keys):
//
//	ms:{N/sub}…#lock        hash: token, owner, fence, acquired_at, expires_at
//	                        (ms since the epoch, Redis clock), and idem ("<key>
//	                        <digest>") for a grant made under an idempotency
//	                        key; PEXPIREAT expires_at
//	ms:{N/sub}…#lock-fence  string: the last fence given for L; expires
//	                        fenceKeep after the lease it was set for
//	ms:{N/sub}…#lock-line   sorted set: the waiters in line, by token, scored
//	                        by arrival (µs, Redis clock); PEXPIRE a lease
//	ms:{N/sub}…#lock-leases hash: waiter token → "<lease end ms>|<owner>"
//	ms:{N}#locks            sorted set, the namespace's index: one member per
//	                        grant, "L#" + 16 hex digits of SHA-256(token),
//	                        score expires_at; read by List
//	ms:{N}#lock-released    pub/sub channel; message: L, on a release while
//	                        waiters stand in L's line, and when a waiter leaves it
package lock

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/pipeline"
	"github.com/memsync/memsync/internal/rediserr"
)

// Defaults of Options.
const (
	// DefaultMaxTTL is the default longest lease: no lock lives forever.
	DefaultMaxTTL = 5 * time.Minute
	// DefaultMaxWait is the default longest AcquireRequest.Wait.
	DefaultMaxWait = 60 * time.Second
	// DefaultRetryInterval is the default period of a waiter's safety-net
	// retry, for a release message that never arrived.
	DefaultRetryInterval = 250 * time.Millisecond
	// DefaultTrimInterval is how often, at most, an acquire in a namespace
	// also trims the namespace's lock index of expired grants.
	DefaultTrimInterval = time.Second
)

// fenceKeep is how long a lock's fence counter outlives the lease it was
// set for (acquireScript): fences rise with the Redis clock without it, so
// it only guards against the clock being stepped back, and a lock name used
// once does not keep a key forever.
const fenceKeep = 7 * 24 * time.Hour

// MaxOwnerLen is the longest AcquireRequest.Owner in bytes.
const MaxOwnerLen = 256

// Errors. Redis failures come back wrapped with the operation and are none
// of these.
var (
	// ErrInvalidArgument: a bad TTL, wait, owner or token. A bad namespace
	// or name also wraps keys.ErrInvalidKey.
	ErrInvalidArgument = errors.New("lock: invalid argument")
	// ErrLockHeld: someone else holds the lock. Acquire returns it inside a
	// *HeldError that says who and until when.
	ErrLockHeld = errors.New("lock: lock held")
	// ErrNotHeld: the token does not hold the lock (it expired, was
	// released, or was taken over), or ForceRelease found no holder.
	ErrNotHeld = errors.New("lock: lock not held")
	// ErrNotFound: Holder found no holder.
	ErrNotFound = errors.New("lock: lock not found")
	// ErrClosed: Acquire had to wait on a closed Locker.
	ErrClosed = errors.New("lock: locker closed")
	// ErrUnavailable wraps any failure to reach Redis.
	ErrUnavailable = errors.New("lock: backend unavailable")
)

// redisError names the operation of a failed Redis call and marks it
// ErrUnavailable unless Redis itself answered with an error (a bug or
// misuse), or the caller gave up.
func redisError(op, name string, err error) error {
	return rediserr.Wrap("lock", ErrUnavailable, op, name, err)
}

// HeldError is the error of an Acquire that did not get the lock because
// someone else holds it. errors.Is(err, ErrLockHeld) reports true for it.
type HeldError struct {
	// Holder is the holder's owner (empty when it gave none).
	Holder string
	// ExpiresAt is when the holder's lease ends unless refreshed (zero if
	// unknown), by the Redis clock: the earliest time worth retrying.
	ExpiresAt time.Time

	left    time.Duration // lease left as Redis saw it; drives the waiter's timer
	keptFor string        // the token of the waiter a free lock is kept for, if so
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("lock: lock held by %q until %s", e.Holder, e.ExpiresAt.UTC().Format(time.RFC3339Nano))
}

// Unwrap makes errors.Is(err, ErrLockHeld) true.
func (e *HeldError) Unwrap() error { return ErrLockHeld }

// Options configure a Locker. The zero value is ready to use.
type Options struct {
	// MaxTTL is the longest lease Acquire and Refresh accept. Defaults to
	// DefaultMaxTTL (5 min).
	MaxTTL time.Duration
	// MaxWait is the longest AcquireRequest.Wait accepted. Defaults to
	// DefaultMaxWait (60 s).
	MaxWait time.Duration
	// RetryInterval is how often a waiter at the head of its queue retries
	// even without a release message or the holder's expiry, in case a
	// message was lost. Defaults to DefaultRetryInterval (250 ms).
	RetryInterval time.Duration
	// TrimInterval is how often, at most, this Locker trims a namespace's
	// lock index of expired grants, along with an acquire. The index only
	// serves List, which skips expired grants by their scores, so trimming
	// is housekeeping: at every acquire it cost Redis a script call more
	// per lock taken. Defaults to DefaultTrimInterval (1 s).
	TrimInterval time.Duration
	// OnAcquire, if set, hears how long each Acquire took and whether it was
	// granted (for a wait-time histogram). It must be quick.
	OnAcquire func(took time.Duration, granted bool)
}

// AcquireRequest says how to acquire a lock.
type AcquireRequest struct {
	// TTL is the lease: required, at least 1 ms and at most Options.MaxTTL;
	// truncated to whole milliseconds.
	TTL time.Duration
	// Wait is how long to wait for a held lock: 0 tries once; at most
	// Options.MaxWait.
	Wait time.Duration
	// Owner names the holder for Holder, List and HeldError (optional; at
	// most MaxOwnerLen bytes).
	Owner string
	// IdempotencyKey, when set, makes the acquire safe to send again: while
	// the lock is held by the grant an acquire under this key made, an
	// acquire under it gets that grant again (Grant.Replayed), token
	// included, rather than ErrLockHeld. The same key with another Owner
	// or TTL is ErrInvalidArgument. 1-128 characters of [A-Za-z0-9._:@-].
	IdempotencyKey string
}

// Grant is a held lock.
type Grant struct {
	Name  string
	Owner string
	// Token proves holding the lock to Release and Refresh: 32 hex digits of
	// 16 random bytes. Keep it secret.
	Token string
	// Fence strictly increases with every grant of Name.
	Fence int64
	// AcquiredAt and ExpiresAt are by the Redis clock, to the millisecond.
	AcquiredAt time.Time
	ExpiresAt  time.Time
	// Replayed is true when the grant was made earlier, to an acquire under
	// the same AcquireRequest.IdempotencyKey.
	Replayed bool
}

// Info describes the holder of a lock, without its token.
type Info struct {
	Name       string
	Owner      string
	Fence      int64
	AcquiredAt time.Time
	ExpiresAt  time.Time
	// Waiters is how many acquires, on any instance, stand in line for the
	// lock with a live place (see wait.go).
	Waiters int
}

// Locker grants locks in any namespace of one Redis. It is safe for
// concurrent use; create one per process and Close it when done.
type Locker struct {
	rdb  redis.UniversalClient
	opts Options
	ps   *redis.PubSub

	mu     sync.Mutex
	queues map[string][]*waiter // waiters by lock key, in arrival order

	trimmed sync.Map // namespace → *atomic.Int64: Unix ns of its index's last trim

	// pipes coalesces the round trips of concurrent acquires and releases
	// into pipelines, as the store does its reads.
	pipes pipeline.Group

	grants, contended, replayed    atomic.Uint64
	permits, full, permitsReplayed atomic.Uint64 // the semaphores'

	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// New returns a Locker on rdb. It subscribes at once to the release channels
// of every namespace (one pattern subscription, kept up by go-redis across
// reconnects) and runs two goroutines that Close stops (the subscription's,
// and the renewal of its waiters' places in line). rdb stays the caller's.
func New(rdb redis.UniversalClient, opts Options) *Locker {
	if opts.MaxTTL <= 0 {
		opts.MaxTTL = DefaultMaxTTL
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRetryInterval
	}
	if opts.TrimInterval <= 0 {
		opts.TrimInterval = DefaultTrimInterval
	}
	l := &Locker{
		rdb:    rdb,
		opts:   opts,
		queues: make(map[string][]*waiter),
		done:   make(chan struct{}),
	}
	l.ps = rdb.PSubscribe(context.Background(), releasedPattern)
	ch := l.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024))
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		l.dispatch(ch)
	}()
	go func() {
		defer l.wg.Done()
		l.renewLeases()
	}()
	return l
}

// Close stops the subscription and its goroutine; waiting Acquires return
// ErrClosed. The other methods keep working while the Redis client is open.
func (l *Locker) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.closeErr = l.ps.Close()
		l.wg.Wait()
	})
	return l.closeErr
}

// Acquire takes lock name in namespace ns for req.TTL. When the lock is held
// it waits up to req.Wait for a release or the holder's expiry, in line behind
// the earlier waiters of every instance, and then returns a *HeldError
// (errors.Is(err, ErrLockHeld)). A free lock with waiters in line is held for
// the first of them: the HeldError names that waiter's owner. Other errors:
// ErrInvalidArgument, ErrClosed, ctx's error when it ends first (the waiter
// leaves the line), or a Redis failure.
func (l *Locker) Acquire(ctx context.Context, ns, name string, req AcquireRequest) (Grant, error) {
	if err := validName(ns, name); err != nil {
		return Grant{}, err
	}
	if err := l.validRequest(req); err != nil {
		return Grant{}, err
	}
	token, err := newToken()
	if err != nil {
		return Grant{}, fmt.Errorf("lock: acquire %q: %w", name, err)
	}
	start := time.Now()
	var g Grant
	if req.Wait == 0 {
		g, err = l.try(ctx, ns, name, token, req, 0)
	} else {
		g, err = l.wait(ctx, ns, name, token, req)
	}
	if g.Replayed { // a grant made earlier was counted then
		l.replayed.Add(1)
	} else {
		l.count(time.Since(start), err)
	}
	return g, err
}

// Stats are a Locker's counters since it started, for metrics.
type Stats struct {
	Grants    uint64 // locks granted
	Contended uint64 // acquires that found the lock held (granted after waiting, or not at all)
	Replayed  uint64 // acquires answered with a grant made earlier under their idempotency key

	Permits         uint64 // semaphore permits granted
	Full            uint64 // permit acquires that found the semaphore full (granted after waiting, or not at all)
	PermitsReplayed uint64 // permit acquires answered with a permit granted earlier under their idempotency key
}

// Stats returns the counters.
func (l *Locker) Stats() Stats {
	return Stats{Grants: l.grants.Load(), Contended: l.contended.Load(), Replayed: l.replayed.Load(),
		Permits: l.permits.Load(), Full: l.full.Load(), PermitsReplayed: l.permitsReplayed.Load()}
}

// count records the outcome of an Acquire that took waited.
func (l *Locker) count(waited time.Duration, err error) {
	if err == nil {
		l.grants.Add(1)
	}
	// A grant that took longer than a round trip or two waited for a holder.
	contended := errors.Is(err, ErrLockHeld) || (err == nil && waited > contentionThreshold)
	if contended {
		l.contended.Add(1)
	}
	if l.opts.OnAcquire != nil && (err == nil || errors.Is(err, ErrLockHeld)) {
		l.opts.OnAcquire(waited, err == nil)
	}
}

// contentionThreshold tells a grant that waited for a holder from one that
// only paid for its round trips.
const contentionThreshold = 5 * time.Millisecond

// try runs the acquire script once and, on a grant, records it in the index.
// lease is a waiter's (see waiterLease), 0 for an acquire that does not wait.
func (l *Locker) try(ctx context.Context, ns, name, token string, req AcquireRequest, lease time.Duration) (Grant, error) {
	lockKey := keys.Aux(ns, name, "lock")
	scriptKeys := []string{lockKey, keys.Aux(ns, name, "lock-fence"), lineKey(ns, name), leasesKey(ns, name)}
	scriptArgs := []any{token, req.TTL.Milliseconds(), req.Owner, lease.Milliseconds(), idempotencyArg(req)}
	// The index is in another hash slot, so the script cannot write it; its
	// entry goes in the same round trip, before the script's answer is
	// known. That is safe because entries are per grant (see member) and
	// List checks every lock it finds: the entry of a refused attempt points
	// at a lock someone else holds (which List rightly shows) or at nothing
	// (which it skips), and ages out with its score. Its score uses this
	// instance's clock, close to the Redis clock the lease runs on; expired
	// entries are trimmed by the Redis clock.
	idx := keys.Namespace(ns, "locks")
	score := float64(time.Now().Add(req.TTL).UnixMilli())
	trimDue := l.trimDue(ns)
	var run, trim *redis.Cmd
	err := l.pipes.Do(ctx, l.rdb, func(ctx context.Context, p redis.Pipeliner) {
		run = acquireScript.EvalSha(ctx, p, scriptKeys, scriptArgs...)
		p.ZAdd(ctx, idx, redis.Z{Score: score, Member: member(name, token)})
		if trimDue {
			trim = trimIndexScript.EvalSha(ctx, p, []string{idx})
		}
	})
	if err != nil {
		return Grant{}, redisError("acquire", name, err)
	}
	res, err := run.Slice()
	if rediserr.NoScript(err) {
		res, err = acquireScript.Run(ctx, l.rdb, scriptKeys, scriptArgs...).Slice()
	}
	if trim != nil && rediserr.NoScript(trim.Err()) {
		_ = trimIndexScript.Run(ctx, l.rdb, []string{idx}).Err() // loads it for next time
	}
	if err != nil {
		return Grant{}, redisError("acquire", name, err)
	}
	if ok, _ := toInt(res[0]); ok == -1 && len(res) == 1 {
		return Grant{}, fmt.Errorf("%w: idempotency key %q was used on lock %q for another owner or TTL",
			ErrInvalidArgument, req.IdempotencyKey, name)
	}
	if len(res) != 4 && len(res) != 5 {
		return Grant{}, fmt.Errorf("lock: acquire %q: unexpected script reply %v", name, res)
	}
	if ok, _ := toInt(res[0]); ok == 0 {
		owner, _ := res[1].(string)
		exp, err1 := toInt(res[2])
		now, err2 := toInt(res[3])
		if err := errors.Join(err1, err2); err != nil {
			return Grant{}, fmt.Errorf("lock: acquire %q: %w", name, err)
		}
		he := &HeldError{Holder: owner, left: -1}
		if len(res) == 5 {
			he.keptFor, _ = res[4].(string)
		}
		if exp > 0 {
			he.ExpiresAt = time.UnixMilli(exp)
			he.left = time.Duration(exp-now) * time.Millisecond
		}
		return Grant{}, he
	}
	fence, err1 := toInt(res[1])
	acq, err2 := toInt(res[2])
	exp, err3 := toInt(res[3])
	if err := errors.Join(err1, err2, err3); err != nil {
		return Grant{}, fmt.Errorf("lock: acquire %q: %w", name, err)
	}
	replayed := len(res) == 5
	if replayed {
		token, _ = res[4].(string) // the earlier grant's
	}
	return Grant{
		Name:       name,
		Owner:      req.Owner,
		Token:      token,
		Fence:      fence,
		AcquiredAt: time.UnixMilli(acq),
		ExpiresAt:  time.UnixMilli(exp),
		Replayed:   replayed,
	}, nil
}

// idempotencyArg is acquireScript's ARGV[5] for req: its idempotency key
// and a digest of what it asks (owner, TTL), or "" without a key.
func idempotencyArg(req AcquireRequest) string {
	if req.IdempotencyKey == "" {
		return ""
	}
	h := sha256.Sum256([]byte(req.Owner + "\x00" + strconv.FormatInt(req.TTL.Milliseconds(), 10)))
	return req.IdempotencyKey + " " + hex.EncodeToString(h[:12])
}

// trimDue reports whether ns's lock index is due for a trim (see
// Options.TrimInterval), and if so counts it as trimmed now: of acquires
// racing for a due trim, one gets it.
func (l *Locker) trimDue(ns string) bool {
	v, _ := l.trimmed.LoadOrStore(ns, new(atomic.Int64))
	last := v.(*atomic.Int64)
	now := time.Now().UnixNano()
	prev := last.Load()
	return now-prev >= int64(l.opts.TrimInterval) && last.CompareAndSwap(prev, now)
}

// Release gives up the lock that token holds. ErrNotHeld when the token does
// not hold it (it expired, was released or taken over); then nothing changes.
// Also ErrInvalidArgument, or a Redis failure.
func (l *Locker) Release(ctx context.Context, ns, name, token string) error {
	if err := validName(ns, name); err != nil {
		return err
	}
	if token == "" {
		return fmt.Errorf("%w: token is empty", ErrInvalidArgument)
	}
	lockKeys := []string{keys.Aux(ns, name, "lock"), lineKey(ns, name)}
	args := []any{token, releasedChannel(ns), name}
	// One round trip: the script, and the removal of this grant's index entry.
	// No other grant shares that member, so removing it is right whatever the
	// script finds. A script cache emptied by a restart makes EVALSHA fail
	// with NOSCRIPT; then Run sends the source.
	var cmd *redis.Cmd
	err := l.pipes.Do(ctx, l.rdb, func(ctx context.Context, p redis.Pipeliner) {
		cmd = releaseScript.EvalSha(ctx, p, lockKeys, args...)
		p.ZRem(ctx, keys.Namespace(ns, "locks"), member(name, token))
	})
	if err != nil {
		return redisError("release", name, err)
	}
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		cmd = releaseScript.Run(ctx, l.rdb, lockKeys, args...)
	}
	res, err := cmd.Slice()
	if err != nil {
		return redisError("release", name, err)
	}
	if len(res) == 0 {
		return fmt.Errorf("lock: release %q: unexpected script reply %v", name, res)
	}
	if ok, _ := toInt(res[0]); ok == 0 {
		return ErrNotHeld
	}
	// Waiters of this Locker need not wait for the pub/sub round trip.
	l.wakeHead(lockKeys[0])
	return nil
}

// ForceRelease deletes the lock whoever holds it, for administrators; the
// holder's next Refresh or Release gets ErrNotHeld. It returns ErrNotHeld when
// nobody holds the lock, so that a caller can tell; one that wants an
// idempotent delete ignores it with errors.Is. Also ErrInvalidArgument, or a
// Redis failure.
func (l *Locker) ForceRelease(ctx context.Context, ns, name string) error {
	if err := validName(ns, name); err != nil {
		return err
	}
	lockKey := keys.Aux(ns, name, "lock")
	res, err := forceReleaseScript.Run(ctx, l.rdb, []string{lockKey}, releasedChannel(ns), name).Slice()
	if err != nil {
		return redisError("force release", name, err)
	}
	if len(res) == 0 {
		return fmt.Errorf("lock: force release %q: unexpected script reply %v", name, res)
	}
	if ok, _ := toInt(res[0]); ok == 0 {
		return ErrNotHeld
	}
	l.wakeHead(lockKey)
	if len(res) == 2 {
		if token, ok := res[1].(string); ok {
			// Best effort: a member left behind is filtered out by List and
			// trimmed once its score passes.
			_ = l.rdb.ZRem(context.WithoutCancel(ctx), keys.Namespace(ns, "locks"), member(name, token)).Err()
		}
	}
	return nil
}

// Refresh sets the lease of the lock that token holds to ttl from now (it may
// shorten it) and returns the grant with its new ExpiresAt; Fence and
// AcquiredAt stay. ErrNotHeld when the token does not hold the lock; then
// nothing changes. Also ErrInvalidArgument, or a Redis failure.
func (l *Locker) Refresh(ctx context.Context, ns, name, token string, ttl time.Duration) (Grant, error) {
	if err := validName(ns, name); err != nil {
		return Grant{}, err
	}
	if token == "" {
		return Grant{}, fmt.Errorf("%w: token is empty", ErrInvalidArgument)
	}
	if err := l.validTTL(ttl); err != nil {
		return Grant{}, err
	}
	res, err := refreshScript.Run(ctx, l.rdb, []string{keys.Aux(ns, name, "lock")},
		token, ttl.Milliseconds()).Slice()
	if err != nil {
		return Grant{}, redisError("refresh", name, err)
	}
	if len(res) == 0 {
		return Grant{}, fmt.Errorf("lock: refresh %q: unexpected script reply %v", name, res)
	}
	if ok, _ := toInt(res[0]); ok == 0 {
		return Grant{}, ErrNotHeld
	}
	if len(res) != 5 {
		return Grant{}, fmt.Errorf("lock: refresh %q: unexpected script reply %v", name, res)
	}
	owner, _ := res[1].(string)
	fence, err1 := toInt(res[2])
	acq, err2 := toInt(res[3])
	exp, err3 := toInt(res[4])
	if err := errors.Join(err1, err2, err3); err != nil {
		return Grant{}, fmt.Errorf("lock: refresh %q: %w", name, err)
	}
	// Best effort, as in try; this also restores an entry a failed write lost.
	_ = l.rdb.ZAdd(context.WithoutCancel(ctx), keys.Namespace(ns, "locks"), redis.Z{Score: float64(exp), Member: member(name, token)}).Err()
	return Grant{
		Name:       name,
		Owner:      owner,
		Token:      token,
		Fence:      fence,
		AcquiredAt: time.UnixMilli(acq),
		ExpiresAt:  time.UnixMilli(exp),
	}, nil
}

// Holder describes who holds lock name. ErrNotFound when nobody does; also
// ErrInvalidArgument, or a Redis failure.
func (l *Locker) Holder(ctx context.Context, ns, name string) (Info, error) {
	if err := validName(ns, name); err != nil {
		return Info{}, err
	}
	var holder *redis.SliceCmd
	var leases *redis.StringSliceCmd
	if _, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		holder = p.HMGet(ctx, keys.Aux(ns, name, "lock"), infoFields...)
		leases = p.HVals(ctx, leasesKey(ns, name))
		return nil
	}); err != nil {
		return Info{}, redisError("holder", name, err)
	}
	info, ok := parseInfo(name, holder.Val())
	if !ok {
		return Info{}, ErrNotFound
	}
	info.Waiters = liveWaiters(leases.Val(), time.Now())
	return info, nil
}

// liveWaiters counts the places in line (values of a lock's leases hash,
// "<lease end ms>|<owner>") that have not lapsed at now. A lapsed place
// stays in Redis until it reaches the head of the line and is dropped.
func liveWaiters(leases []string, now time.Time) int {
	n := 0
	for _, v := range leases {
		end, _, _ := strings.Cut(v, "|")
		if ms, err := strconv.ParseInt(end, 10, 64); err == nil && ms >= now.UnixMilli() {
			n++
		}
	}
	return n
}

// List returns the held locks of namespace ns whose names start with prefix
// (all of them for ""), sorted by name. It reads the namespace's index, never
// the keyspace, and checks every candidate lock, so a lock released or expired
// meanwhile is left out. Errors: ErrInvalidArgument, or a Redis failure.
func (l *Locker) List(ctx context.Context, ns, prefix string) ([]Info, error) {
	if err := keys.ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	members, err := listScript.Run(ctx, l.rdb, []string{keys.Namespace(ns, "locks")}).StringSlice()
	if err != nil {
		return nil, redisError("list", "", err)
	}
	var names []string
	seen := make(map[string]bool)
	for _, m := range members {
		i := strings.LastIndexByte(m, '#')
		if i < 0 {
			continue
		}
		name := m[:i]
		if !strings.HasPrefix(name, prefix) || seen[name] || keys.Validate(name) != nil {
			continue
		}
		seen[name] = true
		names = append(names, name)
	}
	if len(names) == 0 {
		return []Info{}, nil
	}
	cmds := make([]*redis.SliceCmd, len(names))
	leases := make([]*redis.StringSliceCmd, len(names))
	_, err = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, name := range names {
			cmds[i] = p.HMGet(ctx, keys.Aux(ns, name, "lock"), infoFields...)
			leases[i] = p.HVals(ctx, leasesKey(ns, name))
		}
		return nil
	})
	if err != nil {
		return nil, redisError("list", "", err)
	}
	out := make([]Info, 0, len(names))
	now := time.Now()
	for i, name := range names {
		if info, ok := parseInfo(name, cmds[i].Val()); ok {
			info.Waiters = liveWaiters(leases[i].Val(), now)
			out = append(out, info)
		}
	}
	slices.SortFunc(out, func(a, b Info) int { return cmp.Compare(a.Name, b.Name) })
	return out, nil
}

var infoFields = []string{"owner", "fence", "acquired_at", "expires_at"}

// parseInfo reads an HMGET of infoFields; ok is false when the lock is gone.
func parseInfo(name string, vals []any) (Info, bool) {
	if len(vals) != len(infoFields) || vals[1] == nil {
		return Info{}, false
	}
	owner, _ := vals[0].(string)
	fence, err1 := toInt(vals[1])
	acq, err2 := toInt(vals[2])
	exp, err3 := toInt(vals[3])
	if errors.Join(err1, err2, err3) != nil {
		return Info{}, false
	}
	return Info{
		Name:       name,
		Owner:      owner,
		Fence:      fence,
		AcquiredAt: time.UnixMilli(acq),
		ExpiresAt:  time.UnixMilli(exp),
	}, true
}

func validName(ns, name string) error {
	if err := keys.ValidateNamespace(ns); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if err := keys.Validate(name); err != nil {
		return fmt.Errorf("%w: lock name: %w", ErrInvalidArgument, err)
	}
	return nil
}

func (l *Locker) validTTL(ttl time.Duration) error {
	if ttl < time.Millisecond || ttl > l.opts.MaxTTL {
		return fmt.Errorf("%w: ttl %v must be between 1ms and %v", ErrInvalidArgument, ttl, l.opts.MaxTTL)
	}
	return nil
}

func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// member is a grant's index entry: the name, '#' (outside the key alphabet,
// so the name is everything before the last '#'), and 16 hex digits of the
// SHA-256 of the token. Derived from the token, it is known to Release before
// the script runs, so both go in one round trip; hashed, it does not reveal
// the token to a reader of the index.
func member(name, token string) string {
	h := sha256.Sum256([]byte(token))
	return name + "#" + hex.EncodeToString(h[:8])
}

// toInt reads an integer from a script or HMGET reply element.
func toInt(v any) (int64, error) {
	switch v := v.(type) {
	case int64:
		return v, nil
	case string:
		return strconv.ParseInt(v, 10, 64)
	default:
		return 0, fmt.Errorf("not an integer: %v (%T)", v, v)
	}
}
