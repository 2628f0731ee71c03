package http_test

import (
	"testing"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/testserver"
)

// DELETE /v1/keys?prefix= deletes the keys under the prefix, each
// announced, and answers how many; without a prefix it is refused.
func TestDeletePrefixOverHTTP(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newServerHarness(t, testserver.Options{Backend: &b})
		deletes := h.watch("/v1/watch?pattern=tasks/**&types=delete")
		for _, key := range []string{"tasks/T1/state", "tasks/T1/agents/a1", "tasks/T10/state"} {
			h.must(200, "PUT", "/v1/kv/"+key, `{"value":1}`)
		}
		h.must(200, "GET", "/v1/kv/tasks/T1/state", "") // cached: the delete must drop it
		if got := h.must(200, "DELETE", "/v1/keys?prefix=tasks/T1/", "").json(t)["deleted"]; got != float64(2) {
			t.Errorf("deleted = %v, want 2", got)
		}
		for _, key := range []string{"tasks/T1/agents/a1", "tasks/T1/state"} { // path order
			if c := deletes.nextChange(); c.Key != key {
				t.Errorf("delete event for %s, want %s", c.Key, key)
			}
		}
		h.must(404, "GET", "/v1/kv/tasks/T1/state", "")
		h.must(200, "GET", "/v1/kv/tasks/T10/state", "")
		if got := h.must(200, "DELETE", "/v1/keys?prefix=tasks/T1/", "").json(t)["deleted"]; got != float64(0) {
			t.Errorf("deleted again = %v, want 0", got)
		}
		for _, bad := range []string{"/v1/keys", "/v1/keys?prefix=", "/v1/keys?prefix=a%20b/"} {
			if p := h.must(400, "DELETE", bad, "").json(t); p["code"] != "invalid_argument" {
				t.Errorf("DELETE %s: code %v, want invalid_argument", bad, p["code"])
			}
		}
	})
}

// A worker deletes under its own areas only, a reader nowhere: 403, and
// nothing deleted.
func TestDeletePrefixIsAuthorizedWhole(t *testing.T) {
	h := newServerHarness(t, testserver.Options{Tokens: testTokens(t)})
	h.must(200, "PUT", "/v1/kv/workers/w1/status", `{"value":1}`, bearer(w1Token)...)
	h.must(200, "PUT", "/v1/kv/workers/w10/status", `{"value":1}`, bearer(adminToken)...)
	for _, tt := range []struct {
		token, prefix string
		status        int
	}{
		{w1Token, "", 400},
		{w1Token, "workers/", 403},
		{w1Token, "workers/w1", 403}, // would cover workers/w10/…
		{readerToken, "workers/w1/", 403},
		{w1Token, "workers/w1/", 200},
	} {
		h.must(tt.status, "DELETE", "/v1/keys?prefix="+tt.prefix, "", bearer(tt.token)...)
	}
	h.must(404, "GET", "/v1/kv/workers/w1/status", "", bearer(adminToken)...)
	h.must(200, "GET", "/v1/kv/workers/w10/status", "", bearer(adminToken)...)
}

// A write queued (async) under the prefix is flushed first, and deleted
// with the rest, rather than landing after the delete.
func TestDeletePrefixTakesQueuedWrites(t *testing.T) {
	b := redistest.Mini(t)
	h := newQueueHarness(t, b) // the queue flushes only when asked
	h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":1}`)
	h.must(202, "PUT", "/v1/kv/tasks/T1/agents/a1?async=true", `{"value":1}`)
	if got := h.must(200, "DELETE", "/v1/keys?prefix=tasks/T1/", "").json(t)["deleted"]; got != float64(2) {
		t.Errorf("deleted = %v, want 2 (the queued write too)", got)
	}
	h.must(200, "POST", "/v1/sync", "")
	if inRedis(t, b, "tasks/T1/agents/a1") {
		t.Error("the queued write landed after the prefix delete")
	}
}
