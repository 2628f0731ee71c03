package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// proxy forwards requests to the server at target, but hands the first
// request of each method in methods to first instead, with the forwarding
// handler.
func proxy(t *testing.T, target string, methods []string, first func(w http.ResponseWriter, r *http.Request, forward http.Handler)) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	forward := httputil.NewSingleHostReverseProxy(u)
	var mu sync.Mutex
	seen := map[string]bool{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		isFirst := !seen[r.Method] && slices.Contains(methods, r.Method)
		seen[r.Method] = seen[r.Method] || isFirst
		mu.Unlock()
		if isFirst {
			first(w, r, forward)
			return
		}
		forward.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.URL
}

// lossyProxy forwards every request to the server at target, and then, for
// the first request of each method in lose, drops the answer: the request
// did reach the server, its caller hears nothing (a broken connection).
func lossyProxy(t *testing.T, target string, lose ...string) string {
	return proxy(t, target, lose, func(_ http.ResponseWriter, r *http.Request, forward http.Handler) {
		forward.ServeHTTP(&discard{header: http.Header{}}, r) // the server does it
		panic(http.ErrAbortHandler)                           // the caller hears nothing
	})
}

// discard is a ResponseWriter that keeps nothing.
type discard struct{ header http.Header }

func (d *discard) Header() http.Header         { return d.header }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// A client WithRetries whose answers to a Put, a Lock, a Batch, an atomic
// Batch, a PATCH, an enqueue and a Delete are lost once each: each call succeeds, each write
// applied once (Replayed), the lock's token the one granted. Without retries the same
// Put fails.
func TestRetriesSendWritesAgainUnderTheirIdempotencyKeys(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, lossyProxy(t, srv.URL, http.MethodPut, http.MethodPost), client.WithWorkerID("w1"), client.WithRetries(2))

	e, err := c.Put(ctx, "tasks/T1/state", "running")
	if err != nil || !e.Replayed || e.Version["w1"] != 1 {
		t.Fatalf("Put with its first answer lost: %+v, %v; want the write applied once, Replayed", e, err)
	}
	l, err := c.Lock(ctx, "jobs/nightly", client.LockOptions{TTL: 10 * time.Second})
	if err != nil || !l.Replayed {
		t.Fatalf("Lock with its first answer lost: %+v, %v; want the grant, Replayed", l, err)
	}
	if err := l.Release(ctx); err != nil {
		t.Errorf("release with the token given again: %v", err)
	}

	b := mustNew(t, lossyProxy(t, srv.URL, http.MethodPost), client.WithWorkerID("w1"), client.WithRetries(2))
	res, err := b.Batch(ctx, []client.BatchOp{{Op: client.OpPut, Key: "jobs/J1/state", Value: "queued"}}, false)
	if err != nil || len(res) != 1 || !res[0].Replayed || res[0].Entry.Version["w1"] != 1 {
		t.Errorf("Batch with its first answer lost: %+v, %v; want the put applied once, Replayed", res, err)
	}

	// An atomic batch whose if_match its own first run made false.
	owner, err := c.Put(ctx, "jobs/J2/owner", "nobody")
	if err != nil {
		t.Fatal(err)
	}
	a := mustNew(t, lossyProxy(t, srv.URL, http.MethodPost), client.WithWorkerID("w1"), client.WithRetries(2))
	res, err = a.Batch(ctx, []client.BatchOp{
		{Op: client.OpPut, Key: "jobs/J2/owner", Value: "w1", IfMatch: owner.ETag},
		{Op: client.OpPut, Key: "jobs/J2/state", Value: "claimed"},
	}, true)
	if err != nil || len(res) != 2 || !res[0].Replayed || res[0].Entry.Version["w1"] != 2 || !res[1].Replayed {
		t.Errorf("atomic Batch with its first answer lost: %+v, %v; want both puts applied once, Replayed", res, err)
	}

	// A JSON Patch append whose answer is lost is not appended twice.
	if _, err := c.Put(ctx, "jobs/J3/queue", map[string]any{"pending": []string{}}); err != nil {
		t.Fatal(err)
	}
	pt := mustNew(t, lossyProxy(t, srv.URL, http.MethodPatch), client.WithWorkerID("w1"), client.WithRetries(2))
	e, err = pt.PatchOps(ctx, "jobs/J3/queue", []client.PatchOp{{Op: "add", Path: "/pending/-", Value: "T1"}})
	if err != nil || !e.Replayed || string(e.Value) != `{"pending":["T1"]}` {
		t.Errorf("PatchOps with its first answer lost: %+v, %v; want T1 appended once, Replayed", e, err)
	}

	// An enqueue whose answer is lost adds one message.
	q := mustNew(t, lossyProxy(t, srv.URL, http.MethodPost), client.WithWorkerID("w1"), client.WithRetries(2))
	m, err := q.Enqueue(ctx, "retried", "T1", client.EnqueueOptions{})
	if s, _ := c.QueueStats(ctx, "retried"); err != nil || !m.Replayed || s.Visible != 1 {
		t.Errorf("Enqueue with its first answer lost: %+v, %v, %d visible; want one message, Replayed", m, err, s.Visible)
	}

	d := mustNew(t, lossyProxy(t, srv.URL, http.MethodDelete), client.WithWorkerID("w1"), client.WithRetries(2))
	if err := d.Delete(ctx, "jobs/J2/state"); err != nil {
		t.Errorf("Delete with its first answer lost: %v, want it answered as done", err)
	}
	if _, err := d.Get(ctx, "jobs/J2/state", client.Consistent()); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("after the Delete: %v, want ErrNotFound", err)
	}

	plain := mustNew(t, lossyProxy(t, srv.URL, http.MethodPut), client.WithWorkerID("w1"))
	if _, err := plain.Put(ctx, "tasks/T2/state", "running"); err == nil {
		t.Error("Put with its answer lost, without retries: no error")
	}
	if _, err := plain.Put(ctx, "tasks/T2/state", "running"); err != nil {
		t.Fatal(err)
	}
	direct := mustNew(t, srv.URL)
	if e, err := direct.Get(ctx, "tasks/T2/state", client.Consistent()); err != nil || e.Version["w1"] != 2 {
		t.Errorf("without retries nor key, sent twice by hand: %+v, %v; want w1 2 (applied twice)", e, err)
	}
}

// refusingProxy forwards requests to target, but answers the first request
// of each method in methods with status instead, without forwarding it.
func refusingProxy(t *testing.T, target string, status int, methods ...string) string {
	return proxy(t, target, methods, func(w http.ResponseWriter, _ *http.Request, _ http.Handler) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"status":` + strconv.Itoa(status) + `,"code":"x"}`))
	})
}

// What WithRetries sends again: a read after a 503, and a delete (under a
// key of its own); anything after a 429; never a lock release after a 503
// (it may have released, and the token means nothing then).
func TestRetriesSendAgainOnlyWhatIsSafe(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	setup := mustNew(t, srv.URL)
	for _, k := range []string{"a/1", "a/2", "a/3"} {
		if _, err := setup.Put(ctx, k, 1); err != nil {
			t.Fatal(err)
		}
	}
	unavailable := mustNew(t, refusingProxy(t, srv.URL, http.StatusServiceUnavailable, http.MethodGet, http.MethodDelete), client.WithRetries(1))
	if _, err := unavailable.Get(ctx, "a/1"); err != nil {
		t.Errorf("Get after a 503: %v, want it sent again", err)
	}
	if err := unavailable.Delete(ctx, "a/2"); err != nil {
		t.Errorf("Delete after a 503: %v, want it sent again", err)
	}
	releasing := mustNew(t, refusingProxy(t, srv.URL, http.StatusServiceUnavailable, http.MethodDelete), client.WithRetries(1))
	l, err := releasing.Lock(ctx, "jobs/held", client.LockOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Release after a 503: %v, want ErrUnavailable (not sent again)", err)
	}
	limited := mustNew(t, refusingProxy(t, srv.URL, http.StatusTooManyRequests, http.MethodDelete), client.WithRetries(1))
	if err := limited.Delete(ctx, "a/3"); err != nil {
		t.Errorf("Delete after a 429: %v, want it sent again", err)
	}
}
