package http_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/api"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/spectest"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/testserver"
)

// newQueueHarness is a harness whose async queue flushes only when told
// (or at Size writes), so that a test sees what is queued and what is not.
func newQueueHarness(t *testing.T, b redistest.Backend) *harness {
	t.Helper()
	srv := testserver.StartWith(t, testserver.Options{Backend: &b, BatchInterval: time.Hour, BatchSize: 10_000})
	v := spectest.New(t, api.Spec)
	return &harness{t: t, url: srv.URL, client: v.Client(), backend: b, srv: srv}
}

// inRedis reports whether key of the default namespace exists in Redis,
// asked of Redis itself, past every layer of memsync.
func inRedis(t *testing.T, b redistest.Backend, key string) bool {
	t.Helper()
	n, err := b.Client.Exists(context.Background(), keys.Redis("task-sentinel", key)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

type batchResult struct {
	Status int            `json:"status"`
	Entry  map[string]any `json:"entry"`
	Error  map[string]any `json:"error"`
}

func (r response) results(t *testing.T) []batchResult {
	t.Helper()
	var body struct {
		Results []batchResult `json:"results"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("batch response %s: %v", r.body, err)
	}
	return body.Results
}

func TestBatchMixedResults(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		old := h.must(200, "PUT", "/v1/kv/mix/old", `{"value":"old"}`)
		h.must(200, "PUT", "/v1/kv/mix/gone", `{"value":"gone"}`)
		body := `{"ops":[
			{"op":"put","key":"mix/a","value":{"n":1},"ttl":60},
			{"op":"put","key":"mix/../bad","value":1},
			{"op":"get","key":"mix/a"},
			{"op":"put","key":"mix/old","value":"new","if_match":"\"stale\""},
			{"op":"get","key":"mix/missing"},
			{"op":"delete","key":"mix/gone"},
			{"op":"delete","key":"mix/never"},
			{"op":"frobnicate","key":"mix/a"},
			{"op":"put","key":"mix/b"},
			{"op":"get","key":"mix/a","value":1},
			{"op":"put","key":"mix/b","value":null,"ttl":-1},
			{"op":"get","key":"mix/old","if_match":` + jsonString(old.header.Get("ETag")) + `},
			{"op":"put","key":"mix/c","value":[1,2],"context":{"w9":4}},
			{"op":"put","key":"tasks/T1/progress","value":{"progress":101}}
		]}`
		r := h.must(200, "POST", "/v1/batch", body, "X-Worker-Id", "batcher")
		res := r.results(t)
		want := []struct {
			status int
			code   string
		}{{200, ""}, {400, "invalid_key"}, {200, ""}, {412, "precondition_failed"}, {404, "not_found"},
			{204, ""}, {404, "not_found"}, {400, "invalid_argument"}, {400, "invalid_argument"},
			{400, "invalid_argument"}, {400, "invalid_argument"}, {200, ""}, {200, ""},
			{400, "invalid_argument"}}
		if len(res) != len(want) {
			t.Fatalf("%d results, want %d: %s", len(res), len(want), r.body)
		}
		for i, w := range want {
			got := res[i]
			code, _ := got.Error["code"].(string)
			if got.Status != w.status || code != w.code || (w.code == "") != (got.Error == nil) {
				t.Errorf("op %d: status %d code %q, want %d %q", i, got.Status, code, w.status, w.code)
			}
			if got.Error != nil && int(got.Error["status"].(float64)) != got.Status {
				t.Errorf("op %d: the problem's status %v differs from the result's %d", i, got.Error["status"], got.Status)
			}
			if (got.Status == 200) != (got.Entry != nil) {
				t.Errorf("op %d: status %d with entry %v", i, got.Status, got.Entry)
			}
		}
		if res[0].Entry["writer"] != "batcher" || res[2].Entry["value"].(map[string]any)["n"] != 1.0 {
			t.Errorf("put = %v, get after it = %v", res[0].Entry, res[2].Entry)
		}
		if v := res[12].Entry["version"].(map[string]any); v["w9"] != 4.0 || v["batcher"] != 1.0 {
			t.Errorf("put with context: version %v, want the context merged in: w9=4, batcher=1", v)
		}
		h.must(404, "GET", "/v1/kv/mix/gone", "")
		if e := h.must(200, "GET", "/v1/kv/mix/old", "").json(t); e["value"] != "old" {
			t.Errorf("mix/old = %v after a failed if_match", e["value"])
		}
		if e := h.must(200, "GET", "/v1/kv/mix/a?consistent=true", "").json(t); e["writer"] != "batcher" {
			t.Errorf("mix/a = %v", e)
		}
	})
}

// The design document's other half of the batch example: an atomic batch
// with one stale if_match changes nothing.
func TestAtomicBatchWithOneStaleIfMatchChangesNothing(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		etags := map[string]string{}
		for i := range 4 {
			k := "tasks/T" + strconv.Itoa(i) + "/state"
			etags[k] = h.must(200, "PUT", "/v1/kv/"+k, `{"value":{"status":"queued"}}`, "X-Worker-Id", "w1").header.Get("ETag")
		}
		stale := etags["tasks/T2/state"]
		etags["tasks/T2/state"] = h.must(200, "PUT", "/v1/kv/tasks/T2/state", `{"value":{"status":"taken"}}`, "X-Worker-Id", "w2").header.Get("ETag")

		var ops []string
		for i := range 4 {
			k := "tasks/T" + strconv.Itoa(i) + "/state"
			m := etags[k]
			if i == 2 {
				m = stale
			}
			ops = append(ops, fmt.Sprintf(`{"op":"put","key":%q,"value":{"status":"running"},"if_match":%s}`, k, jsonString(m)))
		}
		ops = append(ops, `{"op":"delete","key":"tasks/T0/state"}`, `{"op":"put","key":"tasks/T9/state","value":1}`)
		r := h.must(412, "POST", "/v1/batch", `{"atomic":true,"ops":[`+strings.Join(ops, ",")+`]}`, "X-Worker-Id", "w1")
		p := r.json(t)
		if p["code"] != "precondition_failed" || p["op"] != 2.0 {
			t.Errorf("problem = %v, want precondition_failed at op 2", p)
		}
		for i := range 4 {
			k := "tasks/T" + strconv.Itoa(i) + "/state"
			e := h.must(200, "GET", "/v1/kv/"+k+"?consistent=true", "")
			if got := e.header.Get("ETag"); got != etags[k] {
				t.Errorf("%s: etag %s, want %s (unchanged)", k, got, etags[k])
			}
			if v := e.json(t)["value"].(map[string]any)["status"]; v == "running" {
				t.Errorf("%s was written by a batch that failed", k)
			}
		}
		h.must(404, "GET", "/v1/kv/tasks/T9/state?consistent=true", "")

		// With the fresh etag, the same batch applies whole.
		ops[2] = fmt.Sprintf(`{"op":"put","key":"tasks/T2/state","value":{"status":"running"},"if_match":%s}`, jsonString(etags["tasks/T2/state"]))
		res := h.must(200, "POST", "/v1/batch", `{"atomic":true,"ops":[`+strings.Join(ops, ",")+`]}`, "X-Worker-Id", "w1").results(t)
		if res[4].Status != 204 || res[5].Status != 200 {
			t.Errorf("results = %+v", res)
		}
		h.must(404, "GET", "/v1/kv/tasks/T0/state", "")
		for _, k := range []string{"tasks/T1/state", "tasks/T2/state", "tasks/T3/state"} {
			if v := h.must(200, "GET", "/v1/kv/"+k, "").json(t)["value"].(map[string]any)["status"]; v != "running" {
				t.Errorf("%s = %v, want running", k, v)
			}
		}
	})
}

func TestBatchRefusals(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	many := strings.Repeat(`{"op":"get","key":"a/b"},`, 1001)
	tests := []struct {
		name, body string
		status     int
		code       string
		op         any // the index an atomic refusal names, or nil
	}{
		{"more than 1000 ops", `{"ops":[` + strings.TrimSuffix(many, ",") + `]}`, 400, "invalid_argument", nil},
		{"no ops", `{"atomic":true}`, 400, "invalid_argument", nil},
		{"unknown member", `{"ops":[{"op":"get","key":"a/b","when":"now"}]}`, 400, "invalid_json", nil},
		{"not JSON", `{"ops":[`, 400, "invalid_json", nil},
		{"atomic with a bad key", `{"atomic":true,"ops":[{"op":"put","key":"a/b","value":1},{"op":"get","key":"a//b"}]}`, 400, "invalid_key", 1.0},
		{"atomic with a bad ttl", `{"atomic":true,"ops":[{"op":"put","key":"a/b","value":1,"ttl":999999999}]}`, 400, "invalid_argument", 0.0},
		{"atomic with an op of nothing", `{"atomic":true,"ops":[{"op":"put","key":"a/b","value":1},{}]}`, 400, "invalid_argument", 1.0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := h.must(tt.status, "POST", "/v1/batch", tt.body).json(t)
			if p["code"] != tt.code || p["op"] != tt.op {
				t.Errorf("problem = %v, want code %s op %v", p, tt.code, tt.op)
			}
		})
	}
	h.must(404, "GET", "/v1/kv/a/b", "") // the atomic refusals applied nothing
	h.must(400, "POST", "/v1/batch?ns=bad/ns", `{"ops":[]}`)
	h.must(400, "POST", "/v1/batch", `{"ops":[]}`, "X-Worker-Id", "no spaces")
	if res := h.must(200, "POST", "/v1/batch", `{"ops":[]}`).results(t); len(res) != 0 {
		t.Errorf("empty batch: %v", res)
	}
	// Not atomic, an op without op or key fails alone.
	res := h.must(200, "POST", "/v1/batch", `{"ops":[{},{"op":"put","value":1},{"op":"put","key":"c/d","value":1}]}`).results(t)
	if len(res) != 3 || res[0].Status != 400 || res[1].Status != 400 || res[2].Status != 200 {
		t.Errorf("ops missing op or key: %+v", res)
	}
}

// The design document's batch example: 100 writes, then forceSync, and all
// 100 are in Redis.
func TestHundredAsyncWritesThenSync(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newQueueHarness(t, b)
		for i := range 100 {
			r := h.must(202, "PUT", fmt.Sprintf("/v1/kv/batch/key-%03d?async=true", i), fmt.Sprintf(`{"value":{"n":%d}}`, i), "X-Worker-Id", "w1")
			if q := r.json(t); q["queued"] != true || q["key"] != fmt.Sprintf("batch/key-%03d", i) || q["namespace"] != "task-sentinel" || q["pending"] != float64(i+1) {
				t.Fatalf("202 body = %v", q)
			}
		}
		if inRedis(t, b, "batch/key-000") {
			t.Fatal("a queued write reached Redis before the sync")
		}
		if got := h.must(200, "POST", "/v1/sync", "").json(t)["flushed"]; got != 100.0 {
			t.Errorf("flushed = %v, want 100", got)
		}
		st := h.srv.Store
		for i := range 100 {
			k := fmt.Sprintf("batch/key-%03d", i)
			if !inRedis(t, b, k) {
				t.Errorf("%s is not in Redis after the sync", k)
				continue
			}
			e, err := st.Get(context.Background(), "task-sentinel", k, store.GetOptions{})
			if err != nil || string(e.Value) != fmt.Sprintf(`{"n":%d}`, i) || e.Writer != "w1" {
				t.Errorf("%s = %s by %s, %v", k, e.Value, e.Writer, err)
			}
		}
		if got := h.must(200, "POST", "/v1/sync", "").json(t)["flushed"]; got != 0.0 {
			t.Errorf("second sync flushed %v, want 0", got)
		}
	})
}

func TestReadsSeeQueuedWrites(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newQueueHarness(t, b)
		// Cached first, so that the read below must not be served stale.
		h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":"old"}`, "X-Worker-Id", "w1")
		h.must(200, "GET", "/v1/kv/tasks/T1/state", "")
		h.must(200, "GET", "/v1/kv/tasks/T1/state", "")

		h.must(202, "PUT", "/v1/tasks/T1/state?async=true", `{"value":"new"}`, "X-Worker-Id", "w1")
		h.must(202, "PUT", "/v1/kv/tasks/T1/agents/a1?async=true", `{"value":{"role":"x"}}`, "X-Worker-Id", "w1")
		if e := h.must(200, "GET", "/v1/kv/tasks/T1/state", "").json(t); e["value"] != "new" {
			t.Errorf("GET after an async PUT = %v, want new", e["value"])
		}
		if h.srv.Queue.Pending() != 0 {
			t.Errorf("pending = %d after a read flushed", h.srv.Queue.Pending())
		}

		// Listing sees a key that only a queued write created.
		h.must(202, "PUT", "/v1/kv/tasks/T2/state?async=true", `{"value":"fresh"}`)
		if ks := h.must(200, "GET", "/v1/keys?prefix=tasks/", "").json(t)["keys"]; fmt.Sprint(ks) != "[tasks/T1/agents/a1 tasks/T1/state tasks/T2/state]" {
			t.Errorf("keys = %v", ks)
		}

		// A synchronous write after a queued one of the same key lands after it.
		h.must(202, "PUT", "/v1/kv/tasks/T3/state?async=true", `{"value":"first"}`, "X-Worker-Id", "w1")
		h.must(200, "PUT", "/v1/kv/tasks/T3/state", `{"value":"second"}`, "X-Worker-Id", "w1")
		h.must(200, "POST", "/v1/sync", "")
		if e := h.must(200, "GET", "/v1/kv/tasks/T3/state?consistent=true", "").json(t); e["value"] != "second" {
			t.Errorf("tasks/T3/state = %v, want second (the later write)", e["value"])
		}
	})
}

func TestAsyncRefusals(t *testing.T) {
	h := newQueueHarness(t, redistest.Mini(t))
	tests := []struct {
		name, path, body string
		headers          []string
		code             string
	}{
		{"with If-Match", "/v1/kv/a/b?async=true", `{"value":1}`, []string{"If-Match", `"x"`}, "invalid_argument"},
		{"with If-None-Match", "/v1/kv/a/b?async=true", `{"value":1}`, []string{"If-None-Match", "*"}, "invalid_argument"},
		{"bad Idempotency-Key", "/v1/kv/a/b?async=true", `{"value":1}`, []string{"Idempotency-Key", "k 1"}, "invalid_argument"},
		{"not a boolean", "/v1/kv/a/b?async=soon", `{"value":1}`, nil, "invalid_argument"},
		{"ttl above the maximum", "/v1/kv/a/b?async=true", `{"value":1,"ttl":99999999999}`, nil, "invalid_argument"},
		{"bad key", "/v1/kv/a/../b?async=true", `{"value":1}`, nil, "invalid_key"},
		{"typed check", "/v1/tasks/T1/progress?async=true", `{"value":{"progress":101}}`, nil, "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p := h.must(400, "PUT", tt.path, tt.body, tt.headers...).json(t); p["code"] != tt.code {
				t.Errorf("code = %v, want %s", p["code"], tt.code)
			}
		})
	}
	if n := h.srv.Queue.Pending(); n != 0 {
		t.Errorf("%d refused writes were queued", n)
	}
}
