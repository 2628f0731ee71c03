package http_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
)

// grant is the body of a lock grant (and, without token, of a holder).
type grant struct {
	Name       string  `json:"name"`
	Owner      string  `json:"owner"`
	Token      *string `json:"token"`
	Fence      int64   `json:"fence"`
	AcquiredAt int64   `json:"acquired_at"`
	ExpiresAt  int64   `json:"expires_at"`
}

func decodeGrant(t *testing.T, r response) grant {
	t.Helper()
	var g grant
	if err := json.Unmarshal(r.body, &g); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return g
}

// mustGrant acquires (or refreshes) and checks the grant's shape.
func (h *harness) mustGrant(path, body string, headers ...string) grant {
	h.t.Helper()
	g := decodeGrant(h.t, h.must(200, "POST", path, body, headers...))
	if g.Token == nil || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(*g.Token) {
		h.t.Fatalf("POST %s: token %v, want 32 hex digits", path, g.Token)
	}
	if g.Fence <= 0 || g.AcquiredAt <= 0 || g.ExpiresAt <= g.AcquiredAt {
		h.t.Fatalf("POST %s: grant %+v", path, g)
	}
	return g
}

// holder reads a lock's holder and checks that the token is not shown.
func (h *harness) holder(path string) grant {
	h.t.Helper()
	r := h.must(200, "GET", path, "")
	if _, has := r.json(h.t)["token"]; has {
		h.t.Fatalf("GET %s shows the token: %s", path, r.body)
	}
	return decodeGrant(h.t, r)
}

// exchange is do for goroutines other than the test's: it reports a
// transport failure as an error instead of stopping the test.
func (h *harness) exchange(method, path, body string, headers ...string) (response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		return response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := h.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: b}, err
}

// checkProblem checks the code of an error response.
func checkProblem(t *testing.T, r response, code string) map[string]any {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	p := r.json(t)
	if p["code"] != code {
		t.Errorf("code = %v, want %s (%s)", p["code"], code, r.body)
	}
	return p
}

// The design document's lock test, over HTTP: acquire, contend, release,
// acquire again with a larger fence; through /v1/locks and the task route.
func TestLockDesignDocument(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		for _, tt := range []struct{ path, name string }{
			{"/v1/locks/tasks/T1", "tasks/T1"},
			{"/v1/tasks/T2/lock", "tasks/T2"},
		} {
			t.Run(tt.path, func(t *testing.T) {
				g1 := h.mustGrant(tt.path, `{"ttl_ms":30000}`, "X-Worker-Id", "w1")
				if g1.Name != tt.name || g1.Owner != "w1" {
					t.Errorf("grant %+v, want name %s, owner w1 (from X-Worker-Id)", g1, tt.name)
				}
				// Both routes name the same lock.
				if got := h.holder("/v1/locks/" + tt.name); got.Fence != g1.Fence || got.Owner != "w1" {
					t.Errorf("GET /v1/locks/%s = %+v, want the grant %+v", tt.name, got, g1)
				}

				r := h.must(409, "POST", tt.path, `{"ttl_ms":30000,"owner":"w2"}`)
				p := checkProblem(t, r, "lock_held")
				if p["holder"] != "w1" || p["expires_at"] != float64(g1.ExpiresAt) {
					t.Errorf("lock_held problem %s, want holder w1, expires_at %d", r.body, g1.ExpiresAt)
				}
				if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 || s > 30 {
					t.Errorf("Retry-After = %q, want 1..30 seconds", r.header.Get("Retry-After"))
				}

				h.must(204, "DELETE", tt.path, "", "X-Lock-Token", *g1.Token)
				h.must(404, "GET", tt.path, "")
				g2 := h.mustGrant(tt.path, `{"ttl_ms":30000,"owner":"w2"}`)
				if g2.Fence <= g1.Fence || g2.Owner != "w2" || *g2.Token == *g1.Token {
					t.Errorf("second grant %+v after %+v: want a larger fence, owner w2, a new token", g2, g1)
				}
				h.must(204, "DELETE", tt.path, "", "X-Lock-Token", *g2.Token)
			})
		}

		t.Run("an anonymous holder is still reported", func(t *testing.T) {
			g := h.mustGrant("/v1/locks/anon", `{"ttl_ms":30000}`)
			p := checkProblem(t, h.must(409, "POST", "/v1/locks/anon", `{"ttl_ms":30000}`), "lock_held")
			if holder, ok := p["holder"]; !ok || holder != "" || p["expires_at"] != float64(g.ExpiresAt) {
				t.Errorf("problem %v, want holder \"\" and expires_at %d", p, g.ExpiresAt)
			}
		})
	})
}

func TestLockTokens(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		const wrong = "00000000000000000000000000000000"

		t.Run("a wrong token changes nothing", func(t *testing.T) {
			for _, path := range []string{"/v1/locks/tok/a", "/v1/tasks/tok-a/lock"} {
				g := h.mustGrant(path, `{"ttl_ms":30000,"owner":"w1"}`)
				checkProblem(t, h.must(409, "DELETE", path, "", "X-Lock-Token", wrong), "lock_not_held")
				checkProblem(t, h.must(409, "POST", path+"/refresh", `{"token":"`+wrong+`","ttl_ms":60000}`), "lock_not_held")
				got := h.holder(path)
				if got.Owner != "w1" || got.Fence != g.Fence || got.ExpiresAt != g.ExpiresAt || got.AcquiredAt != g.AcquiredAt {
					t.Errorf("%s after wrong tokens: %+v, want unchanged %+v", path, got, g)
				}
				h.must(204, "DELETE", path, "", "X-Lock-Token", *g.Token)
			}
		})

		t.Run("refresh extends the lease", func(t *testing.T) {
			for _, path := range []string{"/v1/locks/tok/b", "/v1/tasks/tok-b/lock"} {
				g := h.mustGrant(path, `{"ttl_ms":1000,"owner":"w1"}`)
				r := h.mustGrant(path+"/refresh", `{"token":"`+*g.Token+`","ttl_ms":60000}`)
				if r.ExpiresAt < g.ExpiresAt+50000 || r.Fence != g.Fence || r.AcquiredAt != g.AcquiredAt ||
					*r.Token != *g.Token || r.Owner != "w1" {
					t.Errorf("%s refreshed: %+v, want expires_at about 59 s later than %+v, the rest the same", path, r, g)
				}
				if got := h.holder(path); got.ExpiresAt != r.ExpiresAt {
					t.Errorf("GET %s: expires_at %d, want the refreshed %d", path, got.ExpiresAt, r.ExpiresAt)
				}
				h.must(204, "DELETE", path, "", "X-Lock-Token", *g.Token)
			}
		})

		t.Run("after expiry the token holds nothing", func(t *testing.T) {
			g := h.mustGrant("/v1/locks/tok/c", `{"ttl_ms":150}`)
			deadline := time.Now().Add(2 * time.Second)
			for h.do("GET", "/v1/locks/tok/c", "").status != 404 {
				if time.Now().After(deadline) {
					t.Fatal("a lock with ttl_ms 150 is still held after 2 s")
				}
				time.Sleep(20 * time.Millisecond)
			}
			checkProblem(t, h.must(409, "POST", "/v1/locks/tok/c/refresh", `{"token":"`+*g.Token+`","ttl_ms":1000}`), "lock_not_held")
			checkProblem(t, h.must(409, "DELETE", "/v1/locks/tok/c", "", "X-Lock-Token", *g.Token), "lock_not_held")
			h.must(404, "GET", "/v1/locks/tok/c", "")
			if g2 := h.mustGrant("/v1/locks/tok/c", `{"ttl_ms":1000}`); g2.Fence <= g.Fence {
				t.Errorf("fence after expiry %d, want more than %d", g2.Fence, g.Fence)
			}
		})

		t.Run("force release", func(t *testing.T) {
			for _, path := range []string{"/v1/locks/tok/d", "/v1/tasks/tok-d/lock"} {
				g := h.mustGrant(path, `{"ttl_ms":30000,"owner":"w1"}`)
				h.must(204, "DELETE", path+"?force=true", "")
				h.must(404, "GET", path, "")
				checkProblem(t, h.must(409, "DELETE", path, "", "X-Lock-Token", *g.Token), "lock_not_held")
				checkProblem(t, h.must(409, "POST", path+"/refresh", `{"token":"`+*g.Token+`","ttl_ms":1000}`), "lock_not_held")
				checkProblem(t, h.must(409, "DELETE", path+"?force=true", ""), "lock_not_held")
				h.mustGrant(path, `{"ttl_ms":1000,"owner":"w2"}`)
			}
		})
	})
}

func TestLockList(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		a := h.mustGrant("/v1/locks/jobs/a", `{"ttl_ms":30000,"owner":"wa"}`)
		released := h.mustGrant("/v1/locks/jobs/b", `{"ttl_ms":30000}`)
		h.mustGrant("/v1/locks/jobs/short", `{"ttl_ms":100}`)
		h.mustGrant("/v1/tasks/T1/lock", `{"ttl_ms":30000}`)
		h.mustGrant("/v1/locks/jobs/a?ns=other", `{"ttl_ms":30000}`)
		h.must(204, "DELETE", "/v1/locks/jobs/b", "", "X-Lock-Token", *released.Token)
		time.Sleep(200 * time.Millisecond) // jobs/short expires

		names := func(path string) []string {
			t.Helper()
			var body struct {
				Locks []map[string]any `json:"locks"`
			}
			if err := json.Unmarshal(h.must(200, "GET", path, "").body, &body); err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, l := range body.Locks {
				if _, has := l["token"]; has {
					t.Errorf("GET %s shows a token: %v", path, l)
				}
				out = append(out, l["name"].(string))
			}
			return out
		}
		for _, tt := range []struct{ path, want string }{
			{"/v1/locks?prefix=jobs/", "[jobs/a]"},
			{"/v1/locks?prefix=tasks/", "[tasks/T1]"},
			{"/v1/locks", "[jobs/a tasks/T1]"},
			{"/v1/locks?prefix=nothing/", "[]"},
			{"/v1/locks?ns=other", "[jobs/a]"},
		} {
			if got := fmt.Sprint(names(tt.path)); got != tt.want {
				t.Errorf("GET %s = %s, want %s", tt.path, got, tt.want)
			}
		}
		var body struct {
			Locks []grant `json:"locks"`
		}
		_ = json.Unmarshal(h.must(200, "GET", "/v1/locks?prefix=jobs/a", "").body, &body)
		if len(body.Locks) != 1 || body.Locks[0].Owner != "wa" || body.Locks[0].Fence != a.Fence || body.Locks[0].ExpiresAt != a.ExpiresAt {
			t.Errorf("listed %+v, want the holder of %+v", body.Locks, a)
		}
	})
}

func TestLockBadInput(t *testing.T) {
	b := redistest.Mini(t)
	h := newHarness(t, b)
	tests := []struct {
		name, method, path, body string
		headers                  []string
		code                     string
	}{
		{"missing ttl_ms", "POST", "/v1/locks/bad", `{"wait_ms":0}`, nil, "invalid_argument"},
		{"ttl_ms 0", "POST", "/v1/locks/bad", `{"ttl_ms":0}`, nil, "invalid_argument"},
		{"negative ttl_ms", "POST", "/v1/locks/bad", `{"ttl_ms":-5}`, nil, "invalid_argument"},
		{"ttl_ms above the maximum", "POST", "/v1/locks/bad", `{"ttl_ms":300001}`, nil, "invalid_argument"},
		{"ttl_ms far above the maximum", "POST", "/v1/locks/bad", `{"ttl_ms":9000000000000000000}`, nil, "invalid_argument"},
		{"fractional ttl_ms", "POST", "/v1/locks/bad", `{"ttl_ms":1.5}`, nil, "invalid_json"},
		{"negative wait_ms", "POST", "/v1/locks/bad", `{"ttl_ms":1000,"wait_ms":-1}`, nil, "invalid_argument"},
		{"wait_ms above the maximum", "POST", "/v1/locks/bad", `{"ttl_ms":1000,"wait_ms":60001}`, nil, "invalid_argument"},
		{"owner too long", "POST", "/v1/locks/bad", `{"ttl_ms":1000,"owner":"` + strings.Repeat("o", 257) + `"}`, nil, "invalid_argument"},
		{"unknown field", "POST", "/v1/locks/bad", `{"ttl_ms":1000,"ttl":1}`, nil, "invalid_json"},
		{"a field twice", "POST", "/v1/locks/bad", `{"ttl_ms":1000,"ttl_ms":60000}`, nil, "invalid_json"},
		{"no body", "POST", "/v1/locks/bad", ``, nil, "invalid_json"},
		{"bad character in the name", "POST", "/v1/locks/a%20b", `{"ttl_ms":1000}`, nil, "invalid_key"},
		{"empty segment in the name", "POST", "/v1/locks/a//b", `{"ttl_ms":1000}`, nil, "invalid_key"},
		{"dot-dot in the name", "GET", "/v1/locks/a/../b", ``, nil, "invalid_key"},
		{"nine segments", "POST", "/v1/locks/1/2/3/4/5/6/7/8/9", `{"ttl_ms":1000}`, nil, "invalid_key"},
		{"bad task id", "POST", "/v1/tasks/a%20b/lock", `{"ttl_ms":1000}`, nil, "invalid_key"},
		{"bad namespace", "GET", "/v1/locks?ns=a%2Fb", ``, nil, "invalid_key"},
		{"refresh without token", "POST", "/v1/locks/bad/refresh", `{"ttl_ms":1000}`, nil, "invalid_argument"},
		{"refresh without ttl_ms", "POST", "/v1/tasks/T1/lock/refresh", `{"token":"x"}`, nil, "invalid_argument"},
		{"refresh ttl_ms above the maximum", "POST", "/v1/locks/bad/refresh", `{"token":"x","ttl_ms":300001}`, nil, "invalid_argument"},
		{"release without token", "DELETE", "/v1/locks/bad", ``, nil, "invalid_argument"},
		{"task release without token", "DELETE", "/v1/tasks/T1/lock", ``, nil, "invalid_argument"},
		{"bad force", "DELETE", "/v1/locks/bad?force=yes", ``, nil, "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do(tt.method, tt.path, tt.body, tt.headers...)
			if r.status != 400 {
				t.Fatalf("status = %d (%s), want 400", r.status, r.body)
			}
			checkProblem(t, r, tt.code)
		})
	}
	h.must(404, "GET", "/v1/locks/bad", "")
	if got := h.must(200, "GET", "/v1/locks", "").json(t)["locks"]; len(got.([]any)) != 0 {
		t.Errorf("bad requests left locks: %v", got)
	}
}

// A waiter is woken by the release, not by polling: it gets the lock well
// within a second of it.
func TestLockWaitOverHTTP(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		g1 := h.mustGrant("/v1/locks/wait/x", `{"ttl_ms":30000,"owner":"w1"}`)

		type result struct {
			r   response
			err error
			at  time.Time
		}
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			r, err := h.exchange("POST", "/v1/locks/wait/x", `{"ttl_ms":30000,"wait_ms":3000,"owner":"w2"}`)
			done <- result{r, err, time.Now()}
		}()
		time.Sleep(300 * time.Millisecond) // the waiter is queued
		select {
		case res := <-done:
			t.Fatalf("the waiter returned while the lock was held: %d %s %v", res.r.status, res.r.body, res.err)
		default:
		}
		released := time.Now()
		h.must(204, "DELETE", "/v1/locks/wait/x", "", "X-Lock-Token", *g1.Token)
		res := <-done
		if res.err != nil || res.r.status != 200 {
			t.Fatalf("waiter: %v %d %s, want 200", res.err, res.r.status, res.r.body)
		}
		latency := res.at.Sub(released)
		t.Logf("granted %v after the release (%v after asking)", latency.Round(time.Millisecond), res.at.Sub(start).Round(time.Millisecond))
		if latency >= time.Second {
			t.Errorf("the waiter got the lock %v after the release, want < 1 s", latency)
		}
		g2 := decodeGrant(t, res.r)
		if g2.Owner != "w2" || g2.Fence <= g1.Fence {
			t.Errorf("waiter's grant %+v, want owner w2 and a fence above %d", g2, g1.Fence)
		}

		// Nobody releases: the waiter gives up after wait_ms with 409.
		asked := time.Now()
		r := h.must(409, "POST", "/v1/locks/wait/x", `{"ttl_ms":1000,"wait_ms":300,"owner":"w3"}`)
		if waited := time.Since(asked); waited < 300*time.Millisecond || waited > 2*time.Second {
			t.Errorf("a wait of 300 ms answered after %v", waited)
		}
		if p := checkProblem(t, r, "lock_held"); p["holder"] != "w2" {
			t.Errorf("holder %v, want w2", p["holder"])
		}
	})
}

// 1,000 concurrent acquires of one lock over HTTP: exactly one wins.
func TestLockRaceOverHTTP(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		const n = 1000
		const validated = 10 // a sample goes through the spec validator
		plain := &http.Client{Transport: &http.Transport{MaxIdleConns: n, MaxIdleConnsPerHost: n}}
		t.Cleanup(plain.CloseIdleConnections)

		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			mu      sync.Mutex
			counts  = map[int]int{}
			failure error
		)
		for i := range n {
			wg.Go(func() {
				<-start
				var status int
				var err error
				body := fmt.Sprintf(`{"ttl_ms":30000,"owner":"r%d"}`, i)
				if i < validated {
					var r response
					r, err = h.exchange("POST", "/v1/locks/race", body)
					status = r.status
				} else {
					var res *http.Response
					res, err = plain.Post(h.url+"/v1/locks/race", "application/json", strings.NewReader(body))
					if err == nil {
						_, _ = io.Copy(io.Discard, res.Body)
						res.Body.Close()
						status = res.StatusCode
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failure = err
				}
				counts[status]++
			})
		}
		began := time.Now()
		close(start)
		wg.Wait()
		t.Logf("%d acquires in %v: %v", n, time.Since(began).Round(time.Millisecond), counts)
		if failure != nil {
			t.Fatal(failure)
		}
		if counts[200] != 1 || counts[409] != n-1 {
			t.Errorf("statuses %v, want exactly one 200 and %d 409", counts, n-1)
		}
		if got := h.holder("/v1/locks/race"); !strings.HasPrefix(got.Owner, "r") {
			t.Errorf("holder %+v", got)
		}
	})
}
