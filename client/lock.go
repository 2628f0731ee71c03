package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// DefaultLockTTL is the lease of a lock when LockOptions.TTL is zero: the
// design document's 30 s.
const DefaultLockTTL = 30 * time.Second

// keepRetryMin is the shortest pause between Keep's retries of a refresh
// that failed for a reason other than losing the lock.
const keepRetryMin = 10 * time.Millisecond

// LockOptions says how to acquire a lock.
type LockOptions struct {
	// TTL is the lease: the lock is released by itself this long after the
	// grant (or the last refresh) unless refreshed. Rounded up to whole
	// milliseconds; the server caps it (5 min by default). Defaults to
	// DefaultLockTTL (30 s).
	TTL time.Duration
	// Wait is how long the server waits for a held lock to be released
	// before answering ErrLockHeld; waiters are served in arrival order,
	// across the server's instances. The server caps it (60 s by default).
	// Defaults to 0: try once.
	Wait time.Duration
	// Owner names the holder for LockHolder and for others' ErrLockHeld.
	// Defaults to the client's worker id.
	Owner string
	// IdempotencyKey names this acquire (a UUID, say) so that it is safe to
	// send again when it is not known whether it was granted (a timeout,
	// ErrUnavailable): while the grant it made holds the lock, Lock under
	// the same key returns that grant (Lock.Replayed), token included,
	// instead of ErrLockHeld. With another Owner or TTL it is ErrInvalid.
	IdempotencyKey string
}

// Lock is a held lease on a named lock: the handle Lock and AcquireTaskLock
// return. Its methods are safe for concurrent use.
//
// A lease can end without its holder knowing: a pause longer than the TTL, a
// partition, a refresh that did not arrive. It is NOT safe to assume the lock
// is held because you hold a *Lock: hand Fence to the storage the lock
// protects and let it refuse writes with a fence smaller than one it has
// seen.
type Lock struct {
	// Name is the lock's name ("tasks/T1" for a task lock).
	Name string
	// Owner is the holder's name as others see it.
	Owner string
	// Token proves the holder to Refresh and Release; keep it secret.
	Token string
	// Fence strictly increases with every grant of this name: a fencing
	// token for downstream storage. A semaphore's permit has none (0).
	Fence uint64
	// Limit is, for a semaphore's permit (AcquirePermit), how many permits
	// the semaphore has; 0 for a lock.
	Limit int
	// AcquiredAt is when the lock was granted, by the server's clock.
	AcquiredAt time.Time
	// Replayed is true when the grant was made to an earlier request under
	// the same LockOptions.IdempotencyKey. Lock refreshed it before
	// returning, so its lease counts from a request this process timed.
	Replayed bool

	c           *Client
	path        string // the lock's resource: /v1/locks/{name}, /v1/tasks/{id}/lock or /v1/semaphores/{name}
	refreshPath string

	mu        sync.Mutex
	ttl       time.Duration
	expiresAt time.Time // by the server's clock
	deadline  time.Time // by this process's monotonic clock; see renewed
	stopKeep  func()    // stops the running Keep, if any
}

// grantJSON is a granted lock on the wire (times in Unix ms).
type grantJSON struct {
	Name       string `json:"name"`
	Owner      string `json:"owner"`
	Token      string `json:"token"`
	Fence      uint64 `json:"fence"`
	Limit      int    `json:"limit"` // a permit's
	AcquiredAt int64  `json:"acquired_at"`
	ExpiresAt  int64  `json:"expires_at"`
	Waiters    int    `json:"waiters"` // lock info only
}

// LockInfo is a lock's holder as anyone may see it: no token.
type LockInfo struct {
	Name       string
	Owner      string
	Fence      uint64
	AcquiredAt time.Time
	ExpiresAt  time.Time
	// Waiters is how many requests wait in line for the lock, on every
	// instance.
	Waiters int
}

// UnmarshalJSON reads the server's lock info (times in Unix ms).
func (i *LockInfo) UnmarshalJSON(b []byte) error {
	var g grantJSON
	if err := json.Unmarshal(b, &g); err != nil {
		return err
	}
	*i = LockInfo{Name: g.Name, Owner: g.Owner, Fence: g.Fence,
		AcquiredAt: fromMillis(g.AcquiredAt), ExpiresAt: fromMillis(g.ExpiresAt), Waiters: g.Waiters}
	return nil
}

// Lock acquires the lock name (a key-like name, "jobs/nightly"; its last
// segment may not be "refresh", which the server reserves), waiting up to
// opts.Wait for its holder to let go. When the lock stays held it returns an
// error matching ErrLockHeld whose *APIError names the Holder, when its
// lease ends (LockExpiresAt) and RetryAfter.
//
// If ctx ends while the server may already have granted the lock, the grant
// is lost to the caller and the lock is freed when its TTL runs out.
func (c *Client) Lock(ctx context.Context, name string, opts LockOptions) (*Lock, error) {
	if name == "" {
		return nil, errEmpty("lock name")
	}
	if name == "refresh" || strings.HasSuffix(name, "/refresh") {
		return nil, fmt.Errorf("memsync: lock name %q: the last segment \"refresh\" is reserved: %w", name, ErrInvalid)
	}
	return c.acquire(ctx, pathOf("v1/locks", name), name, 0, opts)
}

// AcquireTaskLock acquires the lock of task taskID (the lock named
// "tasks/{taskID}") for ttl (DefaultLockTTL when 0), without waiting: it
// returns an error matching ErrLockHeld when another holds it. Release it
// with the handle's Release. To wait for it, use Lock with TaskLockName.
func (c *Client) AcquireTaskLock(ctx context.Context, taskID string, ttl time.Duration) (*Lock, error) {
	if err := checkName("task id", taskID); err != nil {
		return nil, err
	}
	return c.acquire(ctx, pathOf("v1/tasks", taskID, "lock"), TaskLockName(taskID), 0, LockOptions{TTL: ttl})
}

// TaskLockName is the name of the lock of task taskID.
func TaskLockName(taskID string) string { return "tasks/" + taskID }

// acquire takes a lock, or with limit > 0 a permit of a semaphore, at path.
func (c *Client) acquire(ctx context.Context, path, name string, limit int, opts LockOptions) (*Lock, error) {
	if opts.TTL < 0 || opts.Wait < 0 {
		return nil, fmt.Errorf("memsync: lock %q: negative ttl or wait: %w", name, ErrInvalid)
	}
	ttl := opts.TTL
	if ttl == 0 {
		ttl = DefaultLockTTL
	}
	owner := opts.Owner
	if owner == "" {
		owner = c.workerID
	}
	body := struct {
		Limit  int    `json:"limit,omitempty"`
		TTLMs  int64  `json:"ttl_ms"`
		WaitMs int64  `json:"wait_ms,omitempty"`
		Owner  string `json:"owner,omitempty"`
	}{Limit: limit, TTLMs: ceilMillis(ttl), WaitMs: ceilMillis(opts.Wait), Owner: owner}
	var h http.Header
	if key := c.idempotencyKey(opts.IdempotencyKey); key != "" {
		h = http.Header{"Idempotency-Key": {key}}
	}
	start := time.Now()
	resp, err := c.send(ctx, request{method: http.MethodPost, path: path, header: h, body: body})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var g grantJSON
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		return nil, fmt.Errorf("memsync: POST %s: decode %d response: %w", path, resp.StatusCode, err)
	}
	if g.Name == "" {
		g.Name = name
	}
	l := &Lock{Name: g.Name, Owner: g.Owner, Token: g.Token, Fence: g.Fence, Limit: g.Limit,
		AcquiredAt: fromMillis(g.AcquiredAt), c: c, path: path,
		refreshPath: pathOf("v1/locks", g.Name, "refresh"),
		Replayed:    resp.Header.Get("Idempotent-Replayed") == "true"}
	if limit > 0 {
		l.refreshPath = pathOf("v1/semaphores", g.Name, "refresh")
	}
	l.renewed(start, ttl, fromMillis(g.ExpiresAt))
	if l.Replayed {
		// The lease began before start, at an earlier request whose time
		// this call does not know: renew it from now.
		if err := l.Refresh(ctx, ttl); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// renewed records a grant or refresh of ttl whose request was sent at start.
// The local deadline counts from start, not from the answer: the server's
// lease began at or after start, so the lease cannot end before
// start+ttl by this process's clock (barring clock drift), whatever the
// skew between the two clocks.
func (l *Lock) renewed(start time.Time, ttl time.Duration, expiresAt time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ttl, l.expiresAt, l.deadline = ttl, expiresAt, start.Add(ttl)
}

// ExpiresAt is when the lease ends unless refreshed, by the server's clock,
// as of the last successful grant or refresh (Keep's included).
func (l *Lock) ExpiresAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.expiresAt
}

// Refresh extends the lease to ttl from now (the lock's last TTL when 0). It
// returns an error matching ErrLockNotHeld when the lease has already ended
// or someone else holds the lock.
func (l *Lock) Refresh(ctx context.Context, ttl time.Duration) error {
	if ttl < 0 {
		return fmt.Errorf("memsync: refresh lock %q: negative ttl: %w", l.Name, ErrInvalid)
	}
	if ttl == 0 {
		l.mu.Lock()
		ttl = l.ttl
		l.mu.Unlock()
	}
	body := struct {
		Token string `json:"token"`
		TTLMs int64  `json:"ttl_ms"`
	}{Token: l.Token, TTLMs: ceilMillis(ttl)}
	start := time.Now()
	var g grantJSON
	if err := l.c.do(ctx, request{method: http.MethodPost, path: l.refreshPath, body: body}, &g); err != nil {
		return err
	}
	l.renewed(start, ttl, fromMillis(g.ExpiresAt))
	return nil
}

// Release stops a running Keep and gives the lock up. It returns an error
// matching ErrLockNotHeld when the lease had already ended or someone else
// holds the lock. Pass a live ctx: releasing with the context whose end
// stopped the work would fail, leaving the lock to its TTL.
func (l *Lock) Release(ctx context.Context) error {
	l.mu.Lock()
	stop := l.stopKeep
	l.stopKeep = nil
	l.mu.Unlock()
	if stop != nil {
		stop()
	}
	h := http.Header{"X-Lock-Token": {l.Token}}
	err := l.c.do(ctx, request{method: http.MethodDelete, path: l.path, header: h}, nil)
	if err == nil {
		l.mu.Lock()
		l.deadline = time.Time{}
		l.mu.Unlock()
	}
	return err
}

// Keep refreshes the lease in the background every third of its TTL, like
// an etcd session's keep-alive, until ctx is done or Release is called. A
// refresh that fails for another reason than losing the lock (the network,
// a 503) is retried until the lease would have ended.
//
// The returned channel is closed when Keep stops: when a refresh finds the
// lock not held (ErrLockNotHeld), when the lease's local deadline passes
// without a successful refresh, when ctx is done, or on Release. Watch it
// and stop the protected work when it closes — but note the converse does
// not hold: while it is open it is still NOT safe to assume the lock is held
// (a refresh may be lost, a pause may outlast the lease). Use Fence with
// downstream storage for safety; Keep only makes losing the lock unlikely
// and noticed.
//
// Calling Keep again stops the previous keeper (closing its channel) first.
func (l *Lock) Keep(ctx context.Context) (lost <-chan struct{}) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	stop := func() { cancel(); <-done }

	l.mu.Lock()
	prev := l.stopKeep
	l.stopKeep = stop
	l.mu.Unlock()
	if prev != nil {
		prev()
	}

	go func() {
		defer close(done)
		defer cancel()
		l.keep(ctx)
	}()
	return done
}

// keep is Keep's loop; it returns when the lock is, or may be, lost.
func (l *Lock) keep(ctx context.Context) {
	l.mu.Lock()
	ttl, deadline := l.ttl, l.deadline
	l.mu.Unlock()
	interval := max(ttl/3, time.Millisecond)

	tick := time.NewTimer(interval)
	defer tick.Stop()
	expire := time.NewTimer(time.Until(deadline))
	defer expire.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-expire.C:
			return // the lease ran out before a refresh got through
		case <-tick.C:
		}
		rctx, rcancel := context.WithDeadline(ctx, deadline)
		err := l.Refresh(rctx, ttl)
		rcancel()
		switch {
		case err == nil:
			l.mu.Lock()
			deadline = l.deadline
			l.mu.Unlock()
			expire.Reset(time.Until(deadline))
			tick.Reset(interval)
		case errors.Is(err, ErrLockNotHeld) || ctx.Err() != nil:
			return
		default:
			tick.Reset(max(interval/4, keepRetryMin))
		}
	}
}

// LockHolder returns who holds the lock name. It returns ErrNotFound when
// nobody does.
func (c *Client) LockHolder(ctx context.Context, name string) (*LockInfo, error) {
	if name == "" {
		return nil, errEmpty("lock name")
	}
	return c.lockInfo(ctx, pathOf("v1/locks", name))
}

// TaskLockHolder returns who holds the lock of task taskID. It returns
// ErrNotFound when nobody does.
func (c *Client) TaskLockHolder(ctx context.Context, taskID string) (*LockInfo, error) {
	if err := checkName("task id", taskID); err != nil {
		return nil, err
	}
	return c.lockInfo(ctx, pathOf("v1/tasks", taskID, "lock"))
}

func (c *Client) lockInfo(ctx context.Context, path string) (*LockInfo, error) {
	var i LockInfo
	if err := c.do(ctx, request{method: http.MethodGet, path: path}, &i); err != nil {
		return nil, err
	}
	return &i, nil
}

// Locks lists the held locks whose names start with prefix ("" for all).
func (c *Client) Locks(ctx context.Context, prefix string) ([]LockInfo, error) {
	var out struct {
		Locks []LockInfo `json:"locks"`
	}
	q := url.Values{"prefix": {prefix}}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/locks", query: q}, &out); err != nil {
		return nil, err
	}
	return out.Locks, nil
}

// ForceUnlock releases the lock name whoever holds it: an administrator's
// escape hatch for a holder that is gone but whose lease is long. The holder
// is not told; its next Refresh or Release fails with ErrLockNotHeld. It
// returns an error matching ErrLockNotHeld when nobody holds the lock.
func (c *Client) ForceUnlock(ctx context.Context, name string) error {
	if name == "" {
		return errEmpty("lock name")
	}
	q := url.Values{"force": {"true"}}
	return c.do(ctx, request{method: http.MethodDelete, path: pathOf("v1/locks", name), query: q}, nil)
}

// ceilMillis rounds d up to whole milliseconds.
func ceilMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
