package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors. Every non-2xx answer is an *APIError that matches (with
// errors.Is) the sentinel of its problem code; an answer without a code
// (from a proxy, say) matches by its status.
var (
	// ErrNotFound: 404 not_found — no such key (or it expired), no holder of
	// a lock, or no such route.
	ErrNotFound = errors.New("memsync: not found")
	// ErrPreconditionFailed: 412 precondition_failed — If-Match or
	// If-None-Match did not hold; nothing changed.
	ErrPreconditionFailed = errors.New("memsync: precondition failed")
	// ErrLockHeld: 409 lock_held — someone else holds the lock; the
	// *APIError says who (Holder) and until when (LockExpiresAt).
	ErrLockHeld = errors.New("memsync: lock held")
	// ErrLockNotHeld: 409 lock_not_held — the token no longer holds the lock
	// or permit (it expired, was released, or was taken over).
	ErrLockNotHeld = errors.New("memsync: lock not held")
	// ErrSemaphoreFull: 409 semaphore_full — every permit of the semaphore
	// is taken (or kept for waiters ahead in line); the *APIError says how
	// many are live (Holders) and when the first ends (LockExpiresAt).
	ErrSemaphoreFull = errors.New("memsync: semaphore full")
	// ErrNotClaimed: 409 not_claimed — the claim's receipt no longer holds
	// the queue message (claimed again since, released, acked, or gone to
	// the dead letters).
	ErrNotClaimed = errors.New("memsync: message not claimed")
	// ErrQueueFull: 409 queue_full — the queue held EnqueueOptions.MaxLength
	// messages or more; nothing was added.
	ErrQueueFull = errors.New("memsync: queue full")
	// ErrBarrierBroken: 409 barrier_broken — an administrator reset the
	// barrier while the arrival waited at it.
	ErrBarrierBroken = errors.New("memsync: barrier broken by a reset")
	// ErrCounterOverflow: 409 counter_overflow — the increment would take
	// the counter past ±(2^53−1); nothing changed.
	ErrCounterOverflow = errors.New("memsync: counter overflow")
	// ErrNoHeartbeat: 409 no_heartbeat — an Ephemeral write's worker has
	// no live heartbeat to bind the key to; nothing was written.
	ErrNoHeartbeat = errors.New("memsync: no heartbeat")
	// ErrLimitMismatch: 409 limit_mismatch — the semaphore's live permits
	// were granted with another limit.
	ErrLimitMismatch = errors.New("memsync: semaphore limit mismatch")
	// ErrInvalid: the request was refused as malformed: any 400
	// (invalid_key, invalid_json, invalid_argument) and 413 body_too_large.
	// The client also returns it, wrapped, for arguments it can refuse
	// without asking (an empty key, a negative TTL).
	ErrInvalid = errors.New("memsync: invalid request")
	// ErrUnavailable: 503 backend_unavailable — the server cannot reach
	// Redis; retry after APIError.RetryAfter.
	ErrUnavailable = errors.New("memsync: backend unavailable")
	// ErrUnauthorized: 401 unauthorized — no valid token (WithToken).
	ErrUnauthorized = errors.New("memsync: unauthorized")
	// ErrForbidden: 403 forbidden — the token's role may not do this.
	ErrForbidden = errors.New("memsync: forbidden")
	// ErrRateLimited: 429 rate_limited — slow down; retry after
	// APIError.RetryAfter.
	ErrRateLimited = errors.New("memsync: rate limited")
	// ErrNoWorkerID is returned, before anything is sent, by calls that
	// act as the client's own worker (Heartbeat) when it has none
	// (WithWorkerID).
	ErrNoWorkerID = errors.New("memsync: no worker id (WithWorkerID)")
	// ErrUnresolved is returned by Entry.Decode when the entry holds several
	// siblings that were not resolved (Resolve("siblings")): decode each of
	// Entry.SiblingList instead.
	ErrUnresolved = errors.New("memsync: unresolved siblings")
)

// APIError is a non-2xx answer: the server's problem+json document
// (RFC 9457) and the headers that go with it.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Code is the problem's stable code ("not_found", "lock_held", …); empty
	// when the body was not a memsync problem document.
	Code string
	// Title and Detail describe the problem for humans.
	Title, Detail string
	// RetryAfter is the Retry-After header (503, 429, 409 lock_held); zero
	// when absent.
	RetryAfter time.Duration
	// Holder is the owner of the lock, for lock_held ("" when it gave none).
	Holder string
	// LockExpiresAt is when the holder's lease ends unless refreshed, for
	// lock_held, or the first live permit's, for semaphore_full, by the
	// server's clock; zero otherwise.
	LockExpiresAt time.Time
	// Holders is how many permits are live, for semaphore_full.
	Holders int
	// Op is, for Batch, the index (from 0) of the op the problem is about:
	// the op that stopped an atomic batch, or the op of a BatchResult.Err.
	// It is -1 in every other error the client returns.
	Op int

	// Method and Path say which call failed.
	Method, Path string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "memsync: %s %s", e.Method, e.Path)
	if e.Op >= 0 {
		fmt.Fprintf(&b, " (op %d)", e.Op)
	}
	fmt.Fprintf(&b, ": %d", e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	} else if e.Title != "" {
		b.WriteString(": " + e.Title)
	}
	if e.Code == "lock_held" && e.Holder != "" {
		fmt.Fprintf(&b, " (held by %q)", e.Holder)
	}
	return b.String()
}

// codeErrors maps problem codes to sentinels.
var codeErrors = map[string]error{
	"not_found":           ErrNotFound,
	"precondition_failed": ErrPreconditionFailed,
	"lock_held":           ErrLockHeld,
	"lock_not_held":       ErrLockNotHeld,
	"semaphore_full":      ErrSemaphoreFull,
	"limit_mismatch":      ErrLimitMismatch,
	"no_heartbeat":        ErrNoHeartbeat,
	"not_claimed":         ErrNotClaimed,
	"counter_overflow":    ErrCounterOverflow,
	"barrier_broken":      ErrBarrierBroken,
	"queue_full":          ErrQueueFull,
	"invalid_key":         ErrInvalid,
	"invalid_json":        ErrInvalid,
	"invalid_argument":    ErrInvalid,
	"body_too_large":      ErrInvalid,
	"backend_unavailable": ErrUnavailable,
	"unauthorized":        ErrUnauthorized,
	"forbidden":           ErrForbidden,
	"rate_limited":        ErrRateLimited,
}

// statusErrors maps statuses to sentinels, for answers without a code.
var statusErrors = map[int]error{
	http.StatusBadRequest:            ErrInvalid,
	http.StatusUnauthorized:          ErrUnauthorized,
	http.StatusForbidden:             ErrForbidden,
	http.StatusNotFound:              ErrNotFound,
	http.StatusPreconditionFailed:    ErrPreconditionFailed,
	http.StatusRequestEntityTooLarge: ErrInvalid,
	http.StatusTooManyRequests:       ErrRateLimited,
	http.StatusServiceUnavailable:    ErrUnavailable,
}

// Is reports whether target is the sentinel of e's code, or, when e has no
// code the client knows, of its status. Any 400 is ErrInvalid whatever its
// code.
func (e *APIError) Is(target error) bool {
	if target == ErrInvalid && e.Status == http.StatusBadRequest {
		return true
	}
	if s, ok := codeErrors[e.Code]; ok {
		return s == target
	}
	return statusErrors[e.Status] == target
}

// problemJSON is the part of a problem document (RFC 9457) the client
// reads: the members of every problem, lock_held's holder and expiry, and
// an atomic batch's op.
type problemJSON struct {
	Title     string `json:"title"`
	Detail    string `json:"detail"`
	Code      string `json:"code"`
	Holder    string `json:"holder"`
	ExpiresAt int64  `json:"expires_at"`
	Holders   int    `json:"holders"`
	Op        *int   `json:"op"`
}

// fill copies the problem into e, keeping e's title when it has none.
func (p problemJSON) fill(e *APIError) {
	e.Code, e.Detail, e.Holder, e.Holders = p.Code, p.Detail, p.Holder, p.Holders
	if p.Title != "" {
		e.Title = p.Title
	}
	e.LockExpiresAt = fromMillis(p.ExpiresAt)
	if p.Op != nil {
		e.Op = *p.Op
	}
}

// newAPIError reads a non-2xx response.
func newAPIError(method, path string, resp *http.Response) *APIError {
	e := &APIError{Status: resp.StatusCode, Method: method, Path: path, Op: -1,
		Title: http.StatusText(resp.StatusCode), RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"))}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var p problemJSON
	if json.Unmarshal(body, &p) == nil {
		p.fill(e)
	} else if s := strings.TrimSpace(string(body)); s != "" && len(s) < 512 {
		e.Detail = s
	}
	return e
}

// parseRetryAfter reads delay-seconds or an HTTP date; zero when absent or
// unreadable.
func parseRetryAfter(h string) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if n, err := strconv.ParseInt(h, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}
