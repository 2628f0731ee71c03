package http_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
)

const (
	mergePatch = "application/merge-patch+json"
	jsonPatch  = "application/json-patch+json"
)

// PATCH applies a merge patch or a JSON Patch to the value the key resolves
// to, as a compare-and-set that supersedes the siblings it read, keeping
// the key's expiry unless told otherwise.
func TestPatch(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		put := h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":{"status":"running","step":1,"owner":"w1"},"ttl":600}`, "X-Worker-Id", "w1").json(t)

		h.must(200, "PATCH", "/v1/kv/tasks/T0/state", `null`, "Content-Type", mergePatch) // RFC 7386: the value becomes null
		if v := h.must(200, "GET", "/v1/kv/tasks/T0/state", "").json(t); v["value"] != nil {
			t.Errorf("after a null merge patch: %v", v)
		}
		e := h.must(200, "PATCH", "/v1/kv/tasks/T1/state", `{"status":"done","step":null}`, "Content-Type", mergePatch, "X-Worker-Id", "w2").json(t)
		if jsonString(e["value"]) != `{"owner":"w1","status":"done"}` || jsonString(e["version"]) != `{"w1":1,"w2":1}` || e["siblings"] != float64(1) {
			t.Errorf("merge-patched entry = %v", e)
		}
		if d := e["expires_at"].(float64) - put["expires_at"].(float64); d != 0 {
			t.Errorf("expiry moved by %v ms: a patch without ttl keeps it", d)
		}

		// Two writers' concurrent siblings: the patch applies to the
		// resolved value and supersedes both.
		h.must(200, "PUT", "/v1/kv/docs/d1", `{"value":{"a":1}}`, "X-Worker-Id", "w1")
		h.must(200, "PUT", "/v1/kv/docs/d1", `{"value":{"b":2}}`, "X-Worker-Id", "w2")
		e = h.must(200, "PATCH", "/v1/kv/docs/d1", `{"c":3}`, "X-Worker-Id", "w3").json(t) // curl's -d type
		if jsonString(e["value"]) != `{"a":1,"b":2,"c":3}` || e["siblings"] != float64(1) {
			t.Errorf("patch over siblings = %v", e)
		}

		// JSON Patch: append to an array, guarded by a test.
		h.must(200, "PUT", "/v1/kv/coordination/queue", `{"value":{"pending":["T1"],"owner":"w1"}}`)
		ops := `[{"op":"test","path":"/owner","value":"w1"},{"op":"add","path":"/pending/-","value":"T2"},{"op":"add","path":"/last","value":null}]`
		if e = h.must(200, "PATCH", "/v1/kv/coordination/queue", ops, "Content-Type", jsonPatch).json(t); jsonString(e["value"]) != `{"last":null,"owner":"w1","pending":["T1","T2"]}` {
			t.Errorf("JSON-patched value = %s", jsonString(e["value"]))
		}
		failing := `[{"op":"test","path":"/owner","value":"w2"},{"op":"add","path":"/pending/-","value":"T3"}]`
		if p := h.must(412, "PATCH", "/v1/kv/coordination/queue", failing, "Content-Type", jsonPatch).json(t); p["code"] != "precondition_failed" {
			t.Errorf("failed test op: %v", p)
		}
		if v := h.must(200, "GET", "/v1/kv/coordination/queue?consistent=true", "").json(t)["value"]; jsonString(v) != `{"last":null,"owner":"w1","pending":["T1","T2"]}` {
			t.Errorf("value after a failed test = %s", jsonString(v))
		}

		// A missing key is created from {}; If-Match: * wants it to exist.
		h.must(412, "PATCH", "/v1/kv/tasks/T2/state", `{"status":"new"}`, "If-Match", "*")
		if e = h.must(200, "PATCH", "/v1/kv/tasks/T2/state", `{"status":"new"}`).json(t); jsonString(e["value"]) != `{"status":"new"}` || e["expires_at"] == nil {
			t.Errorf("created by a patch: %v", e)
		}
		etag := e["etag"].(string)
		h.must(200, "PATCH", "/v1/kv/tasks/T2/state?ttl=0", `{"n":1}`, "If-Match", etag)
		if p := h.must(412, "PATCH", "/v1/kv/tasks/T2/state", `{"n":2}`, "If-Match", etag).json(t); p["code"] != "precondition_failed" {
			t.Errorf("stale If-Match: %v", p)
		}
		e = h.must(200, "GET", "/v1/kv/tasks/T2/state?consistent=true", "").json(t)
		if _, expires := e["expires_at"]; expires || jsonString(e["value"]) != `{"n":1,"status":"new"}` {
			t.Errorf("after ttl=0 and a stale patch: %v", e)
		}
	})
}

// Whatever a PATCH cannot apply is refused whole, with a stable code, and
// leaves the value as it was.
func TestPatchRefusals(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	h.must(200, "PUT", "/v1/kv/tasks/T1/progress", `{"value":{"progress":10,"status":"started"}}`)
	h.must(200, "PUT", "/v1/kv/manual/m1", `{"value":1}`, "X-Worker-Id", "w1")
	h.must(200, "PUT", "/v1/kv/manual/m1", `{"value":2}`, "X-Worker-Id", "w2")
	big := strings.Repeat("x", 600<<10)
	h.must(200, "PUT", "/v1/kv/blobs/b1", `{"value":{"a":"`+big+`"}}`)
	for _, tt := range []struct {
		name, path, body string
		headers          []string
		status           int
		code             string
	}{
		{"empty body", "/v1/kv/k", "", nil, 400, "invalid_json"},
		{"not JSON", "/v1/kv/k", `{"a":`, nil, 400, "invalid_json"},
		{"JSON Patch not a list", "/v1/kv/k", `{"op":"add"}`, []string{"Content-Type", jsonPatch}, 400, "invalid_json"},
		{"unknown op", "/v1/kv/k", `[{"op":"append","path":"/a"}]`, []string{"Content-Type", jsonPatch}, 400, "invalid_argument"},
		{"op without path", "/v1/kv/k", `[{"op":"remove"}]`, []string{"Content-Type", jsonPatch}, 400, "invalid_argument"},
		{"remove of nothing", "/v1/kv/tasks/T1/progress", `[{"op":"remove","path":"/nope"}]`, []string{"Content-Type", jsonPatch}, 400, "invalid_argument"},
		{"progress out of range", "/v1/kv/tasks/T1/progress", `{"progress":150}`, nil, 400, "invalid_argument"},
		{"unresolved siblings", "/v1/kv/manual/m1", `{"a":1}`, nil, 400, "invalid_argument"},
		{"result too large", "/v1/kv/blobs/b1", `{"b":"` + big + `"}`, nil, 413, "body_too_large"},
		{"if-none-match", "/v1/kv/k", `{"a":1}`, []string{"If-None-Match", "*"}, 400, "invalid_argument"},
		{"async", "/v1/kv/k?async=true", `{"a":1}`, nil, 400, "invalid_argument"},
		{"async of a bad kind", "/v1/kv/k?async=soon", `{"a":1}`, nil, 400, "invalid_argument"},
		{"bad ttl", "/v1/kv/k?ttl=-1", `{"a":1}`, nil, 400, "invalid_argument"},
		{"bad key", "/v1/kv/a%20b", `{"a":1}`, nil, 400, "invalid_key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if p := h.must(tt.status, "PATCH", tt.path, tt.body, tt.headers...).json(t); p["code"] != tt.code {
				t.Errorf("code %v, want %s: %v", p["code"], tt.code, p["detail"])
			}
		})
	}
	h.must(404, "GET", "/v1/kv/k", "")
	h.must(200, "PATCH", "/v1/kv/k2?async=false", `{"a":1}`) // async=false is no queueing
	if v := h.must(200, "GET", "/v1/kv/tasks/T1/progress", "").json(t)["value"]; jsonString(v) != `{"progress":10,"status":"started"}` {
		t.Errorf("progress after refused patches = %s", jsonString(v))
	}
	if n := h.must(200, "GET", "/v1/kv/blobs/b1", "").json(t)["siblings"]; n != float64(1) {
		t.Errorf("blob siblings = %v", n)
	}
}

// Concurrent patches of one key lose nothing: each acknowledged patch's
// member is in the final value, and none that was refused is.
func TestConcurrentPatchesLoseNothing(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":{}}`)
		const writers, each = 8, 5
		var mu sync.Mutex
		acked, refused := map[string]bool{}, 0
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					member := fmt.Sprintf("w%d-%d", w, i)
					r := h.do("PATCH", "/v1/kv/tasks/T1/state", `{"`+member+`":true}`, "X-Worker-Id", fmt.Sprintf("w%d", w))
					mu.Lock()
					switch r.status {
					case 200:
						acked[member] = true
					case 412:
						refused++
					default:
						t.Errorf("PATCH %s = %d %s", member, r.status, r.body)
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		v := h.must(200, "GET", "/v1/kv/tasks/T1/state?consistent=true&siblings=true", "").json(t)
		got := v["value"].(map[string]any)
		for m := range acked {
			if got[m] != true {
				t.Errorf("acknowledged patch %s is lost", m)
			}
		}
		if len(got) != len(acked) || v["siblings"] != float64(1) {
			t.Errorf("value has %d members and %v siblings, want the %d acknowledged and 1", len(got), v["siblings"], len(acked))
		}
		if len(acked) == 0 {
			t.Fatal("no patch was acknowledged")
		}
		t.Logf("%d acknowledged, %d refused after %d attempts each", len(acked), refused, 10)
	})
}

// A PATCH sent again under its Idempotency-Key is answered with what its
// first try did, not applied again: not an append twice, not a 412 for the
// If-Match or the "test" that its own first write made false; racing
// copies apply once.
func TestPatchIdempotency(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		h.must(200, "PUT", "/v1/kv/jobs/J1", `{"value":{"n":[],"state":"open"}}`, "X-Worker-Id", "w1")
		appendOne := []string{"Content-Type", jsonPatch, "X-Worker-Id", "w1", "Idempotency-Key", "append-1"}
		first := h.must(200, "PATCH", "/v1/kv/jobs/J1", `[{"op":"add","path":"/n/-","value":1}]`, appendOne...)
		again := h.must(200, "PATCH", "/v1/kv/jobs/J1", `[{"op":"add","path":"/n/-","value":1}]`, appendOne...)
		if again.header.Get("Idempotent-Replayed") != "true" || first.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("Idempotent-Replayed: first %q, again %q", first.header.Get("Idempotent-Replayed"), again.header.Get("Idempotent-Replayed"))
		}
		if v := jsonString(h.must(200, "GET", "/v1/kv/jobs/J1?consistent=true", "").json(t)["value"]); v != `{"n":[1],"state":"open"}` {
			t.Fatalf("value after a PATCH sent twice = %s, want one append", v)
		}
		checkProblem(t, h.must(400, "PATCH", "/v1/kv/jobs/J1", `[{"op":"add","path":"/n/-","value":2}]`, appendOne...), "invalid_argument")

		etag := h.must(200, "GET", "/v1/kv/jobs/J1?consistent=true", "").header.Get("ETag")
		closeIt := []string{"Content-Type", jsonPatch, "If-Match", etag, "Idempotency-Key", "close-1"}
		body := `[{"op":"test","path":"/state","value":"open"},{"op":"replace","path":"/state","value":"closed"}]`
		h.must(200, "PATCH", "/v1/kv/jobs/J1", body, closeIt...)
		if r := h.must(200, "PATCH", "/v1/kv/jobs/J1", body, closeIt...); r.header.Get("Idempotent-Replayed") != "true" {
			t.Fatal("the close sent again was not replayed")
		}
		// Without the key, the same request is a new one: its If-Match fails.
		checkProblem(t, h.must(412, "PATCH", "/v1/kv/jobs/J1", body, "Content-Type", jsonPatch, "If-Match", etag), "precondition_failed")

		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() {
				if r, err := h.exchange("PATCH", "/v1/kv/jobs/J1", `[{"op":"add","path":"/n/-","value":9}]`,
					"Content-Type", jsonPatch, "X-Worker-Id", "w2", "Idempotency-Key", "append-9"); err != nil || r.status != 200 {
					t.Errorf("racing copy: %v %d %s", err, r.status, r.body)
				}
			})
		}
		wg.Wait()
		if v := jsonString(h.must(200, "GET", "/v1/kv/jobs/J1?consistent=true", "").json(t)["value"]); v != `{"n":[1,9],"state":"closed"}` {
			t.Fatalf("value after 6 racing copies of one PATCH = %s, want one append of 9", v)
		}
	})
}
