package http

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/memsync/memsync/internal/barrier"
	"github.com/memsync/memsync/internal/counter"
	"github.com/memsync/memsync/internal/ephemeral"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/queue"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/watch"
)

// Errors raised at the edge, before anything reaches the store.
var (
	errInvalidJSON     = errors.New("invalid JSON")
	errInvalidArgument = errors.New("invalid argument")
	errBodyTooLarge    = errors.New("request body too large")
	errRouteNotFound   = errors.New("no such route")
	errMethod          = errors.New("method not allowed")
	// Authentication and authorization (auth.go, CONTRACT §10).
	errUnauthorized = errors.New("unauthorized")
	errForbidden    = errors.New("forbidden")
	errRateLimited  = errors.New("rate limited")
)

// problem is an RFC 9457 problem document with memsync's stable code.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
	// Holder and ExpiresAt (Unix ms) say who holds a lock, for lock_held
	// only. Pointers, so that an anonymous holder ("") is still reported.
	Holder    *string `json:"holder,omitempty"`
	ExpiresAt *int64  `json:"expires_at,omitempty"`
	// Holders is how many permits of a semaphore are live, for
	// semaphore_full only (with ExpiresAt, the first permit's expiry, when
	// one is live).
	Holders *int `json:"holders,omitempty"`
}

// errorKind is what one class of error becomes on the wire.
type errorKind struct {
	target error
	status int
	code   string
	title  string
}

// errorKinds maps errors to problems, first match wins. Anything not here is
// an internal error: logged, and reported without detail.
var errorKinds = []errorKind{
	{keys.ErrInvalidKey, http.StatusBadRequest, "invalid_key", "Invalid key"},
	{errInvalidJSON, http.StatusBadRequest, "invalid_json", "Invalid JSON"},
	{errInvalidArgument, http.StatusBadRequest, "invalid_argument", "Invalid argument"},
	{store.ErrInvalidArgument, http.StatusBadRequest, "invalid_argument", "Invalid argument"},
	{errBodyTooLarge, http.StatusRequestEntityTooLarge, "body_too_large", "Request body too large"},
	{errUnauthorized, http.StatusUnauthorized, "unauthorized", "Unauthorized"},
	{errForbidden, http.StatusForbidden, "forbidden", "Forbidden"},
	{errRateLimited, http.StatusTooManyRequests, "rate_limited", "Too many requests"},
	{store.ErrNotFound, http.StatusNotFound, "not_found", "Not found"},
	{errRouteNotFound, http.StatusNotFound, "not_found", "Not found"},
	{errMethod, http.StatusMethodNotAllowed, "invalid_argument", "Method not allowed"},
	{store.ErrPreconditionFailed, http.StatusPreconditionFailed, "precondition_failed", "Precondition failed"},
	{lock.ErrInvalidArgument, http.StatusBadRequest, "invalid_argument", "Invalid argument"},
	{lock.ErrLockHeld, http.StatusConflict, "lock_held", "Lock held"},
	{lock.ErrNotHeld, http.StatusConflict, "lock_not_held", "Lock not held"},
	{lock.ErrSemaphoreFull, http.StatusConflict, "semaphore_full", "Semaphore full"},
	{lock.ErrLimitMismatch, http.StatusConflict, "limit_mismatch", "Semaphore limit mismatch"},
	{ephemeral.ErrNoHeartbeat, http.StatusConflict, "no_heartbeat", "No heartbeat"},
	{queue.ErrInvalidArgument, http.StatusBadRequest, "invalid_argument", "Invalid argument"},
	{queue.ErrNotClaimed, http.StatusConflict, "not_claimed", "Message not claimed"},
	{queue.ErrQueueFull, http.StatusConflict, "queue_full", "Queue full"},
	{queue.ErrNotDead, http.StatusNotFound, "not_found", "Not found"},
	{counter.ErrInvalidArgument, http.StatusBadRequest, "invalid_argument", "Invalid argument"},
	{counter.ErrNotFound, http.StatusNotFound, "not_found", "Not found"},
	{counter.ErrOverflow, http.StatusConflict, "counter_overflow", "Counter overflow"},
	{counter.ErrUnavailable, http.StatusServiceUnavailable, "backend_unavailable", "Backend unavailable"},
	{barrier.ErrInvalidArgument, http.StatusBadRequest, "invalid_argument", "Invalid argument"},
	{barrier.ErrPartiesMismatch, http.StatusConflict, "limit_mismatch", "Barrier parties mismatch"},
	{barrier.ErrBroken, http.StatusConflict, "barrier_broken", "Barrier reset"},
	{barrier.ErrNotFound, http.StatusNotFound, "not_found", "Not found"},
	{barrier.ErrUnavailable, http.StatusServiceUnavailable, "backend_unavailable", "Backend unavailable"},
	{barrier.ErrClosed, http.StatusServiceUnavailable, "backend_unavailable", "Backend unavailable"}, // shutting down
	{queue.ErrUnavailable, http.StatusServiceUnavailable, "backend_unavailable", "Backend unavailable"},
	{queue.ErrClosed, http.StatusServiceUnavailable, "backend_unavailable", "Backend unavailable"}, // shutting down
	{lock.ErrNotFound, http.StatusNotFound, "not_found", "Not found"},
	{lock.ErrUnavailable, http.StatusServiceUnavailable, "backend_unavailable", "Backend unavailable"},
	{store.ErrUnavailable, http.StatusServiceUnavailable, "backend_unavailable", "Backend unavailable"},
	{watch.ErrClosed, http.StatusServiceUnavailable, "backend_unavailable", "Backend unavailable"}, // shutting down
	{lock.ErrClosed, http.StatusServiceUnavailable, "backend_unavailable", "Backend unavailable"},  // shutting down
}

// retryAfterUnavailable is the Retry-After, in seconds, of a 503.
const retryAfterUnavailable = "1"

// problemOf maps err to its problem through errorKinds, without sending
// or logging it (batch results carry one per operation).
func problemOf(err error) problem {
	p := problem{Status: http.StatusInternalServerError, Code: "internal", Title: "Internal error",
		Detail: "the server failed to handle the request; it has been logged"}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// The client went away or the request ran out of time: not a bug.
		err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	for _, k := range errorKinds {
		if errors.Is(err, k.target) {
			p = problem{Status: k.status, Code: k.code, Title: k.title, Detail: err.Error()}
			break
		}
	}
	p.Type = "urn:memsync:problem:" + p.Code
	return p
}

// writeError reports err as application/problem+json.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	p := problemOf(err)
	var held *lock.HeldError
	if errors.As(err, &held) {
		exp := int64(0) // unknown; the lock scripts always set an expiry
		if !held.ExpiresAt.IsZero() {
			exp = held.ExpiresAt.UnixMilli()
		}
		p.Holder, p.ExpiresAt = &held.Holder, &exp
		// Retry-After in whole seconds, rounded up: retrying before the
		// lease ends is pointless unless the holder releases early.
		secs := max(1, int64(math.Ceil(time.Until(held.ExpiresAt).Seconds())))
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	var full *lock.FullError
	if errors.As(err, &full) {
		p.Holders = &full.Holders
		secs := int64(1) // the free permits are kept for waiters in line
		if !full.ExpiresAt.IsZero() {
			exp := full.ExpiresAt.UnixMilli()
			p.ExpiresAt = &exp
			secs = max(1, int64(math.Ceil(time.Until(full.ExpiresAt).Seconds())))
		}
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	switch p.Status {
	case http.StatusInternalServerError:
		log.Error("internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	case http.StatusServiceUnavailable:
		log.Warn("backend unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", retryAfterUnavailable)
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="memsync"`)
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
	}
	encode(w, p.Status, "application/problem+json", p)
}
