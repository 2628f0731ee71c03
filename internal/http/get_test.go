package http_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
)

// A cached read is served from the rendering kept with the entry
// (entryjson.go): it must be the very answer a read from Redis gives, and
// follow every change.
func TestCachedReadsAnswerAsRedisReads(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		big := `"` + strings.Repeat("x", 20<<10) + `"` // too large to keep rendered
		for _, tt := range []struct{ name, path, key, value, other string }{
			{"generic key", "/v1/kv/tasks/T9/state", "tasks/T9/state", `{"status":"running"}`, `{"status":"failed"}`},
			{"typed route", "/v1/tasks/T9/progress", "tasks/T9/progress", `{"progress":5,"status":"a"}`, `{"progress":7,"status":"b"}`},
			{"large value", "/v1/kv/big/k", "big/k", big, `"small"`},
		} {
			func() {
				put := h.must(200, "PUT", "/v1/kv/"+tt.key, `{"value":`+tt.value+`}`, "X-Worker-Id", "w1")
				miss := h.must(200, "GET", tt.path, "") // the write dropped the key
				hit := h.must(200, "GET", tt.path+"?consistent=false", "")
				fromRedis := h.must(200, "GET", tt.path+"?consistent=true", "")
				for _, r := range []response{miss, hit} {
					if !bytes.Equal(r.body, fromRedis.body) || r.header.Get("ETag") != fromRedis.header.Get("ETag") ||
						r.header.Get("Content-Type") != "application/json" {
						t.Errorf("%s: cached read:\n%.300s %q %q\nread from Redis:\n%.300s %q", tt.name,
							r.body, r.header.Get("ETag"), r.header.Get("Content-Type"), fromRedis.body, fromRedis.header.Get("ETag"))
					}
				}
				if put.header.Get("ETag") != hit.header.Get("ETag") {
					t.Errorf("%s: ETag of the write %q, of the read %q", tt.name, put.header.Get("ETag"), hit.header.Get("ETag"))
				}

				// A concurrent write by another worker: the cached answer
				// follows, with the conflict.
				h.must(200, "PUT", "/v1/kv/"+tt.key, `{"value":`+tt.other+`}`, "X-Worker-Id", "w2")
				after := h.must(200, "GET", tt.path, "")
				if bytes.Equal(after.body, hit.body) || after.header.Get("ETag") == hit.header.Get("ETag") {
					t.Errorf("%s: after a write the cache still answers %.300s", tt.name, after.body)
					return
				}
				if e := after.json(t); e["conflict"] != true || e["siblings"] != float64(2) {
					t.Errorf("%s: after a concurrent write: conflict %v, siblings %v", tt.name, e["conflict"], e["siblings"])
				}
				if again := h.must(200, "GET", tt.path+"?consistent=true", ""); !bytes.Equal(again.body, after.body) {
					t.Errorf("%s: cached %.300s, from Redis %.300s", tt.name, after.body, again.body)
				}
			}()
		}
	})
}

func TestRequestMetricsByRouteAndStatus(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	h.must(200, "PUT", "/v1/kv/m/k", `{"value":1}`)
	for range 3 {
		h.must(200, "GET", "/v1/kv/m/k", "")
	}
	h.must(404, "GET", "/v1/kv/m/missing", "")
	h.must(400, "GET", "/v1/kv/m/k?consistent=maybe", "")
	body := string(h.must(200, "GET", "/metrics", "").body)
	for _, want := range []string{
		`memsync_http_requests_total{code="200",method="GET",route="/v1/kv/*"} 3`,
		`memsync_http_requests_total{code="200",method="PUT",route="/v1/kv/*"} 1`,
		`memsync_http_requests_total{code="404",method="GET",route="/v1/kv/*"} 1`,
		`memsync_http_requests_total{code="400",method="GET",route="/v1/kv/*"} 1`,
		`memsync_http_request_duration_seconds_count{method="GET",route="/v1/kv/*"} 5`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// A read whose If-None-Match names the key's current ETag (or is "*") is
// answered 304 with the ETag and no body, from the cache or from Redis;
// once the key changes, the same request gets the new entry whole.
func TestConditionalRead(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		put := h.must(200, "PUT", "/v1/kv/tasks/T7/state", `{"value":{"status":"running"}}`, "X-Worker-Id", "w1")
		etag := put.header.Get("ETag")
		paths := []string{"/v1/kv/tasks/T7/state", "/v1/kv/tasks/T7/state?consistent=true",
			"/v1/kv/tasks/T7/state?siblings=true", "/v1/tasks/T7/state"}
		for _, path := range paths {
			for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
				r := h.must(304, "GET", path, "", "If-None-Match", inm)
				if len(r.body) != 0 || r.header.Get("ETag") != etag {
					t.Errorf("GET %s, If-None-Match %s: body %q, ETag %q; want none, %q", path, inm, r.body, r.header.Get("ETag"), etag)
				}
			}
			if r := h.must(200, "GET", path, "", "If-None-Match", `"other"`); r.json(t)["etag"] != etag {
				t.Errorf("GET %s, another tag: %s", path, r.body)
			}
		}
		changed := h.must(200, "PUT", "/v1/kv/tasks/T7/state", `{"value":{"status":"done"}}`, "X-Worker-Id", "w1")
		for _, path := range paths {
			r := h.must(200, "GET", path, "", "If-None-Match", etag)
			if r.header.Get("ETag") != changed.header.Get("ETag") || !strings.Contains(string(r.body), `"done"`) {
				t.Errorf("GET %s after a write, with the old tag: %q %s", path, r.header.Get("ETag"), r.body)
			}
		}
		h.must(404, "GET", "/v1/kv/tasks/none/state", "", "If-None-Match", "*")
	})
}
