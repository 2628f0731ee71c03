package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// AcquirePermit takes one of the limit permits of semaphore name (a
// key-like name, "jobs/crawl"; its last segment may not be "refresh"),
// waiting up to opts.Wait for one to come free. A semaphore lets up to limit
// holders in at once; every acquirer must ask the same limit while any
// permit is live (ErrLimitMismatch otherwise). When every permit stays taken
// it returns an error matching ErrSemaphoreFull whose *APIError says how
// many are live (Holders) and when the first ends (LockExpiresAt).
//
// The permit is a *Lock without a fence (Fence is 0, Limit is set): Refresh,
// Keep and Release work as for a lock, and the same caveat holds: a lease
// can end without its holder knowing.
func (c *Client) AcquirePermit(ctx context.Context, name string, limit int, opts LockOptions) (*Lock, error) {
	if name == "" {
		return nil, errEmpty("semaphore name")
	}
	if name == "refresh" || strings.HasSuffix(name, "/refresh") {
		return nil, fmt.Errorf("memsync: semaphore name %q: the last segment \"refresh\" is reserved: %w", name, ErrInvalid)
	}
	if limit < 1 {
		return nil, fmt.Errorf("memsync: semaphore %q: limit %d must be at least 1: %w", name, limit, ErrInvalid)
	}
	return c.acquire(ctx, pathOf("v1/semaphores", name), name, limit, opts)
}

// PermitInfo is a live permit as anyone may see it: no token.
type PermitInfo struct {
	Owner      string
	AcquiredAt time.Time
	ExpiresAt  time.Time
}

// SemaphoreInfo is a semaphore's live permits and waiters.
type SemaphoreInfo struct {
	Name  string
	Limit int
	// Holders are the live permits, the first to expire first.
	Holders []PermitInfo
	// Waiters is how many requests wait in line for a permit, on every
	// instance.
	Waiters int
}

// UnmarshalJSON reads the server's semaphore (times in Unix ms).
func (s *SemaphoreInfo) UnmarshalJSON(b []byte) error {
	var v struct {
		Name    string      `json:"name"`
		Limit   int         `json:"limit"`
		Holders []grantJSON `json:"holders"`
		Waiters int         `json:"waiters"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = SemaphoreInfo{Name: v.Name, Limit: v.Limit, Waiters: v.Waiters, Holders: make([]PermitInfo, len(v.Holders))}
	for i, h := range v.Holders {
		s.Holders[i] = PermitInfo{Owner: h.Owner, AcquiredAt: fromMillis(h.AcquiredAt), ExpiresAt: fromMillis(h.ExpiresAt)}
	}
	return nil
}

// Semaphore returns semaphore name's live permits. It returns ErrNotFound
// when none is live.
func (c *Client) Semaphore(ctx context.Context, name string) (*SemaphoreInfo, error) {
	if name == "" {
		return nil, errEmpty("semaphore name")
	}
	var s SemaphoreInfo
	if err := c.do(ctx, request{method: http.MethodGet, path: pathOf("v1/semaphores", name)}, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Semaphores lists the semaphores with live permits whose names start with
// prefix ("" for all), sorted by name.
func (c *Client) Semaphores(ctx context.Context, prefix string) ([]SemaphoreInfo, error) {
	var out struct {
		Semaphores []SemaphoreInfo `json:"semaphores"`
	}
	q := url.Values{"prefix": {prefix}}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/semaphores", query: q}, &out); err != nil {
		return nil, err
	}
	return out.Semaphores, nil
}

// ForceReleaseSemaphore ends every permit of semaphore name: an
// administrator's escape hatch. The holders are not told; their next
// Refresh or Release fails with ErrLockNotHeld. It returns an error
// matching ErrLockNotHeld when no permit was live.
func (c *Client) ForceReleaseSemaphore(ctx context.Context, name string) error {
	if name == "" {
		return errEmpty("semaphore name")
	}
	q := url.Values{"force": {"true"}}
	return c.do(ctx, request{method: http.MethodDelete, path: pathOf("v1/semaphores", name), query: q}, nil)
}
