package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
)

// recorded is one request a fake server received.
type recorded struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

// fake is an httptest server that records every request and answers with
// handle.
type fake struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []recorded
}

func newFake(t *testing.T, handle http.HandlerFunc) *fake {
	t.Helper()
	f := &fake{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, recorded{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: b})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		handle(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fake) requests() []recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recorded(nil), f.reqs...)
}

func mustNew(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatalf("New(%q): %v", url, err)
	}
	return c
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func problem(w http.ResponseWriter, status int, code string, extra map[string]any) {
	p := map[string]any{"type": "urn:memsync:problem:" + code, "title": "T", "status": status, "detail": "d", "code": code}
	for k, v := range extra {
		p[k] = v
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

const entryBody = `{"key":"tasks/T1/state","namespace":"task-sentinel","value":{"status":"running"},
 "version":{"w1":3,"w2":1},"etag":"\"e1\"","timestamp":1764170000000,"writer":"w1",
 "expires_at":1764173600000,"strategy":"lww","conflict":true,"siblings":2,
 "sibling_list":[{"value":{"status":"failed"},"version":{"w2":1},"timestamp":1764169000000,"writer":"w2","discarded":true},
                 {"value":{"status":"running"},"version":{"w1":3},"timestamp":1764170000000,"writer":"w1","discarded":false}]}`

var sentinels = []error{
	client.ErrNotFound, client.ErrPreconditionFailed, client.ErrLockHeld, client.ErrLockNotHeld,
	client.ErrInvalid, client.ErrUnavailable, client.ErrUnauthorized, client.ErrForbidden, client.ErrRateLimited,
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		code       string // "" sends a plain-text body
		retryAfter string
		want       error // nil: no sentinel matches
		wantRetry  time.Duration
	}{
		{"not found", 404, "not_found", "", client.ErrNotFound, 0},
		{"precondition", 412, "precondition_failed", "", client.ErrPreconditionFailed, 0},
		{"lock held", 409, "lock_held", "4", client.ErrLockHeld, 4 * time.Second},
		{"lock not held", 409, "lock_not_held", "", client.ErrLockNotHeld, 0},
		{"invalid key", 400, "invalid_key", "", client.ErrInvalid, 0},
		{"invalid json", 400, "invalid_json", "", client.ErrInvalid, 0},
		{"invalid argument", 400, "invalid_argument", "", client.ErrInvalid, 0},
		{"unknown 400 code", 400, "brand_new", "", client.ErrInvalid, 0},
		{"body too large", 413, "body_too_large", "", client.ErrInvalid, 0},
		{"method not allowed", 405, "invalid_argument", "", client.ErrInvalid, 0},
		{"unavailable", 503, "backend_unavailable", "1", client.ErrUnavailable, time.Second},
		{"unauthorized", 401, "unauthorized", "", client.ErrUnauthorized, 0},
		{"forbidden", 403, "forbidden", "", client.ErrForbidden, 0},
		{"rate limited", 429, "rate_limited", "3", client.ErrRateLimited, 3 * time.Second},
		{"internal", 500, "internal", "", nil, 0},
		{"proxy 503 without problem", 503, "", "2", client.ErrUnavailable, 2 * time.Second},
		{"proxy 502 without problem", 502, "", "", nil, 0},
		{"bad retry-after", 503, "backend_unavailable", "soon", client.ErrUnavailable, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				if tt.code == "" {
					http.Error(w, "upstream trouble", tt.status)
					return
				}
				problem(w, tt.status, tt.code, nil)
			})
			c := mustNew(t, f.URL)
			_, err := c.Get(context.Background(), "tasks/T1/state")
			if err == nil {
				t.Fatal("Get: no error")
			}
			for _, s := range sentinels {
				if got, want := errors.Is(err, s), s == tt.want; got != want {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", err, s, got, want)
				}
			}
			var ae *client.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error %T is not an *APIError", err)
			}
			if ae.Status != tt.status || ae.Code != tt.code || ae.RetryAfter != tt.wantRetry || ae.Op != -1 {
				t.Errorf("APIError = {Status %d, Code %q, RetryAfter %v, Op %d}, want {%d, %q, %v, -1}",
					ae.Status, ae.Code, ae.RetryAfter, ae.Op, tt.status, tt.code, tt.wantRetry)
			}
			if !strings.Contains(err.Error(), "GET /v1/kv/tasks/T1/state") {
				t.Errorf("Error() = %q, want the call in it", err.Error())
			}
		})
	}
}

func TestLockHeldError(t *testing.T) {
	until := time.UnixMilli(1764170030000)
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		problem(w, 409, "lock_held", map[string]any{"holder": "w9", "expires_at": until.UnixMilli()})
	})
	c := mustNew(t, f.URL, client.WithWorkerID("w1"))
	l, err := c.Lock(context.Background(), "jobs/nightly", client.LockOptions{})
	if l != nil || !errors.Is(err, client.ErrLockHeld) {
		t.Fatalf("Lock = %v, %v; want nil, ErrLockHeld", l, err)
	}
	var ae *client.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("%T is not an *APIError", err)
	}
	if ae.Holder != "w9" || !ae.LockExpiresAt.Equal(until) || ae.RetryAfter != 7*time.Second {
		t.Errorf("APIError = {Holder %q, LockExpiresAt %v, RetryAfter %v}, want {w9, %v, 7s}", ae.Holder, ae.LockExpiresAt, ae.RetryAfter, until)
	}
	if !strings.Contains(err.Error(), `"w9"`) {
		t.Errorf("Error() = %q, want the holder in it", err)
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
		problem(w, 503, "backend_unavailable", nil)
	})
	_, err := mustNew(t, f.URL).Get(context.Background(), "k")
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.RetryAfter < 59*time.Minute || ae.RetryAfter > time.Hour {
		t.Fatalf("RetryAfter of %v: want about an hour", err)
	}
}

// answer gives every route a plausible 2xx answer.
func answer(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	grant := map[string]any{"name": "jobs/nightly", "owner": "w1", "token": "tok", "fence": 7, "acquired_at": 1764170000000, "expires_at": 1764170030000}
	switch {
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	case strings.HasPrefix(p, "/v1/tasks/") && strings.HasSuffix(p, "/lock") && r.Method == http.MethodPost:
		grant["name"] = "tasks/T1"
		writeJSON(w, 200, grant)
	case strings.HasPrefix(p, "/v1/locks/") && r.Method == http.MethodPost:
		writeJSON(w, 200, grant)
	case strings.HasPrefix(p, "/v1/locks/"):
		delete(grant, "token")
		writeJSON(w, 200, grant)
	case p == "/v1/locks":
		writeJSON(w, 200, map[string]any{"locks": []any{}})
	case p == "/v1/keys":
		writeJSON(w, 200, map[string]any{"keys": []string{"tasks/T1/state"}})
	case p == "/v1/workers":
		writeJSON(w, 200, map[string]any{"workers": []any{}})
	case p == "/v1/sync":
		writeJSON(w, 200, map[string]any{"flushed": 3})
	case p == "/v1/batch":
		var req struct{ Ops []json.RawMessage }
		_ = json.NewDecoder(r.Body).Decode(&req)
		results := make([]map[string]any, len(req.Ops))
		for i := range results {
			results[i] = map[string]any{"status": 204}
		}
		writeJSON(w, 200, map[string]any{"results": results})
	case r.URL.Query().Get("async") == "true":
		writeJSON(w, 202, map[string]any{"queued": true, "key": "k", "namespace": "staging", "pending": 1})
	case strings.HasSuffix(p, "/heartbeat"):
		writeJSON(w, 200, map[string]any{"worker": "w1", "expires_at": 1764170030000})
	case strings.HasSuffix(p, "/agents"):
		writeJSON(w, 200, map[string]any{"agents": []any{}})
	default:
		w.Header().Set("ETag", `"e1"`)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, entryBody)
	}
}

func TestRequests(t *testing.T) {
	type want struct {
		method, path, query string
		header              map[string]string // "" means absent
		body                string            // JSON; "" means no body
	}
	tests := []struct {
		name string
		call func(context.Context, *client.Client) error
		want want // of the last request
	}{
		{"put with every option", func(ctx context.Context, c *client.Client) error {
			_, err := c.Put(ctx, "tasks/T1/state", map[string]int{"a": 1},
				client.WithContext(map[string]uint64{"w1": 2}), client.TTL(1500*time.Millisecond), client.IfMatch(`"e1"`))
			return err
		}, want{"PUT", "/v1/kv/tasks/T1/state", "ns=staging",
			map[string]string{"If-Match": `"e1"`, "If-None-Match": "", "Content-Type": "application/json"},
			`{"value":{"a":1},"context":{"w1":2},"ttl":2}`}},
		{"put create-only, never expires", func(ctx context.Context, c *client.Client) error {
			_, err := c.Put(ctx, "k", json.RawMessage(`[1,2]`), client.IfNoneMatch(), client.TTL(0))
			return err
		}, want{"PUT", "/v1/kv/k", "ns=staging", map[string]string{"If-None-Match": "*", "If-Match": ""}, `{"value":[1,2],"ttl":0}`}},
		{"put null", func(ctx context.Context, c *client.Client) error {
			_, err := c.Put(ctx, "k", nil)
			return err
		}, want{"PUT", "/v1/kv/k", "ns=staging", nil, `{"value":null}`}},
		{"get with every option", func(ctx context.Context, c *client.Client) error {
			_, err := c.Get(ctx, "tasks/T1/state", client.Resolve(client.StrategySiblings), client.WithSiblings(), client.Consistent())
			return err
		}, want{"GET", "/v1/kv/tasks/T1/state", "consistent=true&ns=staging&resolve=siblings&siblings=true", map[string]string{"Content-Type": ""}, ""}},
		{"put async", func(ctx context.Context, c *client.Client) error {
			return c.PutAsync(ctx, "tasks/T1/state", "queued", client.WithContext(map[string]uint64{"w1": 2}), client.TTL(time.Minute))
		}, want{"PUT", "/v1/kv/tasks/T1/state", "async=true&ns=staging", map[string]string{"If-Match": "", "If-None-Match": ""},
			`{"value":"queued","context":{"w1":2},"ttl":60}`}},
		{"sync", func(ctx context.Context, c *client.Client) error {
			n, err := c.Sync(ctx)
			if err == nil && n != 3 {
				err = fmt.Errorf("flushed %d, want 3", n)
			}
			return err
		}, want{"POST", "/v1/sync", "ns=staging", map[string]string{"Content-Type": ""}, ""}},
		{"batch", func(ctx context.Context, c *client.Client) error {
			_, err := c.Batch(ctx, []client.BatchOp{{Op: client.OpDelete, Key: "k", IfMatch: `"e1"`}}, true)
			return err
		}, want{"POST", "/v1/batch", "ns=staging", nil, `{"ops":[{"op":"delete","key":"k","if_match":"\"e1\""}],"atomic":true}`}},
		{"delete if match", func(ctx context.Context, c *client.Client) error {
			return c.Delete(ctx, "tasks/T1/state", client.IfMatch(`"e1"`))
		}, want{"DELETE", "/v1/kv/tasks/T1/state", "ns=staging", map[string]string{"If-Match": `"e1"`}, ""}},
		{"keys", func(ctx context.Context, c *client.Client) error {
			_, err := c.Keys(ctx, "tasks/")
			return err
		}, want{"GET", "/v1/keys", "limit=1000&ns=staging&prefix=tasks%2F", nil, ""}},
		{"task state", func(ctx context.Context, c *client.Client) error {
			_, err := c.SyncTaskState(ctx, "T1", map[string]string{"status": "running"}, client.TTL(time.Minute))
			return err
		}, want{"PUT", "/v1/tasks/T1/state", "ns=staging", nil, `{"value":{"status":"running"},"ttl":60}`}},
		{"read task state", func(ctx context.Context, c *client.Client) error {
			_, err := c.TaskState(ctx, "T1")
			return err
		}, want{"GET", "/v1/tasks/T1/state", "ns=staging", nil, ""}},
		{"task progress", func(ctx context.Context, c *client.Client) error {
			_, err := c.SyncTaskProgress(ctx, "T1", 40, "indexing")
			return err
		}, want{"PUT", "/v1/tasks/T1/progress", "ns=staging", nil, `{"value":{"progress":40,"status":"indexing"}}`}},
		{"read task progress", func(ctx context.Context, c *client.Client) error {
			_, err := c.TaskProgress(ctx, "T1", client.Consistent())
			return err
		}, want{"GET", "/v1/tasks/T1/progress", "consistent=true&ns=staging", nil, ""}},
		{"agent", func(ctx context.Context, c *client.Client) error {
			_, err := c.SyncAgentCoordination(ctx, "T1", "A1", map[string]string{"role": "coder"})
			return err
		}, want{"PUT", "/v1/tasks/T1/agents/A1", "ns=staging", nil, `{"value":{"role":"coder"}}`}},
		{"read agent", func(ctx context.Context, c *client.Client) error {
			_, err := c.AgentCoordination(ctx, "T1", "A1")
			return err
		}, want{"GET", "/v1/tasks/T1/agents/A1", "ns=staging", nil, ""}},
		{"task agents", func(ctx context.Context, c *client.Client) error {
			_, err := c.TaskAgents(ctx, "T1")
			return err
		}, want{"GET", "/v1/tasks/T1/agents", "ns=staging", nil, ""}},
		{"heartbeat", func(ctx context.Context, c *client.Client) error {
			_, err := c.Heartbeat(ctx)
			return err
		}, want{"PUT", "/v1/workers/w1/heartbeat", "ns=staging", map[string]string{"Content-Type": ""}, ""}},
		{"heartbeat with ttl", func(ctx context.Context, c *client.Client) error {
			_, err := c.Heartbeat(ctx, client.HeartbeatTTL(1500*time.Millisecond))
			return err
		}, want{"PUT", "/v1/workers/w1/heartbeat", "ns=staging", nil, `{"ttl":2}`}},
		{"worker status", func(ctx context.Context, c *client.Client) error {
			_, err := c.SyncWorkerStatus(ctx, "w2", "idle")
			return err
		}, want{"PUT", "/v1/workers/w2/status", "ns=staging", nil, `{"value":"idle"}`}},
		{"worker capacity", func(ctx context.Context, c *client.Client) error {
			_, err := c.SyncWorkerCapacity(ctx, "w2", map[string]int{"slots": 4})
			return err
		}, want{"PUT", "/v1/workers/w2/capacity", "ns=staging", nil, `{"value":{"slots":4}}`}},
		{"read worker capacity", func(ctx context.Context, c *client.Client) error {
			_, err := c.WorkerCapacity(ctx, "w2")
			return err
		}, want{"GET", "/v1/workers/w2/capacity", "ns=staging", nil, ""}},
		{"active workers", func(ctx context.Context, c *client.Client) error {
			_, err := c.ActiveWorkers(ctx)
			return err
		}, want{"GET", "/v1/workers", "ns=staging", nil, ""}},
		{"queue", func(ctx context.Context, c *client.Client) error {
			_, err := c.SyncQueue(ctx, map[string][]string{"pending": {"T1"}})
			return err
		}, want{"PUT", "/v1/coordination/queue", "ns=staging", nil, `{"value":{"pending":["T1"]}}`}},
		{"assignments", func(ctx context.Context, c *client.Client) error {
			_, err := c.SyncAssignments(ctx, map[string]string{"T1": "w1"})
			return err
		}, want{"PUT", "/v1/coordination/assignments", "ns=staging", nil, `{"value":{"T1":"w1"}}`}},
		{"metrics", func(ctx context.Context, c *client.Client) error {
			_, err := c.Metrics(ctx)
			return err
		}, want{"GET", "/v1/coordination/metrics", "ns=staging", nil, ""}},
		{"lock", func(ctx context.Context, c *client.Client) error {
			_, err := c.Lock(ctx, "jobs/nightly", client.LockOptions{TTL: 10 * time.Second, Wait: 2500 * time.Microsecond})
			return err
		}, want{"POST", "/v1/locks/jobs/nightly", "ns=staging", nil, `{"ttl_ms":10000,"wait_ms":3,"owner":"w1"}`}},
		{"lock with defaults and an owner", func(ctx context.Context, c *client.Client) error {
			_, err := c.Lock(ctx, "jobs/nightly", client.LockOptions{Owner: "cron"})
			return err
		}, want{"POST", "/v1/locks/jobs/nightly", "ns=staging", nil, `{"ttl_ms":30000,"owner":"cron"}`}},
		{"refresh", func(ctx context.Context, c *client.Client) error {
			l, err := c.Lock(ctx, "jobs/nightly", client.LockOptions{})
			if err != nil {
				return err
			}
			return l.Refresh(ctx, 5*time.Second)
		}, want{"POST", "/v1/locks/jobs/nightly/refresh", "ns=staging", nil, `{"token":"tok","ttl_ms":5000}`}},
		{"release", func(ctx context.Context, c *client.Client) error {
			l, err := c.Lock(ctx, "jobs/nightly", client.LockOptions{})
			if err != nil {
				return err
			}
			return l.Release(ctx)
		}, want{"DELETE", "/v1/locks/jobs/nightly", "ns=staging", map[string]string{"X-Lock-Token": "tok"}, ""}},
		{"task lock", func(ctx context.Context, c *client.Client) error {
			_, err := c.AcquireTaskLock(ctx, "T1", 10*time.Second)
			return err
		}, want{"POST", "/v1/tasks/T1/lock", "ns=staging", nil, `{"ttl_ms":10000,"owner":"w1"}`}},
		{"task lock refresh", func(ctx context.Context, c *client.Client) error {
			l, err := c.AcquireTaskLock(ctx, "T1", 0)
			if err != nil {
				return err
			}
			return l.Refresh(ctx, 0)
		}, want{"POST", "/v1/locks/tasks/T1/refresh", "ns=staging", nil, `{"token":"tok","ttl_ms":30000}`}},
		{"task lock release", func(ctx context.Context, c *client.Client) error {
			l, err := c.AcquireTaskLock(ctx, "T1", 10*time.Second)
			if err != nil {
				return err
			}
			return l.Release(ctx)
		}, want{"DELETE", "/v1/tasks/T1/lock", "ns=staging", map[string]string{"X-Lock-Token": "tok"}, ""}},
		{"lock holder", func(ctx context.Context, c *client.Client) error {
			_, err := c.LockHolder(ctx, "jobs/nightly")
			return err
		}, want{"GET", "/v1/locks/jobs/nightly", "ns=staging", nil, ""}},
		{"task lock holder", func(ctx context.Context, c *client.Client) error {
			_, err := c.TaskLockHolder(ctx, "T1")
			return err
		}, want{"GET", "/v1/tasks/T1/lock", "ns=staging", nil, ""}},
		{"locks", func(ctx context.Context, c *client.Client) error {
			_, err := c.Locks(ctx, "jobs/")
			return err
		}, want{"GET", "/v1/locks", "ns=staging&prefix=jobs%2F", nil, ""}},
		{"force unlock", func(ctx context.Context, c *client.Client) error {
			return c.ForceUnlock(ctx, "jobs/nightly")
		}, want{"DELETE", "/v1/locks/jobs/nightly", "force=true&ns=staging", map[string]string{"X-Lock-Token": ""}, ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, answer)
			c := mustNew(t, f.URL+"/", client.WithWorkerID("w1"), client.WithNamespace("staging"), client.WithToken("s3cret"))
			if err := tt.call(context.Background(), c); err != nil {
				t.Fatalf("call: %v", err)
			}
			reqs := f.requests()
			got := reqs[len(reqs)-1]
			if got.Method != tt.want.method || got.Path != tt.want.path || got.Query != tt.want.query {
				t.Errorf("request = %s %s?%s, want %s %s?%s", got.Method, got.Path, got.Query, tt.want.method, tt.want.path, tt.want.query)
			}
			h := map[string]string{"X-Worker-Id": "w1", "Authorization": "Bearer s3cret"}
			for k, v := range tt.want.header {
				h[k] = v
			}
			for k, v := range h {
				if g := got.Header.Get(k); g != v {
					t.Errorf("header %s = %q, want %q", k, g, v)
				}
			}
			if tt.want.body == "" {
				if len(got.Body) != 0 {
					t.Errorf("body = %s, want none", got.Body)
				}
				return
			}
			if ct := got.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var gb, wb any
			if err := json.Unmarshal(got.Body, &gb); err != nil {
				t.Fatalf("body %s: %v", got.Body, err)
			}
			_ = json.Unmarshal([]byte(tt.want.body), &wb)
			if !reflect.DeepEqual(gb, wb) {
				t.Errorf("body = %s, want %s", got.Body, tt.want.body)
			}
		})
	}
}

func TestRequestsWithoutOptions(t *testing.T) {
	f := newFake(t, answer)
	c := mustNew(t, f.URL)
	if _, err := c.Put(context.Background(), "k", 1); err != nil {
		t.Fatal(err)
	}
	got := f.requests()[0]
	for _, h := range []string{"X-Worker-Id", "Authorization"} {
		if v := got.Header.Get(h); v != "" {
			t.Errorf("%s = %q, want none", h, v)
		}
	}
	if got.Query != "" {
		t.Errorf("query = %q, want none", got.Query)
	}
	if _, err := c.Heartbeat(context.Background()); !errors.Is(err, client.ErrNoWorkerID) {
		t.Errorf("Heartbeat without a worker id: %v, want ErrNoWorkerID", err)
	}
}

func TestArgumentsRefusedLocally(t *testing.T) {
	f := newFake(t, answer)
	c := mustNew(t, f.URL, client.WithWorkerID("w1"))
	ctx := context.Background()
	calls := map[string]func() error{
		"empty key":         func() error { _, err := c.Get(ctx, ""); return err },
		"negative ttl":      func() error { _, err := c.Put(ctx, "k", 1, client.TTL(-time.Second)); return err },
		"task id with /":    func() error { _, err := c.SyncTaskState(ctx, "a/b", 1); return err },
		"empty agent":       func() error { _, err := c.AgentCoordination(ctx, "T1", ""); return err },
		"reserved lock":     func() error { _, err := c.Lock(ctx, "jobs/refresh", client.LockOptions{}); return err },
		"negative lock ttl": func() error { _, err := c.Lock(ctx, "jobs", client.LockOptions{TTL: -1}); return err },
		"async if-match":    func() error { return c.PutAsync(ctx, "k", 1, client.IfMatch(`"e1"`)) },
		"async create-only": func() error { return c.PutAsync(ctx, "k", 1, client.IfNoneMatch()) },
		"async empty key":   func() error { return c.PutAsync(ctx, "", 1) },
		"async negative ttl": func() error {
			return c.PutAsync(ctx, "k", 1, client.TTL(-time.Second))
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests sent, want none", n)
	}
}

func TestNew(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8080", "ftp://h", "http://", "://x"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q): no error", u)
		}
	}
	f := newFake(t, answer)
	c := mustNew(t, f.URL+"/prefix/")
	if _, err := c.Get(context.Background(), "a/b"); err != nil {
		t.Fatal(err)
	}
	if got, want := f.requests()[0].Path, "/prefix/v1/kv/a/b"; got != want {
		t.Errorf("path = %q, want %q", got, want)
	}
}

func TestEntry(t *testing.T) {
	f := newFake(t, answer)
	e, err := mustNew(t, f.URL).Get(context.Background(), "tasks/T1/state", client.WithSiblings())
	if err != nil {
		t.Fatal(err)
	}
	if e.Key != "tasks/T1/state" || e.Namespace != "task-sentinel" || e.ETag != `"e1"` || e.Writer != "w1" ||
		e.Strategy != "lww" || !e.Conflict || e.Siblings != 2 {
		t.Errorf("entry = %+v", e)
	}
	if got, want := e.Version, map[string]uint64{"w1": 3, "w2": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("Version = %v, want %v", got, want)
	}
	if !e.Timestamp.Equal(time.UnixMilli(1764170000000)) || !e.ExpiresAt.Equal(time.UnixMilli(1764173600000)) {
		t.Errorf("Timestamp, ExpiresAt = %v, %v", e.Timestamp, e.ExpiresAt)
	}
	var v struct{ Status string }
	if err := e.Decode(&v); err != nil || v.Status != "running" {
		t.Errorf("Decode = %+v, %v", v, err)
	}
	if len(e.SiblingList) != 2 || !e.SiblingList[0].Discarded || e.SiblingList[0].Writer != "w2" ||
		!e.SiblingList[0].Timestamp.Equal(time.UnixMilli(1764169000000)) {
		t.Fatalf("SiblingList = %+v", e.SiblingList)
	}
	if err := e.SiblingList[0].Decode(&v); err != nil || v.Status != "failed" {
		t.Errorf("sibling Decode = %+v, %v", v, err)
	}

	// The entry marshals back to the server's form.
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	_ = json.Unmarshal(b, &got)
	_ = json.Unmarshal([]byte(entryBody), &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Marshal = %s\nwant %s", b, entryBody)
	}

	unresolved := client.Entry{Key: "k", Siblings: 2}
	if err := unresolved.Decode(&v); !errors.Is(err, client.ErrUnresolved) {
		t.Errorf("Decode of unresolved siblings = %v, want ErrUnresolved", err)
	}
}

func TestKeysFollowsCursors(t *testing.T) {
	pages := map[string]string{
		"":   `{"keys":["a","b"],"cursor":"c1"}`,
		"c1": `{"keys":["c"],"cursor":"c2"}`,
		"c2": `{"keys":["d"]}`,
	}
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, pages[r.URL.Query().Get("cursor")])
	})
	got, err := mustNew(t, f.URL).Keys(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b", "c", "d"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Keys = %v, want %v", got, want)
	}
	if n := len(f.requests()); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
}

// Entries asks for entries and passes on only the options that shape
// them: a listing has no cache to bypass and does not wait.
func TestEntriesSendsOnlyTheOptionsOfAListing(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"keys":["a"],"entries":[{"key":"a","value":1}]}`)
	})
	got, err := mustNew(t, f.URL).Entries(context.Background(), "a",
		client.Consistent(), client.WaitForChange(time.Second), client.Resolve(client.StrategyMax), client.WithSiblings())
	if err != nil || len(got) != 1 || got[0].Key != "a" {
		t.Fatalf("Entries = %v, %v", got, err)
	}
	if q := f.requests()[0].Query; q != "entries=true&limit=1000&prefix=a&resolve=max&siblings=true" {
		t.Errorf("query = %s", q)
	}
}

// casServer is one key that another writer changes under the client: each
// of the first conflicts PUTs finds it changed and gets 412.
type casServer struct {
	mu        sync.Mutex
	exists    bool
	rev       int
	conflicts int
	puts      []recorded
}

func (s *casServer) handle(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	etag := fmt.Sprintf(`"e%d"`, s.rev)
	entry := func() map[string]any {
		return map[string]any{"key": "k", "namespace": "ns", "value": s.rev, "version": map[string]int{"w2": s.rev},
			"etag": fmt.Sprintf(`"e%d"`, s.rev), "timestamp": 1, "writer": "w2", "strategy": "lww", "conflict": false, "siblings": 1}
	}
	switch r.Method {
	case http.MethodGet:
		if !s.exists {
			problem(w, 404, "not_found", nil)
			return
		}
		writeJSON(w, 200, entry())
	case http.MethodPut:
		b, _ := io.ReadAll(r.Body)
		s.puts = append(s.puts, recorded{Header: r.Header.Clone(), Body: b})
		if s.conflicts > 0 {
			s.conflicts--
			s.exists = true
			s.rev++ // someone else wrote first
			problem(w, 412, "precondition_failed", nil)
			return
		}
		if (s.exists && r.Header.Get("If-Match") != etag) || (!s.exists && r.Header.Get("If-None-Match") != "*") {
			problem(w, 412, "precondition_failed", nil)
			return
		}
		s.exists = true
		s.rev++
		writeJSON(w, 200, entry())
	}
}

func TestUpdate(t *testing.T) {
	tests := []struct {
		name      string
		exists    bool
		conflicts int
		wantErr   error
		wantCalls int
	}{
		{"first try", true, 0, nil, 1},
		{"creates", false, 0, nil, 1},
		{"retries on 412", true, 2, nil, 3},
		{"gives up", true, 1000, client.ErrPreconditionFailed, client.DefaultUpdateAttempts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &casServer{exists: tt.exists, rev: 5, conflicts: tt.conflicts}
			f := newFake(t, s.handle)
			c := mustNew(t, f.URL, client.WithWorkerID("w1"))
			var seen []*client.Entry
			e, err := c.Update(context.Background(), "k", func(cur *client.Entry) (any, error) {
				seen = append(seen, cur)
				return "new", nil
			}, client.TTL(time.Minute), client.IfMatch(`"stale"`))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && e == nil) {
				t.Fatalf("Update = %v, %v; want error %v", e, err, tt.wantErr)
			}
			if len(seen) != tt.wantCalls || len(s.puts) != tt.wantCalls {
				t.Fatalf("fn called %d times, %d PUTs; want %d", len(seen), len(s.puts), tt.wantCalls)
			}
			// Every PUT carried what its own read saw.
			for i, put := range s.puts {
				var body struct {
					Value   string            `json:"value"`
					Context map[string]uint64 `json:"context"`
					TTL     *int64            `json:"ttl"`
				}
				if err := json.Unmarshal(put.Body, &body); err != nil {
					t.Fatal(err)
				}
				if body.Value != "new" || body.TTL == nil || *body.TTL != 60 {
					t.Errorf("PUT %d body = %s", i, put.Body)
				}
				cur := seen[i]
				if cur == nil {
					if put.Header.Get("If-None-Match") != "*" || put.Header.Get("If-Match") != "" || body.Context != nil {
						t.Errorf("PUT %d of a new key: If-None-Match %q, If-Match %q, context %v", i,
							put.Header.Get("If-None-Match"), put.Header.Get("If-Match"), body.Context)
					}
					continue
				}
				if put.Header.Get("If-Match") != cur.ETag || put.Header.Get("If-None-Match") != "" || !reflect.DeepEqual(body.Context, cur.Version) {
					t.Errorf("PUT %d: If-Match %q, context %v; want %q, %v", i, put.Header.Get("If-Match"), body.Context, cur.ETag, cur.Version)
				}
			}
			// Each read asked for a fresh view with its siblings.
			for _, r := range f.requests() {
				if r.Method == http.MethodGet && r.Query != "consistent=true&siblings=true" {
					t.Errorf("GET query = %q", r.Query)
				}
			}
		})
	}
}

func TestUpdateStopsOnFnError(t *testing.T) {
	s := &casServer{exists: true}
	f := newFake(t, s.handle)
	boom := errors.New("boom")
	_, err := mustNew(t, f.URL).Update(context.Background(), "k", func(*client.Entry) (any, error) { return nil, boom })
	if !errors.Is(err, boom) || len(s.puts) != 0 {
		t.Fatalf("Update = %v with %d PUTs; want boom and none", err, len(s.puts))
	}
}

// lockServer grants a lock and answers refreshes with refresh.
func lockServer(t *testing.T, refresh func(w http.ResponseWriter, n int)) (*fake, *atomic.Int32) {
	var refreshes atomic.Int32
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/refresh"):
			refresh(w, int(refreshes.Add(1)))
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNoContent)
		default:
			writeJSON(w, 200, map[string]any{"name": "L", "owner": "w1", "token": "tok", "fence": 1,
				"acquired_at": time.Now().UnixMilli(), "expires_at": time.Now().Add(time.Second).UnixMilli()})
		}
	})
	return f, &refreshes
}

func refreshOK(w http.ResponseWriter, _ int) {
	writeJSON(w, 200, map[string]any{"name": "L", "owner": "w1", "token": "tok", "fence": 1,
		"acquired_at": time.Now().UnixMilli(), "expires_at": time.Now().Add(time.Second).UnixMilli()})
}

func TestKeep(t *testing.T) {
	const ttl = 600 * time.Millisecond // refreshes every 200 ms: room for a loaded machine
	tests := []struct {
		name    string
		refresh func(w http.ResponseWriter, n int)
		// lost within [min, max) after Keep, or not lost for 4 TTLs when max is 0
		min, max time.Duration
	}{
		{"lock_not_held", func(w http.ResponseWriter, _ int) { problem(w, 409, "lock_not_held", nil) }, ttl / 4, 2 * time.Second},
		{"lost on the second refresh", func(w http.ResponseWriter, n int) {
			if n == 1 {
				refreshOK(w, n)
				return
			}
			problem(w, 409, "lock_not_held", nil)
		}, ttl / 2, 2 * time.Second},
		{"refreshes fail until the lease ends", func(w http.ResponseWriter, _ int) {
			w.Header().Set("Retry-After", "1")
			problem(w, 503, "backend_unavailable", nil)
		}, ttl / 2, 2 * time.Second},
		{"refreshes hang until the lease ends", func(w http.ResponseWriter, _ int) { time.Sleep(2 * ttl); refreshOK(w, 0) }, ttl / 2, 2 * time.Second},
		{"refreshes succeed", refreshOK, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, refreshes := lockServer(t, tt.refresh)
			c := mustNew(t, f.URL, client.WithWorkerID("w1"))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			l, err := c.Lock(ctx, "L", client.LockOptions{TTL: ttl})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			lost := l.Keep(ctx)
			if tt.max == 0 {
				select {
				case <-lost:
					t.Fatalf("lost after %v though every refresh succeeded", time.Since(start))
				case <-time.After(4 * ttl):
				}
				if n := refreshes.Load(); n < 4 {
					t.Errorf("%d refreshes in 4 TTLs, want at least 4 (one per TTL/3)", n)
				}
				if err := l.Release(context.Background()); err != nil {
					t.Fatal(err)
				}
				select {
				case <-lost:
				case <-time.After(time.Second):
					t.Fatal("Release did not stop Keep")
				}
				time.Sleep(20 * time.Millisecond) // a cancelled refresh may still reach the server
				n := refreshes.Load()
				time.Sleep(ttl)
				if refreshes.Load() != n {
					t.Error("Keep refreshed after Release")
				}
				return
			}
			select {
			case <-lost:
				if d := time.Since(start); d < tt.min || d >= tt.max {
					t.Errorf("lost after %v, want within [%v, %v)", d, tt.min, tt.max)
				}
			case <-time.After(tt.max):
				t.Fatalf("not lost after %v", tt.max)
			}
			if refreshes.Load() == 0 {
				t.Error("no refresh was tried")
			}
		})
	}
}

func TestKeepStopsWithContext(t *testing.T) {
	f, _ := lockServer(t, refreshOK)
	c := mustNew(t, f.URL)
	l, err := c.Lock(context.Background(), "L", client.LockOptions{TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	lost := l.Keep(ctx)
	cancel()
	select {
	case <-lost:
	case <-time.After(time.Second):
		t.Fatal("Keep did not stop with its context")
	}
	// A second Keep replaces the first.
	first := l.Keep(context.Background())
	second := l.Keep(context.Background())
	select {
	case <-first:
	case <-time.After(time.Second):
		t.Fatal("a second Keep did not stop the first")
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-second
}

func TestStartHeartbeat(t *testing.T) {
	var beats atomic.Int32
	var failing atomic.Bool
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		beats.Add(1)
		if failing.Load() {
			problem(w, 503, "backend_unavailable", nil)
			return
		}
		writeJSON(w, 200, map[string]any{"worker": "w1", "expires_at": time.Now().Add(time.Second).UnixMilli()})
	})
	c := mustNew(t, f.URL, client.WithWorkerID("w1"))
	var errs atomic.Int32
	onErr := client.OnHeartbeatError(func(err error) {
		if errors.Is(err, client.ErrUnavailable) {
			errs.Add(1)
		}
	})
	stop := c.StartHeartbeat(context.Background(), 10*time.Millisecond, onErr, client.HeartbeatTTL(time.Second))
	if beats.Load() < 1 {
		t.Fatal("StartHeartbeat returned before its first beat")
	}
	waitFor(t, func() bool { return beats.Load() >= 3 })
	failing.Store(true)
	waitFor(t, func() bool { return errs.Load() >= 2 }) // failures are reported and retried
	failing.Store(false)
	n := beats.Load()
	waitFor(t, func() bool { return beats.Load() >= n+2 })
	stop()
	stop() // twice is fine

	// A beat cancelled by stop may still reach the server (give it time,
	// on a loaded machine); after that, none.
	time.Sleep(200 * time.Millisecond)
	n = beats.Load()
	time.Sleep(50 * time.Millisecond)
	if beats.Load() != n {
		t.Error("beats after stop")
	}
	for _, r := range f.requests() {
		if string(r.Body) != `{"ttl":1}` || r.Path != "/v1/workers/w1/heartbeat" || r.Method != http.MethodPut {
			t.Fatalf("beat = %s %s %s", r.Method, r.Path, r.Body)
		}
	}
}

func TestStartHeartbeatStopsWithContext(t *testing.T) {
	f := newFake(t, answer)
	ctx, cancel := context.WithCancel(context.Background())
	stop := mustNew(t, f.URL, client.WithWorkerID("w1")).StartHeartbeat(ctx, time.Millisecond)
	cancel()
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("stop hangs after the context ended")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
