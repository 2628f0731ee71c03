package http_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/testserver"
)

// worker is one element of GET /v1/workers.
type worker struct {
	ID            string          `json:"id"`
	Status        json.RawMessage `json:"status"`
	Capacity      json.RawMessage `json:"capacity"`
	LastHeartbeat int64           `json:"last_heartbeat"`
	ExpiresAt     int64           `json:"expires_at"`
}

func (h *harness) workers() map[string]worker {
	h.t.Helper()
	var body struct {
		Workers []worker `json:"workers"`
	}
	if err := json.Unmarshal(h.must(200, "GET", "/v1/workers", "").body, &body); err != nil {
		h.t.Fatal(err)
	}
	out := make(map[string]worker, len(body.Workers))
	for _, w := range body.Workers {
		out[w.ID] = w
	}
	return out
}

func TestWorkers(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))

	before := time.Now().UnixMilli()
	hb := h.must(200, "PUT", "/v1/workers/w1/heartbeat", "").json(t)
	after := time.Now().UnixMilli()
	ttl := testserver.DefaultHeartbeatTTL.Milliseconds()
	if exp := int64(hb["expires_at"].(float64)); hb["worker"] != "w1" || exp < before+ttl-1 || exp > after+ttl+1 {
		t.Errorf("heartbeat without a body = %v, want worker w1 expiring after the default %d ms", hb, ttl)
	}
	hb = h.must(200, "PUT", "/v1/workers/w2/heartbeat", `{"ttl":60}`).json(t)
	// A TTL of a minute or more ends on a whole second (rounded up).
	if exp := int64(hb["expires_at"].(float64)); exp < before+60000 || exp > time.Now().UnixMilli()+61000 || exp%1000 != 0 {
		t.Errorf("heartbeat with ttl 60 = %v, want expiry in 60 s, on a whole second", hb)
	}

	h.must(200, "PUT", "/v1/workers/w1/status", `{"value":{"state":"busy","task":"T1"}}`, "X-Worker-Id", "w1")
	h.must(200, "PUT", "/v1/workers/w1/capacity", `{"value":{"slots":4}}`, "X-Worker-Id", "w1")
	h.must(200, "PUT", "/v1/workers/w3/status", `{"value":"idle"}`, "X-Worker-Id", "w3") // no heartbeat
	if got := jsonString(h.must(200, "GET", "/v1/workers/w1/status", "").json(t)["value"]); got != `{"state":"busy","task":"T1"}` {
		t.Errorf("status = %s", got)
	}
	e := h.must(200, "GET", "/v1/workers/w1/capacity", "").json(t)
	if jsonString(e["value"]) != `{"slots":4}` || e["key"] != "workers/w1/capacity" || e["strategy"] != "lww" {
		t.Errorf("capacity entry = %v", e)
	}
	h.must(404, "GET", "/v1/workers/w2/status", "")

	ws := h.workers()
	if len(ws) != 2 {
		t.Fatalf("workers = %v, want w1 and w2 (w3 has no heartbeat)", ws)
	}
	w1, w2 := ws["w1"], ws["w2"]
	if string(w1.Status) != `{"state":"busy","task":"T1"}` || string(w1.Capacity) != `{"slots":4}` ||
		w1.LastHeartbeat < before || w1.LastHeartbeat > after || w1.ExpiresAt <= w1.LastHeartbeat {
		t.Errorf("w1 = %+v", w1)
	}
	if w2.Status != nil || w2.Capacity != nil || w2.ExpiresAt < w2.LastHeartbeat+59000 {
		t.Errorf("w2 = %+v, want no status or capacity and a 60 s expiry", w2)
	}

	// A new heartbeat moves last_heartbeat and expires_at on.
	time.Sleep(5 * time.Millisecond)
	h.must(200, "PUT", "/v1/workers/w1/heartbeat", `{}`)
	if again := h.workers()["w1"]; again.LastHeartbeat <= w1.LastHeartbeat || again.ExpiresAt <= w1.ExpiresAt {
		t.Errorf("after a second heartbeat w1 = %+v, was %+v", again, w1)
	}

	for _, tt := range []struct{ name, path, body, code string }{
		{"ttl 0", "/v1/workers/w1/heartbeat", `{"ttl":0}`, "invalid_argument"},
		{"negative ttl", "/v1/workers/w1/heartbeat", `{"ttl":-1}`, "invalid_argument"},
		{"ttl above the maximum", "/v1/workers/w1/heartbeat", `{"ttl":90000}`, "invalid_argument"},
		{"fractional ttl", "/v1/workers/w1/heartbeat", `{"ttl":1.5}`, "invalid_json"},
		{"unknown field", "/v1/workers/w1/heartbeat", `{"tll":5}`, "invalid_json"},
		{"bad worker id", "/v1/workers/a%20b/heartbeat", ``, "invalid_key"},
		{"bad worker id for status", "/v1/workers/a%20b/status", `{"value":1}`, "invalid_key"},
		{"status without value", "/v1/workers/w1/status", `{}`, "invalid_argument"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkProblem(t, h.must(400, "PUT", tt.path, tt.body), tt.code)
		})
	}
	h.must(400, "GET", "/v1/workers?ns=a%2Fb", "")
}

// A worker that stops heartbeating leaves the list, and an expire event for
// its heartbeat is published, both within the TTL plus a second.
func TestWorkerHeartbeatLapses(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ps := b.Client.Subscribe(ctx, store.ChangeChannel)
		defer ps.Close()
		if _, err := ps.Receive(ctx); err != nil { // the subscription is live
			t.Fatal(err)
		}
		expired := make(chan time.Time, 1)
		go func() {
			for msg := range ps.Channel() {
				evs, _ := store.ParseMessage(msg.Payload)
				for _, ev := range evs {
					if ev.Type == store.EventExpire && ev.Key == "workers/lapse/heartbeat" && ev.Namespace == "task-sentinel" {
						expired <- time.Now()
						return
					}
				}
			}
		}()

		sent := time.Now()
		h.must(200, "PUT", "/v1/workers/lapse/heartbeat", `{"ttl":1}`)
		h.must(200, "PUT", "/v1/workers/stays/heartbeat", `{"ttl":60}`)
		if _, ok := h.workers()["lapse"]; !ok {
			t.Fatal("a worker is not listed right after its heartbeat")
		}
		deadline := sent.Add(2 * time.Second) // TTL + 1 s
		for {
			ws := h.workers()
			if _, ok := ws["lapse"]; !ok {
				if _, ok := ws["stays"]; !ok {
					t.Error("the worker with a 60 s heartbeat left the list too")
				}
				t.Logf("left the list %v after its heartbeat", time.Since(sent).Round(time.Millisecond))
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a worker whose 1 s heartbeat lapsed is still listed 2 s later")
			}
			time.Sleep(20 * time.Millisecond)
		}
		select {
		case at := <-expired:
			t.Logf("expire event %v after the heartbeat", at.Sub(sent).Round(time.Millisecond))
			if at.After(deadline) {
				t.Errorf("expire event %v after the heartbeat, want within 2 s", at.Sub(sent))
			}
		case <-time.After(time.Until(deadline)):
			t.Fatal("no expire event for workers/lapse/heartbeat within TTL + 1 s")
		}
	})
}
