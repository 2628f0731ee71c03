package http_test

import (
	"strconv"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
)

// A PUT sent again under its Idempotency-Key is answered 200 with the key's
// entry and Idempotent-Replayed, and is not applied again: here a create
// (If-None-Match) whose retry would otherwise get 412.
func TestIdempotencyKey(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		send := func(want int, path, body, key string) response {
			t.Helper()
			return h.must(want, "PUT", path, body, "X-Worker-Id", "w1", "If-None-Match", "*", "Idempotency-Key", key)
		}
		for _, path := range []string{"/v1/kv/tasks/T1/state", "/v1/tasks/T2/state"} {
			first := send(200, path, `{"value":{"status":"done"}}`, "finish-1")
			if first.header.Get("Idempotent-Replayed") != "" {
				t.Errorf("%s: first write marked Idempotent-Replayed", path)
			}
			again := send(200, path, `{"value":{"status":"done"}}`, "finish-1")
			if again.header.Get("Idempotent-Replayed") != "true" || again.header.Get("ETag") != first.header.Get("ETag") {
				t.Errorf("%s: retry headers %v, want Idempotent-Replayed: true and ETag %s", path, again.header, first.header.Get("ETag"))
			}
			if e := again.json(t); e["version"].(map[string]any)["w1"] != float64(1) {
				t.Errorf("%s: retry answered version %v, want w1: 1", path, e["version"])
			}
			if p := send(400, path, `{"value":{"status":"failed"}}`, "finish-1").json(t); p["code"] != "invalid_argument" {
				t.Errorf("%s: the key on another body: code %v, want invalid_argument", path, p["code"])
			}
			if p := send(412, path, `{"value":{"status":"done"}}`, "finish-2").json(t); p["code"] != "precondition_failed" {
				t.Errorf("%s: another key: code %v, want precondition_failed", path, p["code"])
			}
		}
		if p := h.must(400, "PUT", "/v1/kv/tasks/T3/state", `{"value":1}`, "Idempotency-Key", "no spaces").json(t); p["code"] != "invalid_argument" {
			t.Errorf("malformed Idempotency-Key: code %v, want invalid_argument", p["code"])
		}
	})
}

// A DELETE sent again under its Idempotency-Key: 204 with
// Idempotent-Replayed, and nothing deleted, though the key was written
// again in between.
func TestDeleteIdempotencyKey(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		h.must(200, "PUT", "/v1/kv/jobs/J1/state", `{"value":"done"}`)
		if r := h.must(204, "DELETE", "/v1/kv/jobs/J1/state", "", "Idempotency-Key", "drop-1"); r.header.Get("Idempotent-Replayed") != "" {
			t.Errorf("first delete marked Idempotent-Replayed")
		}
		h.must(200, "PUT", "/v1/kv/jobs/J1/state", `{"value":"again"}`)
		if r := h.must(204, "DELETE", "/v1/kv/jobs/J1/state", "", "Idempotency-Key", "drop-1"); r.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("the delete sent again: headers %v, want Idempotent-Replayed: true", r.header)
		}
		if e := h.must(200, "GET", "/v1/kv/jobs/J1/state?consistent=true", "").json(t); e["value"] != "again" {
			t.Errorf("the write after the delete: %v", e)
		}
		if p := h.must(400, "DELETE", "/v1/kv/jobs/J1/state", "", "Idempotency-Key", "drop-1", "If-Match", `"x"`).json(t); p["code"] != "invalid_argument" {
			t.Errorf("the key with another If-Match: code %v, want invalid_argument", p["code"])
		}
		if p := h.must(400, "DELETE", "/v1/kv/jobs/J1/state", "", "Idempotency-Key", "no spaces").json(t); p["code"] != "invalid_argument" {
			t.Errorf("malformed Idempotency-Key: code %v, want invalid_argument", p["code"])
		}

		// One that found no key: 404 again, Idempotent-Replayed, though
		// the key was created since, and the key stays.
		if r := h.must(404, "DELETE", "/v1/kv/jobs/J2/state", "", "Idempotency-Key", "drop-2"); r.header.Get("Idempotent-Replayed") != "" {
			t.Errorf("first delete of an absent key marked Idempotent-Replayed")
		}
		h.must(200, "PUT", "/v1/kv/jobs/J2/state", `{"value":"created"}`)
		r := h.must(404, "DELETE", "/v1/kv/jobs/J2/state", "", "Idempotency-Key", "drop-2")
		if p := r.json(t); r.header.Get("Idempotent-Replayed") != "true" || p["code"] != "not_found" {
			t.Errorf("the delete of an absent key sent again: %v, headers %v; want not_found, Idempotent-Replayed: true", p, r.header)
		}
		if e := h.must(200, "GET", "/v1/kv/jobs/J2/state?consistent=true", "").json(t); e["value"] != "created" {
			t.Errorf("the key created after the delete: %v", e)
		}
	})
}

// A lock acquire sent again under its Idempotency-Key, while its grant
// holds the lock, gets the grant again (Idempotent-Replayed), token
// included; on /v1/locks and on the task route.
func TestLockIdempotencyKey(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		for _, path := range []string{"/v1/locks/jobs/nightly", "/v1/tasks/T5/lock"} {
			first := h.mustGrant(path, `{"ttl_ms":30000}`, "X-Worker-Id", "w1", "Idempotency-Key", "take-1")
			r := h.must(200, "POST", path, `{"ttl_ms":30000}`, "X-Worker-Id", "w1", "Idempotency-Key", "take-1")
			again := decodeGrant(t, r)
			if r.header.Get("Idempotent-Replayed") != "true" || again.Token == nil || *again.Token != *first.Token || again.Fence != first.Fence {
				t.Errorf("%s again: %+v, headers %v; want the first grant %+v, Idempotent-Replayed", path, again, r.header, first)
			}
			if p := h.must(400, "POST", path, `{"ttl_ms":1000}`, "X-Worker-Id", "w1", "Idempotency-Key", "take-1").json(t); p["code"] != "invalid_argument" {
				t.Errorf("%s, the key with another ttl: code %v", path, p["code"])
			}
			if p := h.must(409, "POST", path, `{"ttl_ms":30000}`, "X-Worker-Id", "w1", "Idempotency-Key", "take-2").json(t); p["code"] != "lock_held" {
				t.Errorf("%s, another key: code %v", path, p["code"])
			}
		}
	})
}

// A batch sent again under its Idempotency-Key: the puts and the delete it
// applied are answered with "replayed": true and not applied again. An
// atomic batch sent again is answered whole as applied.
func TestBatchIdempotencyKey(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		h.must(200, "PUT", "/v1/kv/jobs/old", `{"value":0}`)
		body := `{"ops":[{"op":"put","key":"jobs/a","value":1},{"op":"delete","key":"jobs/old"},{"op":"put","key":"jobs/b","value":2}]}`
		results := func(r response) []any {
			t.Helper()
			return r.json(t)["results"].([]any)
		}
		first := results(h.must(200, "POST", "/v1/batch", body, "X-Worker-Id", "w1", "Idempotency-Key", "batch-7"))
		again := results(h.must(200, "POST", "/v1/batch", body, "X-Worker-Id", "w1", "Idempotency-Key", "batch-7"))
		for i, want := range []struct {
			status   float64
			replayed any
		}{{200, true}, {204, true}, {200, true}} {
			r := again[i].(map[string]any)
			if r["status"] != want.status || r["replayed"] != want.replayed {
				t.Errorf("op %d sent again: %v; want status %v, replayed %v", i, r, want.status, want.replayed)
			}
			if want.status == 200 {
				e, f := r["entry"].(map[string]any), first[i].(map[string]any)["entry"].(map[string]any)
				if e["etag"] != f["etag"] {
					t.Errorf("op %d sent again: etag %v, want the first answer's %v", i, e["etag"], f["etag"])
				}
			}
		}

		// Atomic: sent again, the whole batch is answered as applied, though
		// its if_match no longer holds; without the key it fails whole.
		etag := first[0].(map[string]any)["entry"].(map[string]any)["etag"].(string)
		atomic := `{"atomic":true,"ops":[{"op":"put","key":"jobs/a","value":10,"if_match":` + strconv.Quote(etag) +
			`},{"op":"delete","key":"jobs/b","if_match":"*"}]}`
		h.must(200, "POST", "/v1/batch", atomic, "X-Worker-Id", "w1", "Idempotency-Key", "batch-8")
		again = results(h.must(200, "POST", "/v1/batch", atomic, "X-Worker-Id", "w1", "Idempotency-Key", "batch-8"))
		for i, status := range []float64{200, 204} {
			if r := again[i].(map[string]any); r["status"] != status || r["replayed"] != true {
				t.Errorf("atomic op %d sent again: %v; want status %v, replayed", i, r, status)
			}
		}
		if p := h.must(412, "POST", "/v1/batch", atomic, "X-Worker-Id", "w1").json(t); p["code"] != "precondition_failed" {
			t.Errorf("atomic batch again without its key: code %v", p["code"])
		}
		// Deletes only: remembered by the key they deleted, which a write
		// after them keeps.
		deletes := `{"atomic":true,"ops":[{"op":"delete","key":"jobs/a"}]}`
		h.must(200, "POST", "/v1/batch", deletes, "Idempotency-Key", "batch-9")
		h.must(200, "PUT", "/v1/kv/jobs/a", `{"value":11}`, "X-Worker-Id", "w2")
		again = results(h.must(200, "POST", "/v1/batch", deletes, "Idempotency-Key", "batch-9"))
		if r := again[0].(map[string]any); r["status"] != float64(204) || r["replayed"] != true {
			t.Errorf("atomic deletes sent again: %v; want status 204, replayed", r)
		}
		h.must(200, "GET", "/v1/kv/jobs/a", "")
		// A delete that found no key: 404 again, replayed, in a batch and
		// in an atomic one, though the key was created since.
		for _, atomic := range []bool{false, true} {
			key := "jobs/ghost-" + strconv.FormatBool(atomic)
			absent := `{"atomic":` + strconv.FormatBool(atomic) + `,"ops":[{"op":"delete","key":"` + key + `"}]}`
			first := results(h.must(200, "POST", "/v1/batch", absent, "Idempotency-Key", "batch-11"))[0].(map[string]any)
			h.must(200, "PUT", "/v1/kv/"+key, `{"value":"created"}`)
			again := results(h.must(200, "POST", "/v1/batch", absent, "Idempotency-Key", "batch-11"))[0].(map[string]any)
			if first["status"] != float64(404) || first["replayed"] != nil || again["status"] != float64(404) || again["replayed"] != true {
				t.Errorf("%s: first %v, then %v; want 404, then 404 replayed", absent, first, again)
			}
			h.must(200, "GET", "/v1/kv/"+key, "")
		}
		getsOnly := `{"atomic":true,"ops":[{"op":"get","key":"jobs/a"}]}`
		if p := h.must(400, "POST", "/v1/batch", getsOnly, "Idempotency-Key", "batch-10").json(t); p["code"] != "invalid_argument" {
			t.Errorf("atomic batch of gets only with a key: code %v", p["code"])
		}
	})
}

// A queued write sent twice under one Idempotency-Key (its 202 was lost)
// is applied once when the queue is flushed.
func TestAsyncIdempotencyKey(t *testing.T) {
	h := newQueueHarness(t, redistest.Mini(t))
	for range 2 {
		h.must(202, "PUT", "/v1/kv/jobs/q?async=true", `{"value":"queued"}`, "X-Worker-Id", "w1", "Idempotency-Key", "enqueue-1")
	}
	if got := h.must(200, "POST", "/v1/sync", "").json(t)["flushed"]; got != float64(2) {
		t.Errorf("flushed = %v, want 2 (both taken out of the queue)", got)
	}
	e := h.must(200, "GET", "/v1/kv/jobs/q?consistent=true", "").json(t)
	if e["version"].(map[string]any)["w1"] != float64(1) {
		t.Errorf("version after the flush = %v, want w1: 1 (applied once)", e["version"])
	}
}
