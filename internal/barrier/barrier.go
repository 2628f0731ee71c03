// Package barrier provides cyclic barriers on Redis: a fleet's workers
// meet at a named barrier, each waiting until the number of parties the
// barrier asks for have arrived; the last arrival trips it, every waiter
// of every instance passes together, and the barrier's next generation
// begins, for the next phase of the work.
//
// A party is a worker id: one worker arriving twice counts once, so a
// request sent again after a lost answer does not count twice. An arrival
// counts while its request waits and for Request.TTL after its wait ends
// (a party may come back and wait again without losing its place); a
// waiting request whose caller goes away withdraws it. A request sent
// again after its barrier tripped would arrive at the next generation: an
// idempotency key makes such a request learn that its generation passed.
//
// Waiters wake on the trip's message (one pattern subscription per
// Barriers, package wakeup) and on a timer, as a safety net.
//
// Redis layout for barrier B in namespace N (in B's subtree slot):
//
//	ms:{N/sub}…#barrier          hash: "gen", "parties", "last", "i:<party> <key>"
//	ms:{N/sub}…#barrier-arrived  sorted set: party → when its arrival lapses (ms)
//	ms:{N}#barrier-tripped       pub/sub channel; message: B, when it trips
//	ms:{N}#barriers              the namespace's index (package nameindex):
//	                             B → its latest arrival (ms), for List
//
// Both of B's keys expire after Options.Keep without an arrival.
package barrier

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/nameindex"
	"github.com/memsync/memsync/internal/rediserr"
	"github.com/memsync/memsync/internal/wakeup"
)

// Defaults and limits.
const (
	DefaultMaxWait       = 60 * time.Second
	DefaultRetryInterval = 250 * time.Millisecond
	// DefaultTTL is how long an arrival counts after its wait ends.
	DefaultTTL = 30 * time.Second
	// MaxTTL bounds Request.TTL.
	MaxTTL = time.Hour
	// DefaultKeep is how long a barrier nobody arrives at is kept.
	DefaultKeep = 24 * time.Hour
	// MaxParties bounds Request.Parties.
	MaxParties = 1000
)

// Errors. Redis failures come back wrapped with the operation and are none
// of these.
var (
	// ErrInvalidArgument: a bad name, party, count or duration.
	ErrInvalidArgument = errors.New("barrier: invalid argument")
	// ErrPartiesMismatch: parties are waiting at the barrier for another
	// number of parties.
	ErrPartiesMismatch = errors.New("barrier: parties mismatch")
	// ErrNotFound: Redis holds no such barrier (never used, or idle past
	// Options.Keep).
	ErrNotFound = errors.New("barrier: not found")
	// ErrBroken: a Reset broke the generation the arrival waited at.
	ErrBroken = errors.New("barrier: generation broken by a reset")
	// ErrClosed: an arrival had to wait on closed Barriers.
	ErrClosed = errors.New("barrier: closed")
	// ErrUnavailable wraps any failure to reach Redis.
	ErrUnavailable = errors.New("barrier: backend unavailable")
)

func redisError(op, name string, err error) error {
	return rediserr.Wrap("barrier", ErrUnavailable, op, name, err)
}

// Options configure Barriers. The zero value is ready to use.
type Options struct {
	// MaxWait bounds Request.Wait (DefaultMaxWait).
	MaxWait time.Duration
	// RetryInterval is how often a waiting arrival looks again without
	// being woken (DefaultRetryInterval).
	RetryInterval time.Duration
	// Keep is how long a barrier nobody arrives at is kept (DefaultKeep):
	// past it, its generation starts again at 0.
	Keep time.Duration
}

// Request is an arrival.
type Request struct {
	// Parties is how many parties the barrier waits for, 1 to MaxParties.
	// Every party of a generation must ask the same.
	Parties int
	// Wait is how long to wait for the barrier to trip: 0 only arrives
	// (or looks), at most Options.MaxWait.
	Wait time.Duration
	// TTL is how long the arrival counts after the wait ends (DefaultTTL
	// for 0; at most MaxTTL).
	TTL time.Duration
	// Party names the arriving worker (a key segment).
	Party string
	// IdempotencyKey, when set, lets the same party's request sent again
	// learn that the generation it arrived at has passed, rather than
	// arrive at the next one (for that generation and the one after).
	IdempotencyKey string
}

// State is what an arrival or a read finds.
type State struct {
	Name string
	// Generation: for a tripped arrival the generation it passed, else the
	// one being waited on. Generations count from 0.
	Generation int64
	Parties    int
	// Tripped reports that the arrival's generation passed.
	Tripped bool
	// Arrived names, sorted, the parties that passed the generation (when
	// known) or, not tripped, those arrived so far.
	Arrived []string
}

// Barriers serves the barriers of every namespace of one Redis. It is safe
// for concurrent use; create one per process and Close it when done.
type Barriers struct {
	rdb    redis.UniversalClient
	opts   Options
	wakeup *wakeup.Hub // by the barrier's hash key

	arrivals, trips atomic.Uint64
}

// Stats are the counts since Barriers started, for metrics.
type Stats struct {
	Arrivals uint64 // Arrive calls that counted a party in or found it passed
	Trips    uint64 // arrivals that tripped their barrier
}

// Stats returns the counts.
func (b *Barriers) Stats() Stats { return Stats{Arrivals: b.arrivals.Load(), Trips: b.trips.Load()} }

const trippedKind = "barrier-tripped"

func barrierKeys(ns, name string) []string {
	return []string{keys.Aux(ns, name, "barrier"), keys.Aux(ns, name, "barrier-arrived")}
}

// New returns Barriers on rdb, subscribed at once to the trip channel of
// every namespace. rdb stays the caller's.
func New(rdb redis.UniversalClient, opts Options) *Barriers {
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRetryInterval
	}
	if opts.Keep <= 0 {
		opts.Keep = DefaultKeep
	}
	b := &Barriers{rdb: rdb, opts: opts}
	b.wakeup = wakeup.New(rdb, trippedKind, wakeup.Every, func(ns, name string) (string, bool) {
		if keys.Validate(name) != nil {
			return "", false
		}
		return barrierKeys(ns, name)[0], true
	})
	return b
}

// Close stops the subscription; waiting arrivals return ErrClosed.
func (b *Barriers) Close() error { return b.wakeup.Close() }

func valid(ns, name string) error {
	if err := keys.ValidateNamespace(ns); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	if err := keys.Validate(name); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return nil
}

// Arrive counts req.Party in at barrier name and waits up to req.Wait for
// the barrier to trip. A wait that ends first returns the state with
// Tripped false, and no error; the arrival counts on for req.TTL.
// Errors: ErrInvalidArgument, ErrPartiesMismatch, ErrBroken (a Reset),
// ErrClosed, ctx's error (the arrival withdrawn), or a Redis failure.
func (b *Barriers) Arrive(ctx context.Context, ns, name string, req Request) (State, error) {
	if err := valid(ns, name); err != nil {
		return State{}, err
	}
	if req.TTL == 0 {
		req.TTL = DefaultTTL
	}
	switch {
	case !keys.ValidSegment(req.Party):
		return State{}, fmt.Errorf("%w: party %q must be a worker id (1-128 characters of [A-Za-z0-9._:@-])", ErrInvalidArgument, req.Party)
	case req.Parties < 1 || req.Parties > MaxParties:
		return State{}, fmt.Errorf("%w: parties %d must be between 1 and %d", ErrInvalidArgument, req.Parties, MaxParties)
	case req.Wait < 0 || req.Wait > b.opts.MaxWait:
		return State{}, fmt.Errorf("%w: wait %v must be between 0 and %v", ErrInvalidArgument, req.Wait, b.opts.MaxWait)
	case req.TTL < time.Millisecond || req.TTL > MaxTTL:
		return State{}, fmt.Errorf("%w: ttl %v must be between 1ms and %v", ErrInvalidArgument, req.TTL, MaxTTL)
	case req.IdempotencyKey != "" && !keys.ValidSegment(req.IdempotencyKey):
		return State{}, fmt.Errorf("%w: idempotency key %q must be 1-128 characters of [A-Za-z0-9._:@-]", ErrInvalidArgument, req.IdempotencyKey)
	}
	// The namespace's index (another hash slot) is touched first: a
	// listing never misses a barrier arrived at.
	if err := nameindex.Touch(ctx, b.rdb, ns, indexKind, name).Err(); err != nil {
		return State{}, redisError("arrive", name, err)
	}
	bk := barrierKeys(ns, name)
	var wake <-chan struct{}
	if req.Wait > 0 {
		select {
		case <-b.wakeup.Done():
			return State{}, ErrClosed
		default:
		}
		var unregister func()
		wake, unregister = b.wakeup.Register(bk[0])
		defer unregister()
	}
	deadline := time.Now().Add(req.Wait)
	timer := time.NewTimer(req.Wait)
	defer timer.Stop()
	expected := int64(-1)
	for {
		left := max(time.Until(deadline), 0)
		st, err := b.try(ctx, ns, name, req, left+req.TTL, expected)
		if err != nil || st.Tripped || left == 0 {
			return st, err
		}
		expected = st.Generation
		timer.Reset(min(left, b.opts.RetryInterval))
		select {
		case <-ctx.Done():
			b.leave(bk, req.Party, expected)
			return State{}, fmt.Errorf("barrier: arrive at %q: %w", name, ctx.Err())
		case <-b.wakeup.Done():
			return State{}, ErrClosed
		case <-wake:
		case <-timer.C:
		}
	}
}

// try runs arriveScript once.
func (b *Barriers) try(ctx context.Context, ns, name string, req Request, counts time.Duration, expected int64) (State, error) {
	res, err := arriveScript.Run(ctx, b.rdb, barrierKeys(ns, name), req.Party, req.Parties, counts.Milliseconds(),
		expected, req.IdempotencyKey, wakeup.Channel(ns, trippedKind), name, b.opts.Keep.Milliseconds()).Slice()
	if err != nil {
		return State{}, redisError("arrive", name, err)
	}
	if len(res) < 3 {
		return State{}, fmt.Errorf("barrier: arrive at %q: unexpected script reply %v", name, res)
	}
	outcome, _ := res[0].(int64)
	gen, _ := res[1].(int64)
	parties, _ := res[2].(int64)
	switch outcome {
	case -1:
		return State{}, fmt.Errorf("%w: barrier %q waits for %d parties, not %d", ErrPartiesMismatch, name, parties, req.Parties)
	case -2:
		return State{}, fmt.Errorf("%w: barrier %q, generation %d", ErrBroken, name, gen)
	}
	if expected < 0 {
		b.arrivals.Add(1) // a first try, not a waiter looking again
	}
	if outcome == 2 {
		b.trips.Add(1)
	}
	return newState(name, gen, parties, outcome >= 1, res[3:]), nil
}

// leave withdraws an arrival whose request went away, unless its
// generation passed meanwhile.
func (b *Barriers) leave(bk []string, party string, gen int64) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = leaveScript.Run(ctx, b.rdb, bk, party, gen).Err() // best effort: it lapses anyway
}

// Reset breaks barrier name's current generation, as an operator unsticks
// a barrier that waits for a party that will not come: the arrivals are
// dropped, the waiting parties get ErrBroken, and the next generation
// begins. It returns the generation broken and how many had arrived;
// ErrNotFound when Redis holds no such barrier.
func (b *Barriers) Reset(ctx context.Context, ns, name string) (int64, int, error) {
	if err := valid(ns, name); err != nil {
		return 0, 0, err
	}
	res, err := resetScript.Run(ctx, b.rdb, barrierKeys(ns, name), wakeup.Channel(ns, trippedKind), name).Int64Slice()
	if err != nil {
		return 0, 0, redisError("reset", name, err)
	}
	if len(res) == 0 {
		return 0, 0, ErrNotFound
	}
	if len(res) != 2 {
		return 0, 0, fmt.Errorf("barrier: reset %q: unexpected script reply %v", name, res)
	}
	return res[0], int(res[1]), nil
}

// Get reads barrier name: its generation, parties and live arrivals.
// ErrNotFound when Redis holds none.
func (b *Barriers) Get(ctx context.Context, ns, name string) (State, error) {
	if err := valid(ns, name); err != nil {
		return State{}, err
	}
	res, err := stateScript.Run(ctx, b.rdb, barrierKeys(ns, name)).Slice()
	if err != nil {
		return State{}, redisError("get", name, err)
	}
	if len(res) == 0 {
		return State{}, ErrNotFound
	}
	if len(res) < 2 {
		return State{}, fmt.Errorf("barrier: get %q: unexpected script reply %v", name, res)
	}
	gen, _ := res[0].(int64)
	parties, _ := res[1].(int64)
	return newState(name, gen, parties, false, res[2:]), nil
}

// indexKind names the namespace's index of barriers (package nameindex).
const indexKind = "barriers"

// List returns the barriers of namespace ns whose names start with prefix
// (all for ""), sorted by name, each as Get reads it. It reads the
// namespace's index, never the keyspace, then each barrier it names (a
// round trip each), and drops from the index the names of barriers gone
// (idle for Options.Keep).
func (b *Barriers) List(ctx context.Context, ns, prefix string) ([]State, error) {
	if err := keys.ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	entries, err := nameindex.Names(ctx, b.rdb, ns, indexKind, prefix, func(name string) bool { return keys.Validate(name) == nil })
	if err != nil {
		return nil, redisError("list", prefix, err)
	}
	out := []State{}
	var gone []nameindex.Entry
	for _, e := range entries {
		st, err := b.Get(ctx, ns, e.Name)
		if errors.Is(err, ErrNotFound) {
			gone = append(gone, e)
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	_, _ = nameindex.Prune(ctx, b.rdb, ns, indexKind, gone) // the next listing tries again
	return out, nil
}

func newState(name string, gen, parties int64, tripped bool, names []any) State {
	st := State{Name: name, Generation: gen, Parties: int(parties), Tripped: tripped, Arrived: make([]string, 0, len(names))}
	for _, n := range names {
		if s, ok := n.(string); ok {
			st.Arrived = append(st.Arrived, s)
		}
	}
	slices.Sort(st.Arrived)
	return st
}
