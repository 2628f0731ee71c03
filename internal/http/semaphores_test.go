package http_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
)

// permit is the body of a granted permit.
type permit struct {
	Name       string `json:"name"`
	Owner      string `json:"owner"`
	Token      string `json:"token"`
	Limit      int    `json:"limit"`
	AcquiredAt int64  `json:"acquired_at"`
	ExpiresAt  int64  `json:"expires_at"`
}

func (h *harness) mustPermit(path, body string, headers ...string) permit {
	h.t.Helper()
	var p permit
	if err := json.Unmarshal(h.must(200, "POST", path, body, headers...).body, &p); err != nil {
		h.t.Fatal(err)
	}
	if len(p.Token) != 32 || p.ExpiresAt <= p.AcquiredAt {
		h.t.Fatalf("POST %s: permit %+v", path, p)
	}
	return p
}

func TestSemaphoreOverHTTP(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		const path = "/v1/semaphores/jobs/crawl"
		p1 := h.mustPermit(path, `{"limit":2,"ttl_ms":10000}`, "X-Worker-Id", "w1")
		p2 := h.mustPermit(path, `{"limit":2,"ttl_ms":20000,"owner":"w2"}`)
		if p1.Owner != "w1" || p2.Owner != "w2" || p1.Name != "jobs/crawl" || p1.Limit != 2 || p1.Token == p2.Token {
			t.Fatalf("permits %+v and %+v", p1, p2)
		}

		full := h.must(409, "POST", path, `{"limit":2,"ttl_ms":1000}`)
		prob := checkProblem(t, full, "semaphore_full")
		if prob["holders"] != 2.0 || prob["expires_at"] != float64(p1.ExpiresAt) {
			t.Errorf("semaphore_full = %s: want 2 holders and the first permit's expiry %d", full.body, p1.ExpiresAt)
		}
		if ra, err := strconv.Atoi(full.header.Get("Retry-After")); err != nil || ra < 1 || ra > 10 {
			t.Errorf("Retry-After = %q, want 1-10 s", full.header.Get("Retry-After"))
		}
		checkProblem(t, h.must(409, "POST", path, `{"limit":3,"ttl_ms":1000}`), "limit_mismatch")

		info := h.must(200, "GET", path, "")
		var got struct {
			Name    string           `json:"name"`
			Limit   int              `json:"limit"`
			Holders []map[string]any `json:"holders"`
			Waiters int              `json:"waiters"`
		}
		if err := json.Unmarshal(info.body, &got); err != nil {
			t.Fatal(err)
		}
		if got.Limit != 2 || len(got.Holders) != 2 || got.Holders[0]["owner"] != "w1" || got.Holders[1]["owner"] != "w2" {
			t.Fatalf("GET %s = %s", path, info.body)
		}
		for _, holder := range got.Holders {
			if _, has := holder["token"]; has {
				t.Fatalf("GET %s shows a token: %s", path, info.body)
			}
		}

		var refreshed permit
		r := h.must(200, "POST", path+"/refresh", `{"token":"`+p1.Token+`","ttl_ms":30000}`)
		if err := json.Unmarshal(r.body, &refreshed); err != nil {
			t.Fatal(err)
		}
		if refreshed.ExpiresAt <= p1.ExpiresAt || refreshed.AcquiredAt != p1.AcquiredAt || refreshed.Token != p1.Token {
			t.Fatalf("refreshed %+v from %+v", refreshed, p1)
		}

		h.mustPermit("/v1/semaphores/jobs/other", `{"limit":1,"ttl_ms":10000}`)
		list := h.must(200, "GET", "/v1/semaphores?prefix=jobs/c", "")
		var listed struct {
			Semaphores []struct {
				Name    string           `json:"name"`
				Holders []map[string]any `json:"holders"`
			} `json:"semaphores"`
		}
		if err := json.Unmarshal(list.body, &listed); err != nil {
			t.Fatal(err)
		}
		if len(listed.Semaphores) != 1 || listed.Semaphores[0].Name != "jobs/crawl" || len(listed.Semaphores[0].Holders) != 2 {
			t.Fatalf("GET /v1/semaphores?prefix=jobs/c = %s", list.body)
		}
		if all := h.must(200, "GET", "/v1/semaphores", ""); !strings.Contains(string(all.body), `"jobs/other"`) || strings.Contains(string(all.body), `"token"`) {
			t.Fatalf("GET /v1/semaphores = %s: want jobs/other too, and no token", all.body)
		}
		h.must(204, "DELETE", path, "", "X-Lock-Token", p1.Token)
		checkProblem(t, h.must(409, "DELETE", path, "", "X-Lock-Token", p1.Token), "lock_not_held")
		checkProblem(t, h.must(409, "POST", path+"/refresh", `{"token":"`+p1.Token+`","ttl_ms":1000}`), "lock_not_held")
		h.mustPermit(path, `{"limit":2,"ttl_ms":1000}`)

		h.must(204, "DELETE", path+"?force=true", "")
		checkProblem(t, h.must(409, "DELETE", path, "", "X-Lock-Token", p2.Token), "lock_not_held")
		checkProblem(t, h.must(404, "GET", path, ""), "not_found")
		checkProblem(t, h.must(409, "DELETE", path+"?force=true", ""), "lock_not_held")
	})
}

func TestSemaphoreBadInput(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	for _, tt := range []struct {
		method, path, body, code string
		headers                  []string
	}{
		{"POST", "/v1/semaphores/jobs/x", `{"ttl_ms":1000}`, "invalid_argument", nil},
		{"POST", "/v1/semaphores/jobs/x", `{"limit":1}`, "invalid_argument", nil},
		{"POST", "/v1/semaphores/jobs/x", `{"limit":0,"ttl_ms":1000}`, "invalid_argument", nil},
		{"POST", "/v1/semaphores/jobs/x", `{"limit":1001,"ttl_ms":1000}`, "invalid_argument", nil},
		{"POST", "/v1/semaphores/jobs/x", `{"limit":1,"ttl_ms":1000,"wait_ms":-1}`, "invalid_argument", nil},
		{"POST", "/v1/semaphores/jobs/x", `{"limit":1,"ttl_ms":1000,"color":"red"}`, "invalid_json", nil},
		{"POST", "/v1/semaphores/jobs/x", `{"limit":1,"ttl_ms":1000}`, "invalid_argument", []string{"Idempotency-Key", "a b"}},
		{"POST", "/v1/semaphores/refresh", `{"limit":1,"ttl_ms":1000}`, "invalid_key", nil},
		{"POST", "/v1/semaphores/jobs//x", `{"limit":1,"ttl_ms":1000}`, "invalid_key", nil},
		{"POST", "/v1/semaphores/jobs/x/refresh", `{"ttl_ms":1000}`, "invalid_argument", nil},
		{"DELETE", "/v1/semaphores/jobs/x", ``, "invalid_argument", nil},
		{"DELETE", "/v1/semaphores/jobs/x?force=maybe", ``, "invalid_argument", nil},
		{"GET", "/v1/semaphores/jobs/x", ``, "not_found", nil},
	} {
		r := h.do(tt.method, tt.path, tt.body, tt.headers...)
		if r.status < 400 || r.status >= 500 {
			t.Errorf("%s %s %s = %d, want a 4xx", tt.method, tt.path, tt.body, r.status)
			continue
		}
		checkProblem(t, r, tt.code)
	}
}

// TestSemaphoreWaitOverHTTP: a request waiting for a full semaphore gets the
// permit given back, and a request with the same Idempotency-Key gets it again.
func TestSemaphoreWaitOverHTTP(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		const path = "/v1/semaphores/jobs/x"
		held := h.mustPermit(path, `{"limit":1,"ttl_ms":30000}`)
		type result struct {
			r   response
			err error
		}
		got := make(chan result, 1)
		go func() {
			r, err := h.exchange("POST", path, `{"limit":1,"ttl_ms":30000,"wait_ms":8000,"owner":"waiter"}`, "Idempotency-Key", "job-1")
			got <- result{r, err}
		}()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			var info struct{ Waiters int }
			if err := json.Unmarshal(h.must(200, "GET", path, "").body, &info); err != nil {
				t.Fatal(err)
			}
			if info.Waiters == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the waiter never stood in line")
			}
		}
		h.must(204, "DELETE", path, "", "X-Lock-Token", held.Token)
		res := <-got
		if res.err != nil || res.r.status != 200 {
			t.Fatalf("waiter: %v %d %s", res.err, res.r.status, res.r.body)
		}
		var p permit
		if err := json.Unmarshal(res.r.body, &p); err != nil || p.Owner != "waiter" {
			t.Fatalf("waiter's permit %s (%v)", res.r.body, err)
		}
		again := h.must(200, "POST", path, `{"limit":1,"ttl_ms":30000,"wait_ms":8000,"owner":"waiter"}`, "Idempotency-Key", "job-1")
		var replayed permit
		if err := json.Unmarshal(again.body, &replayed); err != nil || replayed.Token != p.Token || again.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay: %s %v (%v), want the waiter's permit", again.body, again.header, err)
		}
	})
}
