package http_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
)

func TestCountersOverHTTP(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		const c = "/v1/counters/jobs/J1/done"
		checkProblem(t, h.must(404, "GET", c, ""), "not_found")
		// The test server has no default TTL: the counter never expires
		// until a ttl is given.
		if got := h.must(200, "POST", c, "").json(t); got["counter"] != "jobs/J1/done" || got["value"] != 1.0 || got["expires_at"] != nil {
			t.Fatalf("first increment = %v, want 1, no expiry", got)
		}
		if got := h.must(200, "POST", c, `{"by":5,"ttl":60}`).json(t); got["value"] != 6.0 ||
			got["expires_at"].(float64) < float64(time.Now().Add(50*time.Second).UnixMilli()) {
			t.Fatalf("by 5 for 60 s = %v", got)
		}
		first := h.must(200, "POST", c, `{"by":-2}`, "Idempotency-Key", "undo-1")
		h.must(200, "POST", c, `{"by":10}`)
		again := h.must(200, "POST", c, `{"by":-2}`, "Idempotency-Key", "undo-1")
		if first.json(t)["value"] != 4.0 || again.json(t)["value"] != 4.0 || again.header.Get("Idempotent-Replayed") != "true" ||
			first.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("keyed increment %s, sent again %s %v", first.body, again.body, again.header)
		}
		checkProblem(t, h.must(400, "POST", c, `{"by":-3}`, "Idempotency-Key", "undo-1"), "invalid_argument")
		if got := h.must(200, "GET", c, "").json(t); got["value"] != 14.0 {
			t.Fatalf("GET = %v, want 14 (1+5-2+10)", got)
		}
		if got := h.must(200, "PUT", c, `{"value":9007199254740990,"ttl":0}`).json(t); got["value"] != 9007199254740990.0 || got["expires_at"] != nil {
			t.Fatalf("PUT = %v", got)
		}
		checkProblem(t, h.must(409, "POST", c, `{"by":2}`), "counter_overflow")
		if got := h.must(200, "POST", c, `{"by":1}`); strings.TrimSpace(string(got.body)) != `{"counter":"jobs/J1/done","value":9007199254740991}` {
			t.Fatalf("increment to the bound = %s", got.body)
		}
		h.must(200, "POST", "/v1/counters/jobs/J2/done", `{"by":2}`)
		var list struct {
			Counters []map[string]any `json:"counters"`
		}
		if err := json.Unmarshal(h.must(200, "GET", "/v1/counters?prefix=jobs/", "").body, &list); err != nil || len(list.Counters) != 2 ||
			list.Counters[0]["counter"] != "jobs/J1/done" || list.Counters[1]["value"] != 2.0 {
			t.Fatalf("list = %+v, %v", list, err)
		}
		h.must(204, "DELETE", c, "")
		checkProblem(t, h.must(404, "DELETE", c, ""), "not_found")
	})
}

func TestCounterBadInput(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	for _, tt := range []struct {
		method, path, body, code string
		headers                  []string
	}{
		{"POST", "/v1/counters/a//b", ``, "invalid_key", nil},
		{"POST", "/v1/counters/done", `{"by":1.5}`, "invalid_json", nil},
		{"POST", "/v1/counters/done", `{"by":9007199254740992}`, "invalid_argument", nil},
		{"POST", "/v1/counters/done", `{"by":1,"ttl":-1}`, "invalid_argument", nil},
		{"POST", "/v1/counters/done", `{"step":1}`, "invalid_json", nil},
		{"POST", "/v1/counters/done", `{"by":1}`, "invalid_argument", []string{"Idempotency-Key", "a b"}},
		{"PUT", "/v1/counters/done", `{}`, "invalid_argument", nil},
		{"PUT", "/v1/counters/done", `{"value":"1"}`, "invalid_json", nil},
		{"PUT", "/v1/counters/done", `{"value":-9007199254740992}`, "invalid_argument", nil},
		{"GET", "/v1/counters/done?ns=a/b", ``, "invalid_key", nil},
	} {
		r := h.do(tt.method, tt.path, tt.body, tt.headers...)
		if r.status < 400 || r.status >= 500 {
			t.Errorf("%s %s %s = %d, want a 4xx", tt.method, tt.path, tt.body, r.status)
			continue
		}
		checkProblem(t, r, tt.code)
	}
	checkProblem(t, h.must(404, "GET", "/v1/counters/done", ""), "not_found")
}
