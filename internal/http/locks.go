package http

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/lock"
)

// Locker is what the handlers need from the lock service.
type Locker interface {
	Acquire(ctx context.Context, ns, name string, req lock.AcquireRequest) (lock.Grant, error)
	Release(ctx context.Context, ns, name, token string) error
	ForceRelease(ctx context.Context, ns, name string) error
	Refresh(ctx context.Context, ns, name, token string, ttl time.Duration) (lock.Grant, error)
	Holder(ctx context.Context, ns, name string) (lock.Info, error)
	List(ctx context.Context, ns, prefix string) ([]lock.Info, error)
	Semaphores
}

// grantResponse is a held lock, token included: only its acquirer sees it.
type grantResponse struct {
	Name       string `json:"name"`
	Owner      string `json:"owner"`
	Token      string `json:"token"`
	Fence      int64  `json:"fence"`
	AcquiredAt int64  `json:"acquired_at"`
	ExpiresAt  int64  `json:"expires_at"`
}

// lockInfo is a lock's holder as anyone may see it: no token.
type lockInfo struct {
	Name       string `json:"name"`
	Owner      string `json:"owner"`
	Fence      int64  `json:"fence"`
	AcquiredAt int64  `json:"acquired_at"`
	ExpiresAt  int64  `json:"expires_at"`
	Waiters    int    `json:"waiters"`
}

func newGrantResponse(g lock.Grant) grantResponse {
	return grantResponse{Name: g.Name, Owner: g.Owner, Token: g.Token, Fence: g.Fence,
		AcquiredAt: g.AcquiredAt.UnixMilli(), ExpiresAt: g.ExpiresAt.UnixMilli()}
}

func newLockInfo(i lock.Info) lockInfo {
	return lockInfo{Name: i.Name, Owner: i.Owner, Fence: i.Fence,
		AcquiredAt: i.AcquiredAt.UnixMilli(), ExpiresAt: i.ExpiresAt.UnixMilli(), Waiters: i.Waiters}
}

// maxMillis keeps a millisecond count's conversion to time.Duration from
// overflowing; the locker applies the configured maxima, so a larger value
// is still refused rather than silently shortened.
const maxMillis = math.MaxInt64 / int64(time.Millisecond)

// lockName names the lock a request addresses.
type lockName func(r *http.Request) (string, error)

// wildcardLock is the name of /v1/locks/{name...}, less a trailing
// "/refresh" when refresh is set.
func wildcardLock(refresh bool) lockName {
	return func(r *http.Request) (string, error) {
		raw := chi.URLParam(r, "*")
		if refresh {
			raw = strings.TrimSuffix(raw, "/refresh")
		}
		name, err := url.PathUnescape(raw)
		if err != nil {
			return "", fmt.Errorf("%w: bad percent-encoding in %q", keys.ErrInvalidKey, raw)
		}
		return name, nil
	}
}

// taskLock is the lock of /v1/tasks/{id}/lock: "tasks/{id}".
func taskLock(r *http.Request) (string, error) { return "tasks/" + chi.URLParam(r, "id"), nil }

// lockTarget returns the namespace and the validated lock name.
func lockTarget(r *http.Request, cfg Config, nameOf lockName) (string, string, error) {
	ns, err := namespace(r, cfg)
	if err != nil {
		return "", "", err
	}
	name, err := nameOf(r)
	if err != nil {
		return "", "", err
	}
	if err := keys.Validate(name); err != nil {
		return "", "", err
	}
	return ns, name, nil
}

// handleLockAcquire grants a lock, waiting up to wait_ms for a holder to let
// go. The owner defaults to the caller's X-Worker-Id.
func handleLockAcquire(log *slog.Logger, cfg Config, lk Locker, nameOf lockName) http.HandlerFunc {
	type request struct {
		TTLMs  *int64 `json:"ttl_ms"`
		WaitMs int64  `json:"wait_ms"`
		Owner  string `json:"owner"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := lockTarget(r, cfg, nameOf)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if name == "refresh" || strings.HasSuffix(name, "/refresh") {
			// POST …/{name}/refresh means refresh: such a lock could never
			// be refreshed, so it cannot be taken either.
			writeError(w, r, log, fmt.Errorf("%w: \"refresh\" is reserved as the last segment of a lock name", keys.ErrInvalidKey))
			return
		}
		var req request
		if err := decode(r, cfg.MaxDepth, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		if req.TTLMs == nil || *req.TTLMs <= 0 || req.WaitMs < 0 {
			writeError(w, r, log, fmt.Errorf("%w: ttl_ms is required and must be positive; wait_ms must not be negative", errInvalidArgument))
			return
		}
		owner, idem, err := acquirer(r, req.Owner)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		// A token withdrawn while the request waits ends the wait: 401.
		ctx, stop := waitContext(r, cfg, req.WaitMs > 0)
		defer stop()
		g, err := lk.Acquire(ctx, ns, name, lock.AcquireRequest{
			TTL:            time.Duration(min(*req.TTLMs, maxMillis)) * time.Millisecond,
			Wait:           time.Duration(min(req.WaitMs, maxMillis)) * time.Millisecond,
			Owner:          owner,
			IdempotencyKey: idem,
		})
		if err != nil {
			writeError(w, r, log, withdrawn(ctx, err))
			return
		}
		if g.Replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		writeJSON(w, http.StatusOK, newGrantResponse(g))
	}
}

// acquirer returns the owner of a lock or permit acquire (the body's owner,
// which the caller must be allowed to act as, or else its X-Worker-Id) and
// its Idempotency-Key.
func acquirer(r *http.Request, owner string) (string, string, error) {
	worker, err := workerHeader(r)
	if err != nil {
		return "", "", err
	}
	if owner == "" {
		owner = worker
	} else if err := authorizeActingAs(r, owner); err != nil {
		return "", "", err
	}
	idem := r.Header.Get("Idempotency-Key")
	if idem != "" && !clock.ValidID(idem) {
		return "", "", fmt.Errorf("%w: Idempotency-Key must be 1-128 characters of [A-Za-z0-9._:@-]", errInvalidArgument)
	}
	return owner, idem, nil
}

// handleLockRefresh extends the lease of the token's holder.
func handleLockRefresh(log *slog.Logger, cfg Config, lk Locker, nameOf lockName) http.HandlerFunc {
	// Closures, not method values: the routes are built before a test's
	// nil Locker would be called.
	refresh := func(ctx context.Context, ns, name, token string, ttl time.Duration) (lock.Grant, error) {
		return lk.Refresh(ctx, ns, name, token, ttl)
	}
	return handleRefresh(log, cfg, nameOf, refresh, newGrantResponse)
}

// handleRefresh extends the lease that a token holds (a lock's or a
// permit's) through refresh, and answers what respond makes of it.
func handleRefresh[T, R any](log *slog.Logger, cfg Config, nameOf lockName,
	refresh func(ctx context.Context, ns, name, token string, ttl time.Duration) (T, error), respond func(T) R) http.HandlerFunc {
	type request struct {
		Token string `json:"token"`
		TTLMs *int64 `json:"ttl_ms"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := lockTarget(r, cfg, nameOf)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var req request
		if err := decode(r, cfg.MaxDepth, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		if req.Token == "" || req.TTLMs == nil || *req.TTLMs <= 0 {
			writeError(w, r, log, fmt.Errorf("%w: token and a positive ttl_ms are required", errInvalidArgument))
			return
		}
		held, err := refresh(r.Context(), ns, name, req.Token, time.Duration(min(*req.TTLMs, maxMillis))*time.Millisecond)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, respond(held))
	}
}

// handleLockRelease releases the lock of the X-Lock-Token holder, or any
// holder's with ?force=true (an admin's escape hatch: with tokens, an
// admin token's only).
func handleLockRelease(log *slog.Logger, cfg Config, lk Locker, nameOf lockName) http.HandlerFunc {
	release := func(ctx context.Context, ns, name, token string) error { return lk.Release(ctx, ns, name, token) }
	force := func(ctx context.Context, ns, name string) error { return lk.ForceRelease(ctx, ns, name) }
	return handleRelease(log, cfg, nameOf, "force a lock's release", release, force)
}

// handleRelease gives back what the X-Lock-Token holds through release,
// or with ?force=true (an admin's) what anyone holds through force; what
// names forcing in a 403.
func handleRelease(log *slog.Logger, cfg Config, nameOf lockName, what string,
	release func(ctx context.Context, ns, name, token string) error, force func(ctx context.Context, ns, name string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := lockTarget(r, cfg, nameOf)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		forced, err := boolParam(r.URL.Query().Get("force"), "force")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		token := r.Header.Get("X-Lock-Token")
		switch {
		case forced:
			if err = requireAdmin(r, what); err == nil {
				err = force(r.Context(), ns, name)
			}
		case token == "":
			err = fmt.Errorf("%w: the X-Lock-Token header is required (or ?force=true)", errInvalidArgument)
		default:
			err = release(r.Context(), ns, name, token)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func handleLockHolder(log *slog.Logger, cfg Config, lk Locker, nameOf lockName) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := lockTarget(r, cfg, nameOf)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		info, err := lk.Holder(r.Context(), ns, name)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, newLockInfo(info))
	}
}

func handleLocks(log *slog.Logger, cfg Config, lk Locker) http.HandlerFunc {
	type response struct {
		Locks []lockInfo `json:"locks"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		infos, err := lk.List(r.Context(), ns, r.URL.Query().Get("prefix"))
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		out := response{Locks: make([]lockInfo, len(infos))}
		for i, info := range infos {
			out.Locks[i] = newLockInfo(info)
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// handleLockPost routes POST /v1/locks/{name...}: a name ending in
// "/refresh" refreshes the lock named by the rest. ("refresh" is therefore
// reserved as the last segment of a lock name.)
func handleLockPost(log *slog.Logger, cfg Config, lk Locker) http.HandlerFunc {
	return orRefresh(handleLockAcquire(log, cfg, lk, wildcardLock(false)), handleLockRefresh(log, cfg, lk, wildcardLock(true)))
}

// orRefresh serves a POST to a wildcard route whose path ends in "/refresh"
// with refresh, any other with acquire.
func orRefresh(acquire, refresh http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(chi.URLParam(r, "*"), "/refresh") {
			refresh(w, r)
			return
		}
		acquire(w, r)
	}
}
