package http_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/api"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/spectest"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/testserver"
)

// harness is a memsync API on one backend, reached through a client that
// validates every request and response against api/openapi.yaml.
type harness struct {
	t       *testing.T
	url     string
	client  *http.Client
	backend redistest.Backend
	srv     *testserver.Server
}

func newHarness(t *testing.T, b redistest.Backend) *harness {
	t.Helper()
	srv := testserver.StartWith(t, testserver.Options{
		Backend: &b,
		Rules: []store.Rule{
			{Pattern: "lists/**", Strategy: store.Union},
			{Pattern: "docs/**", Strategy: store.Merge},
			{Pattern: "scores/*", Strategy: store.Max, Field: "score"},
			{Pattern: "manual/**", Strategy: store.Siblings},
		},
		MaxTTL: 24 * time.Hour,
	})
	v := spectest.New(t, api.Spec)
	t.Cleanup(func() {
		if v.Count() == 0 {
			t.Error("no response was validated against the spec")
		}
	})
	return &harness{t: t, url: srv.URL, client: v.Client(), backend: b, srv: srv}
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into a generic map.
func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// do sends a request; headers come in name, value pairs.
func (h *harness) do(method, path, body string, headers ...string) response {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// must sends a request and fails the test unless the status is want.
func (h *harness) must(want int, method, path, body string, headers ...string) response {
	h.t.Helper()
	r := h.do(method, path, body, headers...)
	if r.status != want {
		h.t.Fatalf("%s %s = %d %s, want %d", method, path, r.status, r.body, want)
	}
	return r
}

func TestDesignDocumentScenarios(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		tests := []struct {
			name      string
			key       string
			writes    [][2]string // writer, value: written concurrently (no context)
			wantValue string
		}{
			{"lww returns the newest", "tasks/T1/state",
				[][2]string{{"w1", `{"status":"queued"}`}, {"w2", `{"status":"running"}`}}, `{"status":"running"}`},
			{"union of concurrent arrays", "lists/tags",
				[][2]string{{"w1", `["a","b"]`}, {"w2", `["b","c"]`}}, `["a","b","c"]`},
			{"deep merge of concurrent objects", "docs/config",
				[][2]string{{"w1", `{"a":{"x":1,"y":1},"n":1}`}, {"w2", `{"a":{"y":2,"z":2},"n":2}`}}, `{"a":{"x":1,"y":2,"z":2},"n":2}`},
			{"max keeps the largest", "tasks/T1/progress",
				[][2]string{{"w1", `{"progress":70,"status":"late"}`}, {"w2", `{"progress":40,"status":"early"}`}}, `{"progress":70,"status":"late"}`},
			{"max by a rule's field", "scores/s1",
				[][2]string{{"w1", `{"score":3}`}, {"w2", `{"score":9}`}, {"w3", `{"score":5}`}}, `{"score":9}`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				for _, w := range tt.writes {
					h.must(200, "PUT", "/v1/kv/"+tt.key, `{"value":`+w[1]+`}`, "X-Worker-Id", w[0])
					time.Sleep(2 * time.Millisecond) // later writes get later timestamps
				}
				e := h.must(200, "GET", "/v1/kv/"+tt.key, "").json(t)
				got, _ := json.Marshal(e["value"])
				if string(got) != tt.wantValue {
					t.Errorf("value = %s, want %s", got, tt.wantValue)
				}
				if e["conflict"] != true || e["siblings"] != float64(len(tt.writes)) {
					t.Errorf("conflict = %v, siblings = %v; want true, %d", e["conflict"], e["siblings"], len(tt.writes))
				}
			})
		}

		t.Run("siblings mode hands both to the client, a write with the version collapses them", func(t *testing.T) {
			h.must(200, "PUT", "/v1/kv/manual/k", `{"value":"left"}`, "X-Worker-Id", "w1")
			h.must(200, "PUT", "/v1/kv/manual/k", `{"value":"right"}`, "X-Worker-Id", "w2")
			e := h.must(200, "GET", "/v1/kv/manual/k", "").json(t)
			if _, has := e["value"]; has {
				t.Errorf("unresolved siblings came with a value: %v", e["value"])
			}
			list, _ := e["sibling_list"].([]any)
			if len(list) != 2 {
				t.Fatalf("sibling_list = %v, want 2 siblings", e["sibling_list"])
			}
			version, _ := json.Marshal(e["version"])
			h.must(200, "PUT", "/v1/kv/manual/k", `{"value":"resolved","context":`+string(version)+`}`, "X-Worker-Id", "w3")
			e = h.must(200, "GET", "/v1/kv/manual/k", "").json(t)
			if e["value"] != "resolved" || e["siblings"] != float64(1) || e["conflict"] != false {
				t.Errorf("after resolving: value %v, siblings %v, conflict %v", e["value"], e["siblings"], e["conflict"])
			}
		})

		t.Run("resolve and siblings override per read", func(t *testing.T) {
			e := h.must(200, "GET", "/v1/kv/tasks/T1/progress?resolve=lww&siblings=true", "").json(t)
			if got := e["value"].(map[string]any)["progress"]; got != float64(40) {
				t.Errorf("resolve=lww progress = %v, want the newest, 40", got)
			}
			list, _ := e["sibling_list"].([]any)
			if len(list) != 2 || list[0].(map[string]any)["discarded"] != true {
				t.Errorf("sibling_list = %v, want the older sibling discarded", e["sibling_list"])
			}
		})
	})
}

func TestCompareAndSet(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	first := h.must(200, "PUT", "/v1/kv/cas/k", `{"value":1}`)
	etag := first.header.Get("ETag")
	if etag == "" || first.json(t)["etag"] != etag {
		t.Fatalf("ETag header %q, body etag %v: want equal and set", etag, first.json(t)["etag"])
	}
	h.must(200, "PUT", "/v1/kv/cas/k", `{"value":2}`, "If-Match", etag)
	r := h.must(412, "PUT", "/v1/kv/cas/k", `{"value":3}`, "If-Match", etag)
	if r.json(t)["code"] != "precondition_failed" {
		t.Errorf("code = %v", r.json(t)["code"])
	}
	if got := h.must(200, "GET", "/v1/kv/cas/k", "").json(t)["value"]; got != float64(2) {
		t.Errorf("value after the failed CAS = %v, want 2", got)
	}
	h.must(412, "PUT", "/v1/kv/cas/k", `{"value":4}`, "If-None-Match", "*")
	h.must(200, "PUT", "/v1/kv/cas/new", `{"value":4}`, "If-None-Match", "*")
	h.must(412, "DELETE", "/v1/kv/cas/k", "", "If-Match", etag)
	h.must(204, "DELETE", "/v1/kv/cas/k", "")
	h.must(404, "GET", "/v1/kv/cas/k", "")
	h.must(404, "DELETE", "/v1/kv/cas/k", "")
}

func TestTTLExpires(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		h.must(200, "PUT", "/v1/kv/tmp/k", `{"value":"soon gone","ttl":1}`)
		deadline := time.Now().Add(2 * time.Second)
		for h.do("GET", "/v1/kv/tmp/k", "").status != 404 {
			if time.Now().After(deadline) {
				t.Fatal("a key written with ttl 1 is still there after 2 s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

func TestBadInputIsRefusedBeforeRedis(t *testing.T) {
	b := redistest.Mini(t)
	h := newHarness(t, b)
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
	tests := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		code                     string
	}{
		{"empty segment", "PUT", "/v1/kv/a//b", `{"value":1}`, nil, 400, "invalid_key"},
		{"dot segment", "PUT", "/v1/kv/a/../b", `{"value":1}`, nil, 400, "invalid_key"},
		{"bad character", "PUT", "/v1/kv/a%20b", `{"value":1}`, nil, 400, "invalid_key"},
		{"nine segments", "PUT", "/v1/kv/1/2/3/4/5/6/7/8/9", `{"value":1}`, nil, 400, "invalid_key"},
		{"long segment", "GET", "/v1/kv/" + strings.Repeat("x", 129), "", nil, 400, "invalid_key"},
		{"bad namespace", "GET", "/v1/kv/k?ns=a%2Fb", "", nil, 400, "invalid_key"},
		{"not JSON", "PUT", "/v1/kv/k", `{"value":`, nil, 400, "invalid_json"},
		{"trailing data", "PUT", "/v1/kv/k", `{"value":1} {}`, nil, 400, "invalid_json"},
		{"unknown field", "PUT", "/v1/kv/k", `{"value":1,"vlaue":2}`, nil, 400, "invalid_json"},
		{"a field twice", "PUT", "/v1/kv/k", `{"value":1,"value":2}`, nil, 400, "invalid_json"},
		{"a batch op's field twice", "POST", "/v1/batch", `{"ops":[{"op":"put","key":"k","value":1,"op":"delete"}]}`, nil, 400, "invalid_json"},
		{"a writer twice in a context", "PUT", "/v1/kv/k", `{"value":1,"context":{"w1":1,"w1":2}}`, nil, 400, "invalid_json"},
		{"too deep", "PUT", "/v1/kv/k", `{"value":` + deep + `}`, nil, 400, "invalid_json"},
		{"no value", "PUT", "/v1/kv/k", `{"ttl":5}`, nil, 400, "invalid_argument"},
		{"negative ttl", "PUT", "/v1/kv/k", `{"value":1,"ttl":-1}`, nil, 400, "invalid_argument"},
		{"ttl above the maximum", "PUT", "/v1/kv/k", `{"value":1,"ttl":90000}`, nil, 400, "invalid_argument"},
		{"fractional ttl", "PUT", "/v1/kv/k", `{"value":1,"ttl":1.5}`, nil, 400, "invalid_json"},
		{"bad context", "PUT", "/v1/kv/k", `{"value":1,"context":{"w1":-1}}`, nil, 400, "invalid_json"},
		{"bad writer", "PUT", "/v1/kv/k", `{"value":1}`, []string{"X-Worker-Id", "w 1"}, 400, "invalid_argument"},
		{"null body", "PUT", "/v1/kv/k", `null`, nil, 400, "invalid_json"},
		{"null heartbeat", "PUT", "/v1/workers/w1/heartbeat", ` null`, nil, 400, "invalid_json"},
		{"null lock request", "POST", "/v1/locks/jobs/a", `null`, nil, 400, "invalid_json"},
		{"a heartbeat of an array", "PUT", "/v1/workers/w1/heartbeat", `[]`, nil, 400, "invalid_json"},
		{"dot-dot writer", "PUT", "/v1/kv/k", `{"value":1}`, []string{"X-Worker-Id", ".."}, 400, "invalid_argument"},
		{"dot writer in a batch", "POST", "/v1/batch", `{"ops":[{"op":"put","key":"k","value":1}]}`, []string{"X-Worker-Id", "."}, 400, "invalid_argument"},
		{"dot-dot lock owner", "POST", "/v1/locks/jobs/a", `{"ttl_ms":1000}`, []string{"X-Worker-Id", ".."}, 400, "invalid_argument"},
		{"dot-dot patcher", "PATCH", "/v1/kv/k", `{"a":1}`, []string{"X-Worker-Id", ".."}, 400, "invalid_argument"},
		{"weak If-Match", "PUT", "/v1/kv/k", `{"value":1}`, []string{"If-Match", `W/"x"`}, 400, "invalid_argument"},
		{"2 MiB body", "PUT", "/v1/kv/k", `{"value":"` + strings.Repeat("x", 2<<20) + `"}`, nil, 413, "body_too_large"},
		{"bad resolve", "GET", "/v1/kv/k?resolve=newest", "", nil, 400, "invalid_argument"},
		{"bad limit", "GET", "/v1/keys?limit=0", "", nil, 400, "invalid_argument"},
		{"bad cursor", "GET", "/v1/keys?cursor=%21", "", nil, 400, "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do(tt.method, tt.path, tt.body, tt.headers...)
			if r.status != tt.status {
				t.Fatalf("status = %d (%s), want %d", r.status, r.body, tt.status)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
				t.Errorf("Content-Type = %q, want application/problem+json", ct)
			}
			p := r.json(t)
			if p["code"] != tt.code || p["status"] != float64(tt.status) || p["detail"] == "" {
				t.Errorf("problem = %v, want code %s", p, tt.code)
			}
		})
	}
	// An unknown route is not in the spec, so it goes around the validator.
	r, err := http.Get(h.url + "/v1/nothing")
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != 404 || r.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("unknown route: %d %s, want a 404 problem", r.StatusCode, r.Header.Get("Content-Type"))
	}
	if n := len(b.Mini.Keys()); n != 0 {
		t.Errorf("bad requests left %d Redis keys: %v", n, b.Mini.Keys())
	}
}

func TestRedisDownThenBack(t *testing.T) {
	b := redistest.Real(t)
	h := newHarness(t, b)
	h.must(200, "GET", "/readyz", "")
	h.must(200, "PUT", "/v1/kv/k", `{"value":1}`)
	b.Real.Stop(t)
	for _, path := range []string{"/v1/kv/k", "/readyz"} {
		r := h.must(503, "GET", path, "")
		if r.json(t)["code"] != "backend_unavailable" || r.header.Get("Retry-After") == "" {
			t.Errorf("GET %s with Redis down: %s, Retry-After %q", path, r.body, r.header.Get("Retry-After"))
		}
	}
	h.must(503, "PUT", "/v1/kv/k", `{"value":2}`)
	// Every kind of request, not only keys: 503 and a retry, never 500.
	others := []struct{ method, path, body string }{
		{"POST", "/v1/locks/jobs/L1", `{"ttl_ms":1000}`},
		{"POST", "/v1/semaphores/jobs/S1", `{"limit":2,"ttl_ms":1000}`},
		{"POST", "/v1/queues/jobs/messages", `{"value":1}`},
		{"POST", "/v1/queues/jobs/claim", `{"visibility_ms":1000}`},
		{"GET", "/v1/queues", ``},
		{"POST", "/v1/counters/jobs/done", ``},
		{"GET", "/v1/counters/jobs/done", ``},
		{"POST", "/v1/barriers/jobs/B1", `{"parties":2}`},
		{"POST", "/v1/batch", `{"ops":[{"op":"put","key":"jobs/J1/state","value":1}]}`},
	}
	for _, o := range others {
		r := h.do(o.method, o.path, o.body, "X-Worker-Id", "w1")
		var p struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal(r.body, &p)
		if o.path == "/v1/batch" && r.status == 200 {
			// A batch answers per operation.
			if !strings.Contains(string(r.body), "backend_unavailable") {
				t.Errorf("batch with Redis down: %s", r.body)
			}
			continue
		}
		if r.status != 503 || p.Code != "backend_unavailable" || r.header.Get("Retry-After") == "" {
			t.Errorf("%s %s with Redis down: %d %s", o.method, o.path, r.status, r.body)
		}
	}
	h.must(200, "GET", "/healthz", "") // the process itself is fine
	b.Real.Restart(t)
	// go-redis re-dials a server that refused it in the background, about
	// once a second: recovery is automatic, not instant.
	back := time.Now()
	for h.do("GET", "/readyz", "").status != 200 {
		if time.Since(back) > 5*time.Second {
			t.Fatal("/readyz still failing 5 s after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ready again %s after Redis came back", time.Since(back).Round(time.Millisecond))
	h.must(200, "PUT", "/v1/kv/k", `{"value":3}`)
	if got := h.must(200, "GET", "/v1/kv/k", "").json(t)["value"]; got != float64(3) {
		t.Errorf("value after recovery = %v, want 3", got)
	}
	for _, o := range others {
		if r := h.do(o.method, o.path, o.body, "X-Worker-Id", "w1"); r.status >= 500 {
			t.Errorf("%s %s after recovery: %d %s", o.method, o.path, r.status, r.body)
		}
	}
}

func TestKeysHealthAndSpec(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	for _, k := range []string{"tasks/T1/state", "tasks/T1/progress", "tasks/T2/state", "workers/w1/status"} {
		h.must(200, "PUT", "/v1/kv/"+k, `{"value":{"progress":1}}`)
	}
	h.must(200, "PUT", "/v1/kv/tasks/T9/state?ns=other", `{"value":true}`)
	r := h.must(200, "GET", "/v1/keys?prefix=tasks/&limit=2", "").json(t)
	if got := r["keys"]; len(got.([]any)) != 2 || r["cursor"] == nil {
		t.Fatalf("first page = %v", r)
	}
	r2 := h.must(200, "GET", "/v1/keys?prefix=tasks/&limit=2&cursor="+r["cursor"].(string), "").json(t)
	keys := append(r["keys"].([]any), r2["keys"].([]any)...)
	if got, want := strings.Trim(strings.Join(strings.Fields(strings.Trim(jsonString(keys), "[]")), ""), ""), `"tasks/T1/progress","tasks/T1/state","tasks/T2/state"`; got != want {
		t.Errorf("keys = %s, want %s", got, want)
	}
	if _, more := r2["cursor"]; more {
		t.Errorf("last page has a cursor: %v", r2)
	}
	if got := h.must(200, "GET", "/v1/keys?ns=other", "").json(t)["keys"]; jsonString(got) != `["tasks/T9/state"]` {
		t.Errorf("keys in ns other = %s", jsonString(got))
	}
	h.must(200, "GET", "/v1/kv/tasks%2FT1%2Fstate", "")
	h.must(200, "GET", "/healthz", "")
	spec := h.must(200, "GET", "/openapi.yaml", "")
	if !strings.HasPrefix(string(spec.body), "openapi: 3") {
		t.Errorf("/openapi.yaml starts %q", spec.body[:min(20, len(spec.body))])
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// The context a client sends must not outlive the request: a cancelled
// request leaves no half-applied write. (The script is atomic; this checks
// the handler passes the request context down.)
func TestCancelledRequest(t *testing.T) {
	b := redistest.Mini(t)
	h := newHarness(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, "PUT", h.url+"/v1/kv/c/k", strings.NewReader(`{"value":1}`))
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("a cancelled request succeeded")
	}
	h.must(404, "GET", "/v1/kv/c/k", "")
}
