package http

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/lock"
)

// Semaphores is what the semaphore handlers need from the lock service.
type Semaphores interface {
	AcquirePermit(ctx context.Context, ns, name string, req lock.SemaphoreRequest) (lock.Permit, error)
	ReleasePermit(ctx context.Context, ns, name, token string) error
	ForceReleasePermits(ctx context.Context, ns, name string) error
	RefreshPermit(ctx context.Context, ns, name, token string, ttl time.Duration) (lock.Permit, error)
	Semaphore(ctx context.Context, ns, name string) (lock.SemaphoreInfo, error)
	Semaphores(ctx context.Context, ns, prefix string) ([]lock.SemaphoreInfo, error)
}

// semaphoreInfo is a semaphore's live permits as anyone may see them: no
// tokens.
type semaphoreInfo struct {
	Name    string       `json:"name"`
	Limit   int          `json:"limit"`
	Holders []permitInfo `json:"holders"`
	Waiters int          `json:"waiters"`
}

type permitInfo struct {
	Owner      string `json:"owner"`
	AcquiredAt int64  `json:"acquired_at"`
	ExpiresAt  int64  `json:"expires_at"`
}

func newSemaphoreInfo(info lock.SemaphoreInfo) semaphoreInfo {
	out := semaphoreInfo{Name: info.Name, Limit: info.Limit, Holders: make([]permitInfo, len(info.Holders)), Waiters: info.Waiters}
	for i, h := range info.Holders {
		out.Holders[i] = permitInfo{Owner: h.Owner, AcquiredAt: h.AcquiredAt.UnixMilli(), ExpiresAt: h.ExpiresAt.UnixMilli()}
	}
	return out
}

// permitResponse is a held permit, token included: only its acquirer sees it.
type permitResponse struct {
	Name       string `json:"name"`
	Owner      string `json:"owner"`
	Token      string `json:"token"`
	Limit      int    `json:"limit"`
	AcquiredAt int64  `json:"acquired_at"`
	ExpiresAt  int64  `json:"expires_at"`
}

func newPermitResponse(p lock.Permit) permitResponse {
	return permitResponse{Name: p.Name, Owner: p.Owner, Token: p.Token, Limit: p.Limit,
		AcquiredAt: p.AcquiredAt.UnixMilli(), ExpiresAt: p.ExpiresAt.UnixMilli()}
}

// handleSemaphorePost routes POST /v1/semaphores/{name...}: a name ending in
// "/refresh" refreshes a permit of the semaphore named by the rest.
func handleSemaphorePost(log *slog.Logger, cfg Config, sem Semaphores) http.HandlerFunc {
	refresh := func(ctx context.Context, ns, name, token string, ttl time.Duration) (lock.Permit, error) {
		return sem.RefreshPermit(ctx, ns, name, token, ttl)
	}
	return orRefresh(handleSemaphoreAcquire(log, cfg, sem), handleRefresh(log, cfg, wildcardLock(true), refresh, newPermitResponse))
}

// handleSemaphoreAcquire grants a permit, waiting up to wait_ms for one to
// come free. The owner defaults to the caller's X-Worker-Id.
func handleSemaphoreAcquire(log *slog.Logger, cfg Config, sem Semaphores) http.HandlerFunc {
	type request struct {
		Limit  *int   `json:"limit"`
		TTLMs  *int64 `json:"ttl_ms"`
		WaitMs int64  `json:"wait_ms"`
		Owner  string `json:"owner"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := lockTarget(r, cfg, wildcardLock(false))
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if name == "refresh" || strings.HasSuffix(name, "/refresh") {
			writeError(w, r, log, fmt.Errorf("%w: \"refresh\" is reserved as the last segment of a semaphore name", keys.ErrInvalidKey))
			return
		}
		var req request
		if err := decode(r, cfg.MaxDepth, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		if req.Limit == nil || req.TTLMs == nil || *req.TTLMs <= 0 || req.WaitMs < 0 {
			writeError(w, r, log, fmt.Errorf("%w: limit and a positive ttl_ms are required; wait_ms must not be negative", errInvalidArgument))
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
		p, err := sem.AcquirePermit(ctx, ns, name, lock.SemaphoreRequest{
			Limit:          *req.Limit,
			TTL:            time.Duration(min(*req.TTLMs, maxMillis)) * time.Millisecond,
			Wait:           time.Duration(min(req.WaitMs, maxMillis)) * time.Millisecond,
			Owner:          owner,
			IdempotencyKey: idem,
		})
		if err != nil {
			writeError(w, r, log, withdrawn(ctx, err))
			return
		}
		if p.Replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		writeJSON(w, http.StatusOK, newPermitResponse(p))
	}
}

// handleSemaphoreRelease gives back the X-Lock-Token's permit, or with
// ?force=true (an admin's) every permit.
func handleSemaphoreRelease(log *slog.Logger, cfg Config, sem Semaphores) http.HandlerFunc {
	release := func(ctx context.Context, ns, name, token string) error {
		return sem.ReleasePermit(ctx, ns, name, token)
	}
	force := func(ctx context.Context, ns, name string) error { return sem.ForceReleasePermits(ctx, ns, name) }
	return handleRelease(log, cfg, wildcardLock(false), "force a semaphore's release", release, force)
}

// handleSemaphore describes a semaphore's live permits, never their tokens.
func handleSemaphore(log *slog.Logger, cfg Config, sem Semaphores) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := lockTarget(r, cfg, wildcardLock(false))
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		info, err := sem.Semaphore(r.Context(), ns, name)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, newSemaphoreInfo(info))
	}
}

// handleSemaphores lists the semaphores with live permits under ?prefix=.
func handleSemaphores(log *slog.Logger, cfg Config, sem Semaphores) http.HandlerFunc {
	type response struct {
		Semaphores []semaphoreInfo `json:"semaphores"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		infos, err := sem.Semaphores(r.Context(), ns, r.URL.Query().Get("prefix"))
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		out := response{Semaphores: make([]semaphoreInfo, len(infos))}
		for i, info := range infos {
			out.Semaphores[i] = newSemaphoreInfo(info)
		}
		writeJSON(w, http.StatusOK, out)
	}
}
