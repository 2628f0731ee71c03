package lock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/rediserr"
)

// Semaphores.
//
// A semaphore is a lock that up to Limit holders share: Consul's semaphore,
// etcd's election with N winners. It bounds how many workers do something at
// once (call a rate-limited API, run a heavy job). Each holder has a permit
// with its own token and lease, refreshed and released like a lock's; a
// permit whose lease ends frees its place by itself. Waiting works as for a
// lock: one line per semaphore in Redis, served in arrival order across
// instances, woken by releases through the Locker's subscription.
//
// Permits carry no fence: with several holders at once, a fence cannot tell
// the storage whose writes to refuse.
//
// Redis layout for semaphore S in namespace N (all in S's subtree slot):
//
//	ms:{N/sub}…#sem         sorted set: token → expires_at (ms, Redis clock);
//	                        PEXPIREAT its last permit's expiry
//	ms:{N/sub}…#sem-permits hash: token → "<acquired_at>|<idem>|<owner>",
//	                        "i:<idempotency key>" → token, "limit" → limit;
//	                        expires with #sem
//	ms:{N/sub}…#sem-line    sorted set, the line of waiters (as a lock's)
//	ms:{N/sub}…#sem-leases  hash, the waiters' leases (as a lock's)
//	ms:{N}#semaphores       sorted set, the namespace's index: member S,
//	                        score the latest expiry an acquire or refresh
//	                        asked for; read by Semaphores

// MaxLimit is the largest semaphore limit.
const MaxLimit = 1000

var (
	// ErrSemaphoreFull: every permit of the semaphore is taken (or kept for
	// waiters ahead in line). Acquire returns it inside a *FullError.
	ErrSemaphoreFull = errors.New("lock: semaphore full")
	// ErrLimitMismatch: the semaphore has live permits granted with another
	// limit.
	ErrLimitMismatch = errors.New("lock: semaphore limit mismatch")
)

// FullError is the error of a semaphore acquire that got no permit.
// errors.Is(err, ErrSemaphoreFull) reports true for it.
type FullError struct {
	// Holders is how many permits were live.
	Holders int
	// ExpiresAt is when the first live permit's lease ends unless refreshed
	// (zero when none is live: the free permits are kept for waiters ahead).
	ExpiresAt time.Time

	left time.Duration // lease left as Redis saw it, -1 when unknown
}

func (e *FullError) Error() string {
	return fmt.Sprintf("lock: semaphore full: %d permits held", e.Holders)
}

// Unwrap makes errors.Is(err, ErrSemaphoreFull) true.
func (e *FullError) Unwrap() error { return ErrSemaphoreFull }

// SemaphoreRequest says how to acquire a permit of a semaphore.
type SemaphoreRequest struct {
	// Limit is how many permits the semaphore has: 1 to MaxLimit. Every
	// acquirer must ask the same while any permit is live.
	Limit int
	// TTL, Wait, Owner and IdempotencyKey are as for AcquireRequest.
	TTL            time.Duration
	Wait           time.Duration
	Owner          string
	IdempotencyKey string
}

// Permit is a held place in a semaphore.
type Permit struct {
	Name  string
	Owner string
	// Token proves holding the permit to Release and Refresh: 32 hex
	// digits. Keep it secret.
	Token      string
	Limit      int
	AcquiredAt time.Time
	ExpiresAt  time.Time
	// Replayed is true when the permit was granted earlier, to an acquire
	// under the same SemaphoreRequest.IdempotencyKey.
	Replayed bool
}

// PermitInfo describes a live permit, without its token.
type PermitInfo struct {
	Owner      string
	AcquiredAt time.Time
	ExpiresAt  time.Time
}

// SemaphoreInfo describes a semaphore with live permits.
type SemaphoreInfo struct {
	Name  string
	Limit int
	// Holders are the live permits, the first to expire first.
	Holders []PermitInfo
	// Waiters is how many acquires stand in line with a live place.
	Waiters int
}

// semKeys are a semaphore's keys in semAcquireScript's order.
func semKeys(ns, name string) []string {
	return []string{keys.Aux(ns, name, "sem"), keys.Aux(ns, name, "sem-permits"),
		keys.Aux(ns, name, "sem-line"), keys.Aux(ns, name, "sem-leases")}
}

// AcquirePermit takes a permit of semaphore name in namespace ns for
// req.TTL. When none is free it waits up to req.Wait, in line behind the
// earlier waiters of every instance, and then returns a *FullError
// (errors.Is(err, ErrSemaphoreFull)). Other errors: ErrInvalidArgument,
// ErrLimitMismatch, ErrClosed, ctx's error, or a Redis failure.
func (l *Locker) AcquirePermit(ctx context.Context, ns, name string, req SemaphoreRequest) (Permit, error) {
	if err := validName(ns, name); err != nil {
		return Permit{}, err
	}
	if req.Limit < 1 || req.Limit > MaxLimit {
		return Permit{}, fmt.Errorf("%w: limit %d must be between 1 and %d", ErrInvalidArgument, req.Limit, MaxLimit)
	}
	areq := AcquireRequest{TTL: req.TTL, Wait: req.Wait, Owner: req.Owner, IdempotencyKey: req.IdempotencyKey}
	if err := l.validRequest(areq); err != nil {
		return Permit{}, err
	}
	token, err := newToken()
	if err != nil {
		return Permit{}, fmt.Errorf("lock: acquire permit %q: %w", name, err)
	}
	contended := false
	p, err := l.waitPermit(ctx, ns, name, token, req, &contended)
	switch {
	case p.Replayed:
		l.permitsReplayed.Add(1)
	case err == nil:
		l.permits.Add(1)
	}
	if contended {
		l.full.Add(1)
	}
	return p, err
}

// waitPermit is AcquirePermit after its checks; it sets *contended when a
// try found the semaphore full.
func (l *Locker) waitPermit(ctx context.Context, ns, name, token string, req SemaphoreRequest, contended *bool) (Permit, error) {
	if req.Wait == 0 {
		p, err := l.tryPermit(ctx, ns, name, token, req, 0)
		*contended = errors.Is(err, ErrSemaphoreFull)
		return p, err
	}
	select {
	case <-l.done:
		return Permit{}, ErrClosed
	default:
	}
	sk := semKeys(ns, name)
	w := &waiter{ns: ns, name: name, token: token, owner: req.Owner,
		line: sk[2], leases: sk[3], wake: make(chan struct{}, 1)}
	l.enqueue(sk[0], w)
	granted := false
	defer func() {
		l.dequeue(sk[0], w)
		if !granted {
			l.leaveLineOf(ns, name, w)
		}
	}()
	deadline := time.Now().Add(req.Wait)
	timer := time.NewTimer(req.Wait)
	defer timer.Stop()
	for {
		// Every waiter tries on every wake-up: Redis's line, not the local
		// queue, says which of them a free permit goes to.
		left := time.Until(deadline)
		p, err := l.tryPermit(ctx, ns, name, token, req, l.waiterLease())
		var fe *FullError
		if err == nil {
			granted = true
			return p, nil
		}
		if !errors.As(err, &fe) || left <= 0 {
			return p, err
		}
		*contended = true
		sleep := min(left, l.opts.RetryInterval)
		if fe.left >= 0 {
			sleep = min(sleep, fe.left+time.Millisecond)
		}
		timer.Reset(sleep)
		select {
		case <-ctx.Done():
			return Permit{}, fmt.Errorf("lock: acquire permit %q: %w", name, ctx.Err())
		case <-l.done:
			return Permit{}, ErrClosed
		case <-w.wake:
		case <-timer.C:
		}
	}
}

// tryPermit runs semAcquireScript once.
func (l *Locker) tryPermit(ctx context.Context, ns, name, token string, req SemaphoreRequest, lease time.Duration) (Permit, error) {
	idem := ""
	if req.IdempotencyKey != "" {
		h := sha256.Sum256([]byte(req.Owner + "\x00" + strconv.FormatInt(req.TTL.Milliseconds(), 10) + "\x00" + strconv.Itoa(req.Limit)))
		idem = req.IdempotencyKey + "/" + hex.EncodeToString(h[:12])
	}
	var cmd *redis.Cmd
	sk := semKeys(ns, name)
	args := []any{token, req.TTL.Milliseconds(), req.Owner, lease.Milliseconds(), idem, req.Limit}
	// The index is in another hash slot; its entry goes in the same round
	// trip, whatever the script answers. That is safe because Semaphores
	// reads every semaphore it finds there: a refused acquire's entry names
	// one with live permits (full, or of another limit), or, after a
	// forced release, none (skipped), and an entry's score only rises
	// (GT), so it outlives the semaphore's last permit by at most a lease.
	idx := semIndexKey(ns)
	score := float64(time.Now().Add(req.TTL).UnixMilli())
	trimDue := l.trimDue("sem " + ns)
	var trim *redis.Cmd
	err := l.pipes.Do(ctx, l.rdb, func(ctx context.Context, p redis.Pipeliner) {
		cmd = semAcquireScript.EvalSha(ctx, p, sk, args...)
		p.ZAddGT(ctx, idx, redis.Z{Score: score, Member: name})
		if trimDue {
			trim = trimIndexScript.EvalSha(ctx, p, []string{idx})
		}
	})
	if trim != nil && rediserr.NoScript(trim.Err()) {
		_ = trimIndexScript.Run(ctx, l.rdb, []string{idx}).Err() // loads it for next time
	}
	if err == nil && rediserr.NoScript(cmd.Err()) {
		cmd = semAcquireScript.Run(ctx, l.rdb, sk, args...)
	}
	if err != nil {
		return Permit{}, redisError("acquire permit", name, err)
	}
	res, err := cmd.Slice()
	if err != nil {
		return Permit{}, redisError("acquire permit", name, err)
	}
	// Every reply starts with integers; a replayed grant's ends with its token.
	var ints []int64
	for _, v := range res {
		n, err := toInt(v)
		if err != nil {
			break
		}
		ints = append(ints, n)
	}
	switch {
	case len(ints) == 1 && ints[0] == -1:
		return Permit{}, fmt.Errorf("%w: idempotency key %q was used on semaphore %q for another owner, TTL or limit",
			ErrInvalidArgument, req.IdempotencyKey, name)
	case len(ints) == 2 && ints[0] == -2:
		return Permit{}, fmt.Errorf("%w: semaphore %q has limit %d while its permits are held, not %d",
			ErrLimitMismatch, name, ints[1], req.Limit)
	case len(ints) == 4 && ints[0] == 0:
		fe := &FullError{Holders: int(ints[1]), left: -1}
		if ints[2] > 0 {
			fe.ExpiresAt = time.UnixMilli(ints[2])
			fe.left = time.Duration(ints[2]-ints[3]) * time.Millisecond
		}
		return Permit{}, fe
	case len(ints) == 3 && ints[0] == 1:
		p := Permit{Name: name, Owner: req.Owner, Token: token, Limit: req.Limit,
			AcquiredAt: time.UnixMilli(ints[1]), ExpiresAt: time.UnixMilli(ints[2])}
		if len(res) == 4 {
			p.Token, _ = res[3].(string)
			p.Replayed = true
		}
		return p, nil
	}
	return Permit{}, fmt.Errorf("lock: acquire permit %q: unexpected script reply %v", name, res)
}

// ReleasePermit gives back the permit token holds. ErrNotHeld when it holds
// none (its lease ended, or it was released); then nothing changes. Also
// ErrInvalidArgument, or a Redis failure.
func (l *Locker) ReleasePermit(ctx context.Context, ns, name, token string) error {
	if err := validName(ns, name); err != nil {
		return err
	}
	if token == "" {
		return fmt.Errorf("%w: token is empty", ErrInvalidArgument)
	}
	sk := semKeys(ns, name)
	n, err := semReleaseScript.Run(ctx, l.rdb, sk[:3], token, releasedChannel(ns), name).Int()
	if err != nil {
		return redisError("release permit", name, err)
	}
	if n == 0 {
		return ErrNotHeld
	}
	l.wakeEvery(sk[0]) // this Locker's waiters need not wait for the message
	return nil
}

// ForceReleasePermits ends every permit of the semaphore, for
// administrators. ErrNotHeld when none was live.
func (l *Locker) ForceReleasePermits(ctx context.Context, ns, name string) error {
	if err := validName(ns, name); err != nil {
		return err
	}
	sk := semKeys(ns, name)
	n, err := semForceReleaseScript.Run(ctx, l.rdb, sk[:2], releasedChannel(ns), name).Int()
	if err != nil {
		return redisError("force release permits", name, err)
	}
	if n == 0 {
		return ErrNotHeld
	}
	l.wakeEvery(sk[0])
	return nil
}

// RefreshPermit sets the lease of token's permit to ttl from now.
// ErrNotHeld when the token holds no live permit; then nothing changes.
func (l *Locker) RefreshPermit(ctx context.Context, ns, name, token string, ttl time.Duration) (Permit, error) {
	if err := validName(ns, name); err != nil {
		return Permit{}, err
	}
	if token == "" {
		return Permit{}, fmt.Errorf("%w: token is empty", ErrInvalidArgument)
	}
	if err := l.validTTL(ttl); err != nil {
		return Permit{}, err
	}
	res, err := semRefreshScript.Run(ctx, l.rdb, semKeys(ns, name)[:2], token, ttl.Milliseconds()).Slice()
	if err != nil {
		return Permit{}, redisError("refresh permit", name, err)
	}
	if len(res) == 1 {
		return Permit{}, ErrNotHeld
	}
	if len(res) != 5 {
		return Permit{}, fmt.Errorf("lock: refresh permit %q: unexpected script reply %v", name, res)
	}
	owner, _ := res[1].(string)
	acq, err1 := toInt(res[2])
	exp, err2 := toInt(res[3])
	limit, err3 := toInt(res[4])
	if err := errors.Join(err1, err2, err3); err != nil {
		return Permit{}, fmt.Errorf("lock: refresh permit %q: %w", name, err)
	}
	// Best effort, as in tryPermit.
	_ = l.rdb.ZAddGT(context.WithoutCancel(ctx), semIndexKey(ns), redis.Z{Score: float64(exp), Member: name}).Err()
	return Permit{Name: name, Owner: owner, Token: token, Limit: int(limit),
		AcquiredAt: time.UnixMilli(acq), ExpiresAt: time.UnixMilli(exp)}, nil
}

// semIndexKey is namespace ns's index of semaphores.
func semIndexKey(ns string) string { return keys.Namespace(ns, "semaphores") }

// Semaphore describes a semaphore's live permits. ErrNotFound when none is
// live; also ErrInvalidArgument, or a Redis failure.
func (l *Locker) Semaphore(ctx context.Context, ns, name string) (SemaphoreInfo, error) {
	if err := validName(ns, name); err != nil {
		return SemaphoreInfo{}, err
	}
	infos, err := l.semaphores(ctx, ns, []string{name})
	if err != nil {
		return SemaphoreInfo{}, err
	}
	if len(infos) == 0 {
		return SemaphoreInfo{}, ErrNotFound
	}
	return infos[0], nil
}

// Semaphores returns the semaphores of namespace ns with live permits whose
// names start with prefix (all of them for ""), sorted by name. It reads the
// namespace's index, never the keyspace, and each semaphore it names.
// Errors: ErrInvalidArgument, or a Redis failure.
func (l *Locker) Semaphores(ctx context.Context, ns, prefix string) ([]SemaphoreInfo, error) {
	if err := keys.ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	members, err := listScript.Run(ctx, l.rdb, []string{semIndexKey(ns)}).StringSlice()
	if err != nil {
		return nil, redisError("semaphores", "", err)
	}
	var names []string
	for _, name := range members {
		if strings.HasPrefix(name, prefix) && keys.Validate(name) == nil {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return l.semaphores(ctx, ns, names)
}

// semaphores reads the named semaphores in one round trip, leaving out
// those without live permits.
func (l *Locker) semaphores(ctx context.Context, ns string, names []string) ([]SemaphoreInfo, error) {
	out := []SemaphoreInfo{}
	if len(names) == 0 {
		return out, nil
	}
	infos := make([]*redis.Cmd, len(names))
	leases := make([]*redis.StringSliceCmd, len(names))
	read := func() error {
		_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, name := range names {
				sk := semKeys(ns, name)
				infos[i] = semInfoScript.EvalSha(ctx, p, sk[:2])
				leases[i] = p.HVals(ctx, sk[3])
			}
			return nil
		})
		return err
	}
	err := read()
	if rediserr.NoScript(err) {
		// A script cache emptied by a restart: load it, then read again.
		if err = semInfoScript.Load(ctx, l.rdb).Err(); err == nil {
			err = read()
		}
	}
	if err != nil {
		return nil, redisError("semaphores", "", err)
	}
	now := time.Now()
	for i, name := range names {
		res, _ := infos[i].Slice()
		if len(res) < 2 || (len(res)-2)%3 != 0 {
			continue // no live permit
		}
		limit, _ := toInt(res[0])
		info := SemaphoreInfo{Name: name, Limit: int(limit), Holders: make([]PermitInfo, 0, (len(res)-2)/3),
			Waiters: liveWaiters(leases[i].Val(), now)}
		for j := 2; j < len(res); j += 3 {
			owner, _ := res[j].(string)
			acq, err1 := toInt(res[j+1])
			exp, err2 := toInt(res[j+2])
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("lock: semaphore %q: %w", name, err)
			}
			info.Holders = append(info.Holders, PermitInfo{Owner: owner, AcquiredAt: time.UnixMilli(acq), ExpiresAt: time.UnixMilli(exp)})
		}
		out = append(out, info)
	}
	return out, nil
}

// validRequest checks what AcquireRequest and SemaphoreRequest share.
func (l *Locker) validRequest(req AcquireRequest) error {
	if err := l.validTTL(req.TTL); err != nil {
		return err
	}
	if req.Wait < 0 || req.Wait > l.opts.MaxWait {
		return fmt.Errorf("%w: wait %v must be between 0 and %v", ErrInvalidArgument, req.Wait, l.opts.MaxWait)
	}
	if len(req.Owner) > MaxOwnerLen {
		return fmt.Errorf("%w: owner is %d bytes, more than %d", ErrInvalidArgument, len(req.Owner), MaxOwnerLen)
	}
	if req.IdempotencyKey != "" && !clock.ValidID(req.IdempotencyKey) {
		return fmt.Errorf("%w: idempotency key %q must be 1-128 characters of [A-Za-z0-9._:@-]", ErrInvalidArgument, req.IdempotencyKey)
	}
	return nil
}
