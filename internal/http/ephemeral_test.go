package http_test

import (
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/testserver"
)

// TestEphemeralKeysGoWithTheirWritersHeartbeat: keys written with
// ?ephemeral=true (PUT and PATCH) are deleted once the writer's heartbeat
// expires, unless written again since.
func TestEphemeralKeysGoWithTheirWritersHeartbeat(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		checkProblem(t, h.must(409, "PUT", "/v1/kv/tasks/T1/claim?ephemeral=true", `{"value":"w1"}`, "X-Worker-Id", "w1"), "no_heartbeat")
		h.must(404, "GET", "/v1/kv/tasks/T1/claim?consistent=true", "")

		h.must(200, "PUT", "/v1/workers/w1/heartbeat", `{"ttl":1}`)
		h.must(200, "PUT", "/v1/kv/tasks/T1/claim?ephemeral=true", `{"value":"w1"}`, "X-Worker-Id", "w1")
		h.must(200, "PATCH", "/v1/tasks/T1/state?ephemeral=true", `{"owner":"w1"}`, "X-Worker-Id", "w1")
		h.must(200, "PUT", "/v1/kv/tasks/T2/claim?ephemeral=true", `{"value":"w1"}`, "X-Worker-Id", "w1")
		// Taken over by w2's write: it stays when w1 goes.
		h.must(200, "PUT", "/v1/kv/tasks/T2/claim", `{"value":"w2"}`, "X-Worker-Id", "w2")

		for deadline := time.Now().Add(8 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			a := h.do("GET", "/v1/kv/tasks/T1/claim?consistent=true", "")
			s := h.do("GET", "/v1/tasks/T1/state?consistent=true", "")
			if a.status == 404 && s.status == 404 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("8 s after a heartbeat of 1 s: claim %d, state %d; want both deleted", a.status, s.status)
			}
		}
		h.must(200, "GET", "/v1/kv/tasks/T2/claim?consistent=true", "")
	})
}

func TestEphemeralBadInput(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	h.must(200, "PUT", "/v1/workers/w1/heartbeat", `{"ttl":60}`)
	for _, tt := range []struct {
		method, path, body, code string
		headers                  []string
	}{
		{"PUT", "/v1/kv/tasks/T1/claim?ephemeral=true", `{"value":1}`, "invalid_argument", nil}, // no writer
		{"PUT", "/v1/kv/tasks/T1/claim?ephemeral=maybe", `{"value":1}`, "invalid_argument", []string{"X-Worker-Id", "w1"}},
		{"PUT", "/v1/kv/tasks/T1/claim?ephemeral=true&async=true", `{"value":1}`, "invalid_argument", []string{"X-Worker-Id", "w1"}},
		{"PATCH", "/v1/kv/tasks/T1/claim?ephemeral=true", `{"a":1}`, "no_heartbeat", []string{"X-Worker-Id", "w2"}},
	} {
		checkProblem(t, h.must(map[string]int{"invalid_argument": 400, "no_heartbeat": 409}[tt.code], tt.method, tt.path, tt.body, tt.headers...), tt.code)
	}
	h.must(404, "GET", "/v1/kv/tasks/T1/claim?consistent=true", "")
}

// TestEphemeralKeyLeavesEveryInstancesCache: a key bound on instance A and
// cached by instance B is gone from B's cached reads too once its writer's
// heartbeat expires (the reaper's delete is an event like any other).
func TestEphemeralKeyLeavesEveryInstancesCache(t *testing.T) {
	b := redistest.Real(t)
	a := newServerHarness(t, testserver.Options{Backend: &b})
	bb := newServerHarness(t, testserver.Options{Backend: &b})
	a.must(200, "PUT", "/v1/workers/w1/heartbeat", `{"ttl":1}`)
	a.must(200, "PUT", "/v1/kv/tasks/T1/claim?ephemeral=true", `{"value":"w1"}`, "X-Worker-Id", "w1")
	bb.settle()
	bb.must(200, "GET", "/v1/kv/tasks/T1/claim", "")
	hits := bb.srv.Cache.Stats().Hits
	bb.must(200, "GET", "/v1/kv/tasks/T1/claim", "")
	if bb.srv.Cache.Stats().Hits != hits+1 {
		t.Fatal("B did not serve the key from its cache")
	}
	for deadline := time.Now().Add(8 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if bb.do("GET", "/v1/kv/tasks/T1/claim", "").status == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("B still serves the key 8 s after a heartbeat of 1 s")
		}
	}
}
