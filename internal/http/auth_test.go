package http_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/auth"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/testserver"
)

// The tokens of the authentication tests: one per role, two workers.
const (
	adminToken  = "admin-token-0123456789"
	w1Token     = "w1-token-0123456789ab"
	w2Token     = "w2-token-0123456789ab"
	readerToken = "reader-token-01234567"
	// Tokens of worker w1 with an expiry: one long past, one far ahead.
	expiredToken = "expired-token-0123456"
	lastingToken = "lasting-token-0123456"
)

func testTokens(t *testing.T) *auth.Tokens {
	t.Helper()
	tokens, err := auth.Parse(strings.NewReader(adminToken + " ops admin\n" + w1Token + " w1 worker\n" +
		w2Token + " w2 worker\n" + readerToken + " board reader\n" +
		expiredToken + " w1 worker expires=2001-02-03T04:05:06Z\n" + lastingToken + " w1 worker expires=2999-01-01T00:00:00Z\n"))
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }

// With tokens, every route but the probes and the spec wants one; each role
// gets what CONTRACT §10 gives it, and the token's worker id is the writer.
func TestTokensAndRoles(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newServerHarness(t, testserver.Options{Backend: &b, Tokens: testTokens(t)})
		with := func(token string, headers ...string) []string { return append(bearer(token), headers...) }

		for _, path := range []string{"/healthz", "/readyz", "/openapi.yaml"} {
			h.must(200, "GET", path, "")
		}
		for _, tt := range []struct{ name, auth string }{
			{"no token", ""}, {"unknown token", "Bearer nope-nope-nope-nope"}, {"basic", "Basic b3BzOnB3"}, {"empty bearer", "Bearer "},
		} {
			r := h.must(401, "GET", "/v1/kv/tasks/T1/state", "", "Authorization", tt.auth)
			checkProblem(t, r, "unauthorized")
			if r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: 401 without WWW-Authenticate", tt.name)
			}
		}

		// A token past its expiry is refused, one before it works.
		r := h.must(401, "GET", "/v1/kv/tasks/T1/state", "", with(expiredToken)...)
		checkProblem(t, r, "unauthorized")
		if detail, _ := r.json(t)["detail"].(string); !strings.Contains(detail, "expired at 2001-02-03T04:05:06Z") {
			t.Errorf("expired token: detail %q does not say when it expired", detail)
		}
		h.must(404, "GET", "/v1/kv/tasks/T1/state", "", with(lastingToken)...)

		// A worker writes as itself, where a worker may.
		r = h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":{"status":"running"}}`, with(w1Token)...)
		if e := r.json(t); e["writer"] != "w1" {
			t.Errorf("a w1 token's write has writer %v", e["writer"])
		}
		h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":1}`, with(w1Token, "X-Worker-Id", "w1")...)
		if e := h.must(200, "PATCH", "/v1/kv/tasks/T1/patched", `{"a":1}`, with(w1Token)...).json(t); e["writer"] != "w1" {
			t.Errorf("a w1 token's patch has writer %v", e["writer"])
		}
		checkProblem(t, h.must(403, "PATCH", "/v1/kv/tasks/T1/state", `{"a":1}`, with(w1Token, "X-Worker-Id", "w2")...), "forbidden")
		h.must(200, "GET", "/v1/kv/tasks/T1/state", "", "Authorization", "bearer "+w1Token) // the scheme's case does not matter
		checkProblem(t, h.must(403, "PUT", "/v1/kv/tasks/T1/state", `{"value":1}`, with(w1Token, "X-Worker-Id", "w2")...), "forbidden")
		h.must(200, "PUT", "/v1/coordination/queue", `{"value":{"pending":[]}}`, with(w1Token)...)
		h.must(200, "PUT", "/v1/workers/w1/status", `{"value":"idle"}`, with(w1Token)...)
		h.must(200, "PUT", "/v1/workers/w1/heartbeat", "", with(w1Token)...)
		for _, forbidden := range []struct{ method, path, body string }{
			{"PUT", "/v1/workers/w2/status", `{"value":"idle"}`},
			{"PUT", "/v1/kv/workers/w2/status", `{"value":"idle"}`},
			{"PUT", "/v1/workers/w2/heartbeat", ""},
			{"PUT", "/v1/kv/agents/a1/state", `{"value":1}`},
			{"PUT", "/v1/kv/agents/a1/state?async=true", `{"value":1}`},
			{"DELETE", "/v1/kv/workers/w2/status", ""},
			{"PATCH", "/v1/kv/workers/w2/status", `{"a":1}`},
			{"POST", "/v1/cache/invalidate", `{"pattern":"**"}`},
		} {
			checkProblem(t, h.must(403, forbidden.method, forbidden.path, forbidden.body, with(w1Token)...), "forbidden")
		}
		h.must(404, "GET", "/v1/kv/agents/a1/state", "", with(w1Token)...) // nothing was written

		h.must(204, "DELETE", "/v1/kv/workers/w1/status", "", with(w1Token)...)

		// A batch with one write the token may not make applies none.
		batch := `{"ops":[{"op":"put","key":"tasks/T2/state","value":1},{"op":"put","key":"workers/w2/status","value":2}]}`
		checkProblem(t, h.must(403, "POST", "/v1/batch", batch, with(w1Token)...), "forbidden")
		h.must(404, "GET", "/v1/kv/tasks/T2/state", "", with(w1Token)...)

		// A reader reads, watches and sees stats; it writes nothing.
		h.must(200, "GET", "/v1/kv/tasks/T1/state", "", with(readerToken)...)
		h.must(200, "GET", "/v1/stats", "", with(readerToken)...)
		h.must(200, "POST", "/v1/batch", `{"ops":[{"op":"get","key":"tasks/T1/state"}]}`, with(readerToken)...)
		checkProblem(t, h.must(403, "POST", "/v1/batch", `{"ops":[{"op":"delete","key":"tasks/T1/state"}]}`, with(readerToken)...), "forbidden")
		checkProblem(t, h.must(403, "PUT", "/v1/kv/tasks/T1/state", `{"value":2}`, with(readerToken)...), "forbidden")
		checkProblem(t, h.must(403, "PATCH", "/v1/kv/tasks/T1/state", `{"a":2}`, with(readerToken)...), "forbidden")
		checkProblem(t, h.must(403, "POST", "/v1/locks/jobs/a", `{"ttl_ms":5000}`, with(readerToken)...), "forbidden")
		h.watch("/v1/watch?pattern=tasks/**", with(readerToken)...)

		// Locks: workers take and release them; only an admin forces one.
		g := h.must(200, "POST", "/v1/locks/jobs/a", `{"ttl_ms":5000}`, with(w1Token)...).json(t)
		if g["owner"] != "w1" {
			t.Errorf("a w1 token's lock has owner %v", g["owner"])
		}
		checkProblem(t, h.must(403, "DELETE", "/v1/locks/jobs/a?force=true", "", with(w2Token)...), "forbidden")
		checkProblem(t, h.must(403, "POST", "/v1/locks/jobs/b", `{"ttl_ms":5000,"owner":"w2"}`, with(w1Token)...), "forbidden")
		h.must(200, "POST", "/v1/locks/jobs/c", `{"ttl_ms":5000,"owner":"w1"}`, with(w1Token)...)
		h.must(200, "POST", "/v1/locks/jobs/d", `{"ttl_ms":5000,"owner":"anyone"}`, with(adminToken)...)
		h.must(204, "DELETE", "/v1/locks/jobs/a?force=true", "", with(adminToken)...)

		// Counters are data: a worker counts where it writes keys; a
		// reader reads them. A barrier's party is the token's worker.
		h.must(200, "POST", "/v1/counters/tasks/T1/done", "", with(w1Token)...)
		checkProblem(t, h.must(403, "POST", "/v1/counters/agents/a1/done", "", with(w1Token)...), "forbidden")
		checkProblem(t, h.must(403, "DELETE", "/v1/counters/tasks/T1/done", "", with(readerToken)...), "forbidden")
		if c := h.must(200, "GET", "/v1/counters/tasks/T1/done", "", with(readerToken)...).json(t); c["value"] != 1.0 {
			t.Errorf("reader's read of the counter = %v", c)
		}
		if st := h.must(200, "POST", "/v1/barriers/jobs/B1", `{"parties":2}`, with(w1Token)...).json(t); fmt.Sprint(st["arrived"]) != "[w1]" {
			t.Errorf("w1 token's arrival = %v, want w1 arrived", st)
		}
		checkProblem(t, h.must(403, "POST", "/v1/barriers/jobs/B1", `{"parties":2,"party":"w2"}`, with(w1Token)...), "forbidden")
		checkProblem(t, h.must(403, "POST", "/v1/barriers/jobs/B1", `{"parties":2}`, with(readerToken)...), "forbidden")
		checkProblem(t, h.must(403, "DELETE", "/v1/queues/jobs", "", with(w1Token)...), "forbidden")
		checkProblem(t, h.must(403, "DELETE", "/v1/barriers/jobs/B1", "", with(w1Token)...), "forbidden")
		h.must(200, "DELETE", "/v1/barriers/jobs/B1", "", with(adminToken)...)

		// An admin may write anywhere, as any writer, and drop caches.
		r = h.must(200, "PUT", "/v1/kv/agents/a1/state", `{"value":3}`, with(adminToken, "X-Worker-Id", "migrator")...)
		if e := r.json(t); e["writer"] != "migrator" {
			t.Errorf("an admin's write as migrator has writer %v", e["writer"])
		}
		h.must(200, "POST", "/v1/cache/invalidate", `{"pattern":"**"}`, with(adminToken)...)
	})
}

// Each token has its own request rate and its own count of watch streams:
// one token over its limit gets 429 rate_limited, the others do not notice.
func TestPerTokenLimits(t *testing.T) {
	h := newServerHarness(t, testserver.Options{Tokens: testTokens(t), RateLimit: 5, MaxWatchersPerToken: 1})
	allowed, limited := 0, 0
	start := time.Now()
	for range 30 {
		r := h.do("GET", "/v1/kv/tasks/T1/state", "", bearer(w1Token)...)
		switch r.status {
		case 404:
			allowed++
		case 429:
			limited++
			checkProblem(t, r, "rate_limited")
			if r.header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		default:
			t.Fatalf("GET = %d %s", r.status, r.body)
		}
	}
	// A burst of 10 (twice the rate), then 5 a second.
	if most := 10 + int(5*time.Since(start).Seconds()) + 1; allowed > most || limited == 0 {
		t.Errorf("%d of 30 requests in %v were served, %d limited; want at most %d served", allowed, time.Since(start), limited, most)
	}
	h.must(404, "GET", "/v1/kv/tasks/T1/state", "", bearer(w2Token)...)

}

// A token's limits hold across instances: two instances on one Redis
// share each token's rate by demand, and count each other's watch streams.
func TestLimitsAcrossInstances(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		opts := testserver.Options{Backend: &b, Tokens: testTokens(t), RateLimit: 20, MaxWatchersPerToken: 2,
			LimitShareInterval: 100 * time.Millisecond}
		a, bb := newServerHarness(t, opts), newServerHarness(t, opts)

		t.Run("rate", func(t *testing.T) {
			// Alternate between the instances as fast as they answer for
			// 3 s. The first second spends both instances' bursts; after
			// it the token gets its 20 requests a second in all, where
			// instances counting alone would serve 20 each.
			start := time.Now()
			served, steady := 0, 0
			for i := 0; time.Since(start) < 3*time.Second; i++ {
				h := []*harness{a, bb}[i%2]
				switch r := h.do("GET", "/v1/kv/tasks/T1/state", "", bearer(w1Token)...); r.status {
				case 404:
					served++
					if time.Since(start) >= time.Second {
						steady++
					}
				case 429:
				default:
					t.Fatalf("GET = %d %s", r.status, r.body)
				}
			}
			t.Logf("served %d in 3 s, %d in the last 2 s (the token's rate: 40 in 2 s)", served, steady)
			if steady > 60 || steady < 20 {
				t.Errorf("%d requests served in the last 2 s across two instances, want about 40 (20 to 60), not 80", steady)
			}
		})

		t.Run("watch streams", func(t *testing.T) {
			a.watch("/v1/watch?pattern=**", bearer(readerToken)...)
			onB := bb.watch("/v1/watch?pattern=**", bearer(readerToken)...)
			// Once shared, A counts B's stream: a third is one too many.
			deadline := time.Now().Add(5 * time.Second)
			for a.in(t).watchStatus(readerToken) != 429 {
				if time.Now().After(deadline) {
					t.Fatal("5 s after a stream opened on each instance, A still opens a third for the token (maximum 2)")
				}
				time.Sleep(50 * time.Millisecond)
			}
			onB.cancel()
			for a.in(t).watchStatus(readerToken) != 200 {
				if time.Now().After(deadline.Add(5 * time.Second)) {
					t.Fatal("B's stream closed, and A still refuses the token's second stream")
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	})
}

// A token holds at most MaxWatchersPerToken watch streams; one more gets
// 429 rate_limited until one of them closes, and other tokens are not
// counted against it.
func TestWatchersPerToken(t *testing.T) {
	h := newServerHarness(t, testserver.Options{Tokens: testTokens(t), MaxWatchersPerToken: 1})
	first := h.watch("/v1/watch?pattern=**", bearer(readerToken)...)
	if got := h.watchStatus(readerToken); got != 429 {
		t.Errorf("a second stream of one token = %d, want 429", got)
	}
	h.watch("/v1/watch?pattern=**", bearer(adminToken)...)
	first.cancel()
	deadline := time.Now().Add(5 * time.Second)
	for h.watchStatus(readerToken) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the token's stream closed 5 s ago, and it still may not open another")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A blocking read holds a watcher as a stream does, and counts as one
// against MaxWatchersPerToken; a read that does not wait does not.
func TestBlockingReadsCountAsWatchers(t *testing.T) {
	h := newServerHarness(t, testserver.Options{Tokens: testTokens(t), MaxWatchersPerToken: 1})
	waiting := make(chan response, 1)
	go func() {
		r, err := h.exchange("GET", "/v1/kv/tasks/T1/result?wait_ms=20000", "", bearer(readerToken)...)
		if err != nil {
			t.Errorf("blocking read: %v", err)
		}
		waiting <- r
	}()
	for deadline := time.Now().Add(5 * time.Second); h.srv.Hub.Stats().Watchers < 1; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the blocking read is not waiting 5 s later")
		}
	}
	if got := h.watchStatus(readerToken); got != 429 {
		t.Errorf("a stream beside the token's blocking read = %d, want 429", got)
	}
	if p := h.must(429, "GET", "/v1/kv/tasks/T2/result?wait_ms=20000", "", bearer(readerToken)...).json(t); p["code"] != "rate_limited" {
		t.Errorf("a second blocking read: code %v, want rate_limited", p["code"])
	}
	h.must(404, "GET", "/v1/kv/tasks/T2/result?wait_ms=0", "", bearer(readerToken)...) // does not wait
	h.must(200, "PUT", "/v1/kv/tasks/T1/result", `{"value":"done"}`, bearer(adminToken)...)
	select {
	case r := <-waiting:
		if r.status != 200 {
			t.Errorf("the blocking read = %d %s, want 200", r.status, r.body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the blocking read not answered 5 s after the write")
	}
	// Its count is released as its handler returns, just after its answer.
	for deadline := time.Now().Add(5 * time.Second); h.watchStatus(readerToken) != 200; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the blocking read was answered 5 s ago, and the token still may not open a stream")
		}
	}
}

// A watch stream ends as soon as its token is revoked (a reload without
// it) or expires, not at its next ping; the others go on.
func TestWatchEndsWhenItsTokenGoes(t *testing.T) {
	soon := time.Now().Add(300 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	path, write := tokenFile(t)
	write(readerToken + " board reader\n" + w1Token + " w1 worker\n" + w2Token + " w2 worker\n" + briefToken + " w3 reader expires=" + soon + "\n")
	tokens, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// Pings every minute: the streams must end long before any ping.
	h := newServerHarness(t, testserver.Options{Tokens: tokens, WatchPing: time.Minute})
	revoked := h.watch("/v1/watch?pattern=**", bearer(w1Token)...)
	expiring := h.watch("/v1/watch?pattern=**", bearer(briefToken)...)
	staying := h.watch("/v1/watch?pattern=**", bearer(readerToken)...)

	write(readerToken + " board reader\n" + w2Token + " w2 worker\n" + briefToken + " w3 reader expires=" + soon + "\n")
	if err := tokens.Reload(path); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*stream{"revoked": revoked, "expired": expiring} {
		ended := false
		for deadline := time.After(5 * time.Second); !ended; {
			select {
			case ev, ok := <-s.events:
				if !ok {
					ended = true
				} else if ev.event != "" {
					t.Errorf("%s token's stream: unexpected event %+v", name, ev)
				}
			case <-deadline:
				t.Fatalf("%s token's stream still open 5 s later", name)
			}
		}
	}
	// The valid token's stream still hears changes.
	h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":1}`, bearer(w2Token)...)
	if ev := staying.nextEvent(); ev.event != "put" {
		t.Errorf("the valid token's stream got %+v, want the put", ev)
	}
}

// A lock request waiting for a holder ends with 401 as soon as its token is
// revoked or expires: the lock never goes to a caller no longer let in.
func TestLockWaitEndsWhenItsTokenGoes(t *testing.T) {
	soon := time.Now().Add(700 * time.Millisecond).UTC().Format(time.RFC3339Nano)
	path, write := tokenFile(t)
	others := adminToken + " ops admin\n" + w2Token + " w2 worker\n" + briefToken + " w3 worker expires=" + soon + "\n"
	write(others + w1Token + " w1 worker\n")
	tokens, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	h := newServerHarness(t, testserver.Options{Tokens: tokens})
	const lockPath = "/v1/locks/coordination/deploy"
	held := h.mustGrant(lockPath, `{"ttl_ms":30000}`, bearer(w2Token)...)

	type outcome struct {
		res     response
		err     error
		elapsed time.Duration
	}
	wait := func(token string) <-chan outcome {
		done := make(chan outcome, 1)
		go func() {
			start := time.Now()
			res, err := h.exchange("POST", lockPath, `{"ttl_ms":30000,"wait_ms":20000}`, bearer(token)...)
			done <- outcome{res, err, time.Since(start)}
		}()
		return done
	}
	revoked, expiring, staying := wait(w1Token), wait(briefToken), wait(adminToken)
	waiters := func() float64 {
		return h.must(200, "GET", lockPath, "", bearer(adminToken)...).json(t)["waiters"].(float64)
	}
	for deadline := time.Now().Add(5 * time.Second); waiters() < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%v waiters 5 s after three requests, want 3", waiters())
		}
	}

	write(others) // w1's token revoked
	if err := tokens.Reload(path); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]<-chan outcome{"revoked": revoked, "expired": expiring} {
		select {
		case o := <-c:
			if o.err != nil {
				t.Fatalf("%s token's request: %v", name, o.err)
			}
			if o.res.status != 401 || o.res.json(t)["code"] != "unauthorized" {
				t.Errorf("%s token's waiting request = %d %s, want 401 unauthorized", name, o.res.status, o.res.body)
			}
			t.Logf("%s token's request ended after %v", name, o.elapsed.Round(time.Millisecond))
		case <-time.After(5 * time.Second):
			t.Fatalf("%s token's request still waiting 5 s later", name)
		}
	}
	// They left the line; the valid token's request still waits, and
	// gets the lock when its holder lets go.
	if n := waiters(); n != 1 {
		t.Errorf("%v waiters after two requests ended, want 1", n)
	}
	h.must(204, "DELETE", lockPath, "", append(bearer(w2Token), "X-Lock-Token", *held.Token)...)
	select {
	case o := <-staying:
		if o.err != nil || o.res.status != 200 {
			t.Errorf("the valid token's request = %d %s %v, want 200", o.res.status, o.res.body, o.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the valid token's request not granted 5 s after the release")
	}
}

// watchStatus opens a watch stream of every key with token, and returns
// its status once the stream has begun (or been refused); the stream is
// closed then.
func (h *harness) watchStatus(token string) int {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", h.url+"/v1/watch?pattern=**", nil)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := h.client.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode == 429 && res.Header.Get("Content-Type") != "application/problem+json" {
		h.t.Errorf("429 served as %q", res.Header.Get("Content-Type"))
	}
	return res.StatusCode
}

// briefToken is the token the tests give an expiry.
const briefToken = "brief-token-0123456789"

// tokenFile returns the path of a token file, and a function that writes
// it whole.
func tokenFile(t *testing.T) (path string, write func(text string)) {
	path = filepath.Join(t.TempDir(), "tokens")
	return path, func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A blocking read ends with 401 as soon as its token is revoked; another
// token's goes on waiting, and hears the write.
func TestBlockingReadEndsWhenItsTokenGoes(t *testing.T) {
	path, write := tokenFile(t)
	others := readerToken + " board reader\n" + w2Token + " w2 worker\n"
	write(others + w1Token + " w1 worker\n")
	tokens, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	h := newServerHarness(t, testserver.Options{Tokens: tokens})
	const readPath = "/v1/kv/tasks/T1/result?wait_ms=20000"
	read := func(token string) <-chan response {
		done := make(chan response, 1)
		go func() {
			res, err := h.exchange("GET", readPath, "", bearer(token)...)
			if err != nil {
				t.Errorf("GET with %s: %v", token, err)
			}
			done <- res
		}()
		return done
	}
	revoked, staying := read(w1Token), read(readerToken)
	for deadline := time.Now().Add(5 * time.Second); h.srv.Hub.Stats().Watchers < 2; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the two reads are not waiting 5 s later")
		}
	}
	write(others) // w1's token revoked
	if err := tokens.Reload(path); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-revoked:
		if r.status != 401 || r.json(t)["code"] != "unauthorized" {
			t.Errorf("the revoked token's blocking read = %d %s, want 401 unauthorized", r.status, r.body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked token's read still waiting 5 s later")
	}
	h.must(200, "PUT", "/v1/kv/tasks/T1/result", `{"value":"done"}`, bearer(w2Token)...)
	select {
	case r := <-staying:
		if r.status != 200 || !strings.Contains(string(r.body), `"done"`) {
			t.Errorf("the valid token's blocking read = %d %s, want 200 with the write", r.status, r.body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the valid token's read not answered 5 s after the write")
	}
}
