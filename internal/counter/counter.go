// Package counter provides atomic integer counters on Redis, as INCRBY
// does, made safe to send again: an increment may carry an idempotency
// key, and a counter remembers its keyed increments for
// Options.DedupWindow, each with the value it made, so that an increment
// sent again after a lost answer is answered with that value and not
// applied twice. A hot counter remembers at most Options.MaxRemembered
// keys.
//
// Values are integers within ±(2^53−1), what a JSON number holds exactly
// in every client (JavaScript's safe integers); an increment that would
// leave that range is refused and changes nothing.
//
// Redis layout for counter C in namespace N (in C's subtree slot, as a
// key's data):
//
//	ms:{N/sub}…#counter          hash: "v" → the value; PEXPIRE its expiry
//	ms:{N/sub}…#counter-keys     hash: idempotency key → "<digest> <value>"
//	ms:{N/sub}…#counter-keys-at  sorted set: idempotency key → when
//	                             forgotten (ms); both expire a window after
//	                             the latest keyed increment
//	ms:{N}#counters              sorted set, the namespace's index: name →
//	                             when an Add or Set last touched it (ms);
//	                             List drops the names of counters gone
package counter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/nameindex"
	"github.com/memsync/memsync/internal/rediserr"
)

// MaxValue bounds a counter's value and an increment, both ways:
// 2^53 − 1.
const MaxValue = 1<<53 - 1

// DefaultDedupWindow is how long a counter remembers a keyed increment.
const DefaultDedupWindow = 10 * time.Minute

// DefaultMaxRemembered is the most keyed increments a counter remembers:
// past it, the oldest are forgotten first (about 100 bytes of Redis memory
// each).
const DefaultMaxRemembered = 100_000

// Errors. Redis failures come back wrapped with the operation and are none
// of these.
var (
	// ErrInvalidArgument: a bad name, TTL, increment or idempotency key.
	ErrInvalidArgument = errors.New("counter: invalid argument")
	// ErrNotFound: no such counter (or it expired).
	ErrNotFound = errors.New("counter: not found")
	// ErrOverflow: the increment would take the value past ±MaxValue.
	ErrOverflow = errors.New("counter: overflow")
	// ErrUnavailable wraps any failure to reach Redis.
	ErrUnavailable = errors.New("counter: backend unavailable")
)

// redisError names the operation of a failed Redis call and marks it
// ErrUnavailable when Redis could not serve (rediserr.Unavailable).
func redisError(op, name string, err error) error {
	return rediserr.Wrap("counter", ErrUnavailable, op, name, err)
}

// Options configure Counters.
type Options struct {
	// DefaultTTL is the expiry of a counter created without a TTL (0:
	// never expires).
	DefaultTTL time.Duration
	// MaxTTL bounds a TTL (0: no bound).
	MaxTTL time.Duration
	// DedupWindow is how long a keyed increment is remembered
	// (DefaultDedupWindow, 10 min).
	DedupWindow time.Duration
	// MaxRemembered is the most keyed increments a counter remembers
	// (DefaultMaxRemembered); the oldest go first.
	MaxRemembered int
}

// Counter is a counter's state.
type Counter struct {
	Name  string
	Value int64
	// ExpiresAt is zero for a counter that never expires.
	ExpiresAt time.Time
}

// AddRequest says how to change a counter.
type AddRequest struct {
	// By is added to the value (negative subtracts; 0 creates a missing
	// counter at 0): within ±MaxValue.
	By int64
	// TTL, when set, is the counter's expiry from now (0: never expires).
	// Unset, a counter created keeps Options.DefaultTTL and an existing one
	// keeps its expiry.
	TTL *time.Duration
	// IdempotencyKey, when set, makes the increment safe to send again:
	// while the counter remembers it (Options.DedupWindow, unless the
	// counter is deleted or Options.MaxRemembered later keys push it out), the same
	// request is answered with the value it made and not applied again.
	// The same key with another By or TTL is ErrInvalidArgument.
	IdempotencyKey string
}

// Counters serves the counters of every namespace of one Redis. It is safe
// for concurrent use.
type Counters struct {
	rdb  redis.UniversalClient
	opts Options

	added, replayed atomic.Uint64
}

// New returns Counters on rdb, which stays the caller's.
func New(rdb redis.UniversalClient, opts Options) *Counters {
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = DefaultDedupWindow
	}
	if opts.MaxRemembered <= 0 {
		opts.MaxRemembered = DefaultMaxRemembered
	}
	return &Counters{rdb: rdb, opts: opts}
}

// Stats are the counts since Counters started, for metrics.
type Stats struct {
	Added    uint64 // increments applied
	Replayed uint64 // increments answered by their idempotency key, not applied again
}

// Stats returns the counts.
func (c *Counters) Stats() Stats {
	return Stats{Added: c.added.Load(), Replayed: c.replayed.Load()}
}

// counterKeys are counter name's Redis keys: its value, the keyed
// increments remembered, when each is forgotten.
func counterKeys(ns, name string) []string {
	return []string{keys.Aux(ns, name, "counter"), keys.Aux(ns, name, "counter-keys"), keys.Aux(ns, name, "counter-keys-at")}
}

// valid checks a namespace and a counter name (a key).
func valid(ns, name string) error {
	if err := keys.ValidateNamespace(ns); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if err := keys.Validate(name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return nil
}

// ttlArg checks a TTL and returns it in ms for the scripts: -1 for unset.
func (c *Counters) ttlArg(ttl *time.Duration) (int64, error) {
	if ttl == nil {
		return -1, nil
	}
	if *ttl < 0 || c.opts.MaxTTL > 0 && *ttl > c.opts.MaxTTL {
		return 0, fmt.Errorf("%w: ttl %v must be between 0 (never expires) and %v", ErrInvalidArgument, *ttl, c.opts.MaxTTL)
	}
	if *ttl > 0 && *ttl < time.Millisecond {
		return 0, fmt.Errorf("%w: ttl %v is under a millisecond", ErrInvalidArgument, *ttl)
	}
	return ttl.Milliseconds(), nil
}

// Add adds req.By to counter name, creating it at 0 first when missing,
// and returns its new state. It reports whether the answer was replayed
// from the request's idempotency key (then nothing changed, and the value
// is the one the first request made). Errors: ErrInvalidArgument,
// ErrOverflow (nothing changed), or a Redis failure.
func (c *Counters) Add(ctx context.Context, ns, name string, req AddRequest) (Counter, bool, error) {
	if err := valid(ns, name); err != nil {
		return Counter{}, false, err
	}
	if req.By > MaxValue || req.By < -MaxValue {
		return Counter{}, false, fmt.Errorf("%w: by %d must be within ±%d", ErrInvalidArgument, req.By, int64(MaxValue))
	}
	if req.IdempotencyKey != "" && !keys.ValidSegment(req.IdempotencyKey) {
		return Counter{}, false, fmt.Errorf("%w: idempotency key %q must be 1-128 characters of [A-Za-z0-9._:@-]", ErrInvalidArgument, req.IdempotencyKey)
	}
	ttl, err := c.ttlArg(req.TTL)
	if err != nil {
		return Counter{}, false, err
	}
	digest := ""
	if req.IdempotencyKey != "" {
		h := sha256.Sum256([]byte(strconv.FormatInt(req.By, 10) + " " + strconv.FormatInt(ttl, 10)))
		digest = hex.EncodeToString(h[:12])
	}
	res, err := c.indexed(ctx, ns, name, addScript, counterKeys(ns, name), req.By, ttl, c.opts.DefaultTTL.Milliseconds(),
		req.IdempotencyKey, digest, int64(MaxValue), c.opts.DedupWindow.Milliseconds(), c.opts.MaxRemembered)
	if err != nil {
		return Counter{}, false, redisError("add", name, err)
	}
	if len(res) != 3 {
		return Counter{}, false, fmt.Errorf("counter: add %q: unexpected script reply %v", name, res)
	}
	switch res[2] {
	case -1:
		return Counter{}, false, fmt.Errorf("%w: idempotency key %q was used on counter %q with another increment or ttl",
			ErrInvalidArgument, req.IdempotencyKey, name)
	case -2:
		return Counter{}, false, fmt.Errorf("%w: adding %d to counter %q would take it past ±%d", ErrOverflow, req.By, name, int64(MaxValue))
	case 1:
		c.replayed.Add(1)
		return newCounter(name, res[0], res[1]), true, nil
	}
	c.added.Add(1)
	return newCounter(name, res[0], res[1]), false, nil
}

// Set sets counter name to value, creating it when missing; ttl as
// AddRequest.TTL. Keyed increments it remembers stay remembered.
func (c *Counters) Set(ctx context.Context, ns, name string, value int64, ttl *time.Duration) (Counter, error) {
	if err := valid(ns, name); err != nil {
		return Counter{}, err
	}
	if value > MaxValue || value < -MaxValue {
		return Counter{}, fmt.Errorf("%w: value %d must be within ±%d", ErrInvalidArgument, value, int64(MaxValue))
	}
	ms, err := c.ttlArg(ttl)
	if err != nil {
		return Counter{}, err
	}
	res, err := c.indexed(ctx, ns, name, setScript, counterKeys(ns, name)[:1], value, ms, c.opts.DefaultTTL.Milliseconds())
	if err != nil {
		return Counter{}, redisError("set", name, err)
	}
	if len(res) != 2 {
		return Counter{}, fmt.Errorf("counter: set %q: unexpected script reply %v", name, res)
	}
	return newCounter(name, res[0], res[1]), nil
}

// Get returns counter name; ErrNotFound when there is none.
func (c *Counters) Get(ctx context.Context, ns, name string) (Counter, error) {
	if err := valid(ns, name); err != nil {
		return Counter{}, err
	}
	k := counterKeys(ns, name)[0]
	var v *redis.StringCmd
	var ttl *redis.DurationCmd
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		v, ttl = p.HGet(ctx, k, "v"), p.PTTL(ctx, k)
		return nil
	})
	if errors.Is(err, redis.Nil) {
		return Counter{}, ErrNotFound
	}
	if err != nil {
		return Counter{}, redisError("get", name, err)
	}
	n, err := strconv.ParseInt(v.Val(), 10, 64)
	if err != nil {
		return Counter{}, fmt.Errorf("counter: get %q: value %q: %w", name, v.Val(), err)
	}
	pttl := ttl.Val().Milliseconds()
	if ttl.Val() < 0 { // go-redis gives -1 ns for no expiry
		pttl = -1
	}
	return newCounter(name, n, pttl), nil
}

// Delete deletes counter name, with the idempotency keys it remembers;
// ErrNotFound when there is none.
func (c *Counters) Delete(ctx context.Context, ns, name string) error {
	if err := valid(ns, name); err != nil {
		return err
	}
	ks := counterKeys(ns, name)
	var n *redis.IntCmd
	_, err := c.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.Exists(ctx, ks[0])
		p.Del(ctx, ks...)
		return nil
	})
	if err == nil {
		// The index is in another hash slot: a separate command.
		err = c.rdb.ZRem(ctx, nameindex.Key(ns, indexKind), name).Err()
	}
	if err != nil {
		return redisError("delete", name, err)
	}
	if n.Val() == 0 {
		return ErrNotFound
	}
	return nil
}

// indexKind names the namespace's index of counters (package nameindex).
const indexKind = "counters"

// indexed runs script, which writes counter name, and, in the same round
// trip, records name in the namespace's index (another hash slot, so not
// in the script): an index entry may name a counter gone, which List
// drops, but never misses one written.
func (c *Counters) indexed(ctx context.Context, ns, name string, script *redis.Script, ks []string, args ...any) ([]int64, error) {
	var cmd *redis.Cmd
	exec := func() error {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			cmd = script.EvalSha(ctx, p, ks, args...)
			nameindex.Touch(ctx, p, ns, indexKind, name)
			return nil
		})
		return err
	}
	err := exec()
	if rediserr.NoScript(cmd.Err()) {
		if err = script.Load(ctx, c.rdb).Err(); err == nil {
			err = exec()
		}
	}
	if err != nil {
		return nil, err
	}
	return cmd.Int64Slice()
}

// List returns the counters of namespace ns whose names start with prefix
// (all for ""), sorted by name. It reads the namespace's index, never the
// keyspace, and each counter it names, and drops from the index the
// names of counters gone (expired or deleted).
func (c *Counters) List(ctx context.Context, ns, prefix string) ([]Counter, error) {
	if err := keys.ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	entries, err := nameindex.Names(ctx, c.rdb, ns, indexKind, prefix, func(name string) bool { return keys.Validate(name) == nil })
	if err != nil {
		return nil, redisError("list", prefix, err)
	}
	out := []Counter{}
	if len(entries) == 0 {
		return out, nil
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name
	}
	values := make([]*redis.StringCmd, len(names))
	ttls := make([]*redis.DurationCmd, len(names))
	_, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, name := range names {
			k := counterKeys(ns, name)[0]
			values[i], ttls[i] = p.HGet(ctx, k, "v"), p.PTTL(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, redisError("list", prefix, err)
	}
	var gone []nameindex.Entry
	for i, name := range names {
		v, err := values[i].Int64()
		if errors.Is(err, redis.Nil) {
			gone = append(gone, entries[i])
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("counter: list: %q: %w", name, err)
		}
		pttl := ttls[i].Val().Milliseconds()
		if ttls[i].Val() < 0 {
			pttl = -1
		}
		out = append(out, newCounter(name, v, pttl))
	}
	_, _ = nameindex.Prune(ctx, c.rdb, ns, indexKind, gone) // the next listing tries again
	return out, nil
}

// newCounter makes a Counter of a value and a PTTL in ms (negative: none).
func newCounter(name string, value, pttl int64) Counter {
	out := Counter{Name: name, Value: value}
	if pttl >= 0 {
		out.ExpiresAt = time.Now().Add(time.Duration(pttl) * time.Millisecond)
	}
	return out
}
