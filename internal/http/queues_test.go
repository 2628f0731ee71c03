package http_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
)

type claimed struct {
	Messages []struct {
		ID       string          `json:"id"`
		Value    json.RawMessage `json:"value"`
		Attempts int             `json:"attempts"`
		Receipt  string          `json:"receipt"`
	} `json:"messages"`
}

func (h *harness) claim(path, body string, headers ...string) claimed {
	h.t.Helper()
	var c claimed
	if err := json.Unmarshal(h.must(200, "POST", path, body, headers...).body, &c); err != nil {
		h.t.Fatal(err)
	}
	return c
}

func TestQueueOverHTTP(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		const q = "/v1/queues/jobs"
		var added struct {
			ID       string `json:"id"`
			Attempts int    `json:"attempts"`
		}
		if err := json.Unmarshal(h.must(201, "POST", q+"/messages", `{"value":{"task":"T1"}}`).body, &added); err != nil || len(added.ID) != 16 {
			t.Fatalf("enqueue: %+v, %v", added, err)
		}
		h.must(201, "POST", q+"/messages", `{"value":null}`)
		h.must(201, "POST", q+"/messages", `{"value":"later","delay_ms":3600000}`)
		if m := h.must(201, "POST", "/v1/queues/brief/messages", `{"value":1,"ttl_ms":60000}`).json(t); m["expires_at"].(float64)-m["enqueued_at"].(float64) != 60000 {
			t.Fatalf("enqueue with ttl_ms = %v, want expires_at 60 s after enqueued_at", m)
		}
		if s := h.must(200, "GET", q, "").json(t); s["visible"] != 2.0 || s["delayed"] != 1.0 || s["in_flight"] != 0.0 {
			t.Fatalf("stats = %v", s)
		}

		c := h.claim(q+"/claim", `{"visibility_ms":60000,"max":5}`, "X-Worker-Id", "w1")
		if len(c.Messages) != 2 || c.Messages[0].ID != added.ID || string(c.Messages[0].Value) != `{"task":"T1"}` ||
			string(c.Messages[1].Value) != `null` || c.Messages[0].Attempts != 1 || len(c.Messages[0].Receipt) != 32 {
			t.Fatalf("claim = %+v", c)
		}
		if none := h.claim(q+"/claim", `{"visibility_ms":60000,"wait_ms":20}`); len(none.Messages) != 0 {
			t.Fatalf("claim of nothing visible = %+v", none)
		}
		m0, m1 := c.Messages[0], c.Messages[1]
		e := h.must(200, "POST", q+"/messages/"+m0.ID+"/extend", `{"receipt":"`+m0.Receipt+`","visibility_ms":120000}`).json(t)
		if e["id"] != m0.ID || e["visible_at"].(float64) < float64(time.Now().Add(100*time.Second).UnixMilli()) {
			t.Fatalf("extend = %v", e)
		}
		h.must(204, "DELETE", q+"/messages/"+m0.ID, "", "X-Receipt", m0.Receipt)
		checkProblem(t, h.must(409, "DELETE", q+"/messages/"+m0.ID, "", "X-Receipt", m0.Receipt), "not_claimed")
		h.must(204, "POST", q+"/messages/"+m1.ID+"/release", `{"receipt":"`+m1.Receipt+`"}`)
		checkProblem(t, h.must(409, "POST", q+"/messages/"+m1.ID+"/extend", `{"receipt":"`+m1.Receipt+`","visibility_ms":1000}`), "not_claimed")
		again := h.claim(q+"/claim", `{"visibility_ms":60000}`)
		if len(again.Messages) != 1 || again.Messages[0].ID != m1.ID || again.Messages[0].Attempts != 2 {
			t.Fatalf("claim after release = %+v", again)
		}
		if p := h.must(200, "DELETE", q, "").json(t); p["purged"] != 2.0 {
			t.Fatalf("purge = %v, want the claimed and the delayed message", p)
		}
	})
}

// A message past its max_attempts is a dead letter: listed, paged, given
// back and dropped over HTTP; a keyed enqueue is replayed; the namespace's
// queues are listed.
func TestQueueDeadLettersOverHTTP(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		const q = "/v1/queues/mail"
		var ids []string
		for i := range 3 {
			r := h.must(201, "POST", q+"/messages", fmt.Sprintf(`{"value":%d,"max_attempts":1}`, i), "Idempotency-Key", fmt.Sprint("send-", i))
			if m := r.json(t); m["max_attempts"] != 1.0 || r.header.Get("Idempotent-Replayed") != "" {
				t.Fatalf("enqueue = %v %v", m, r.header)
			} else {
				ids = append(ids, m["id"].(string))
			}
		}
		again := h.must(201, "POST", q+"/messages", `{"value":0,"max_attempts":1}`, "Idempotency-Key", "send-0")
		if again.header.Get("Idempotent-Replayed") != "true" || again.json(t)["id"] != ids[0] {
			t.Fatalf("replayed enqueue = %s %v", again.body, again.header)
		}
		checkProblem(t, h.must(400, "POST", q+"/messages", `{"value":"other"}`, "Idempotency-Key", "send-0"), "invalid_argument")

		c := h.claim(q+"/claim", `{"visibility_ms":20,"max":3}`, "X-Worker-Id", "w7")
		if len(c.Messages) != 3 {
			t.Fatalf("claim = %+v", c)
		}
		time.Sleep(60 * time.Millisecond)
		if none := h.claim(q+"/claim", `{"visibility_ms":1000}`); len(none.Messages) != 0 {
			t.Fatalf("claim of dead messages = %+v", none)
		}
		if s := h.must(200, "GET", q, "").json(t); s["dead"] != 3.0 || s["visible"] != 0.0 {
			t.Fatalf("stats = %v", s)
		}
		var page struct {
			Dead     int `json:"dead"`
			Messages []struct {
				ID       string          `json:"id"`
				Value    json.RawMessage `json:"value"`
				Attempts int             `json:"attempts"`
				DeadAt   int64           `json:"dead_at"`
				Owner    string          `json:"owner"`
			} `json:"messages"`
			Cursor string `json:"cursor"`
		}
		if err := json.Unmarshal(h.must(200, "GET", q+"/dead?limit=2", "").body, &page); err != nil {
			t.Fatal(err)
		}
		if page.Dead != 3 || len(page.Messages) != 2 || page.Cursor != ids[1] || page.Messages[0].Owner != "w7" ||
			page.Messages[0].Attempts != 1 || string(page.Messages[1].Value) != "1" || page.Messages[0].DeadAt < time.Now().Add(-time.Minute).UnixMilli() {
			t.Fatalf("first page = %+v", page)
		}
		cursor := page.Cursor
		page.Cursor = ""
		if err := json.Unmarshal(h.must(200, "GET", q+"/dead?limit=2&cursor="+cursor, "").body, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Messages) != 1 || page.Messages[0].ID != ids[2] || page.Cursor != "" {
			t.Fatalf("second page = %+v", page)
		}
		h.must(204, "DELETE", q+"/dead/"+ids[2], "")
		checkProblem(t, h.must(404, "DELETE", q+"/dead/"+ids[2], ""), "not_found")
		if r := h.must(200, "POST", q+"/redrive", `{"ids":["`+ids[1]+`"]}`).json(t); r["redriven"] != 1.0 || r["dead"] != 1.0 {
			t.Fatalf("redrive of one = %v", r)
		}
		if r := h.must(200, "POST", q+"/redrive", "").json(t); r["redriven"] != 1.0 || r["dead"] != 0.0 {
			t.Fatalf("redrive of the rest = %v", r)
		}
		back := h.claim(q+"/claim", `{"visibility_ms":60000,"max":5}`)
		// Both, in the order given back or, the same millisecond, of ids.
		if len(back.Messages) != 2 || back.Messages[0].ID+back.Messages[1].ID != ids[1]+ids[0] && back.Messages[0].ID+back.Messages[1].ID != ids[0]+ids[1] ||
			back.Messages[0].Attempts != 1 || back.Messages[1].Attempts != 1 {
			t.Fatalf("claim after redrive = %+v", back)
		}

		h.must(201, "POST", "/v1/queues/build/messages", `{"value":"b"}`)
		var list struct {
			Queues []map[string]any `json:"queues"`
		}
		if err := json.Unmarshal(h.must(200, "GET", "/v1/queues", "").body, &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Queues) != 2 || list.Queues[0]["queue"] != "build" || list.Queues[0]["visible"] != 1.0 ||
			list.Queues[1]["queue"] != "mail" || list.Queues[1]["in_flight"] != 2.0 {
			t.Fatalf("queues = %+v", list)
		}
		if err := json.Unmarshal(h.must(200, "GET", "/v1/queues?prefix=ma", "").body, &list); err != nil || len(list.Queues) != 1 {
			t.Fatalf("queues with prefix ma = %+v, %v", list, err)
		}
	})
}

// A claim waiting on one instance gets the message added on another.
func TestQueueClaimWaitsAcrossInstances(t *testing.T) {
	b := redistest.Real(t)
	a := newHarness(t, b)
	bb := newHarness(t, b)
	got := make(chan claimed, 1)
	go func() {
		r, err := bb.exchange("POST", "/v1/queues/jobs/claim", `{"visibility_ms":60000,"wait_ms":10000}`)
		var c claimed
		if err == nil {
			err = json.Unmarshal(r.body, &c)
		}
		if err != nil || r.status != 200 {
			t.Errorf("waiting claim: %v %d %s", err, r.status, r.body)
		}
		got <- c
	}()
	time.Sleep(100 * time.Millisecond)
	a.must(201, "POST", "/v1/queues/jobs/messages", `{"value":"hello"}`)
	select {
	case c := <-got:
		if len(c.Messages) != 1 || string(c.Messages[0].Value) != `"hello"` {
			t.Fatalf("waiting claim got %+v", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting claim did not get the message within 5 s")
	}
}

func TestQueueBadInput(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	id := fmt.Sprintf("%016d", 1)
	for _, tt := range []struct {
		method, path, body, code string
		headers                  []string
	}{
		{"POST", "/v1/queues/jobs/messages", `{}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/messages", `{"value":1,"delay_ms":-1}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/messages", `{"value":1,"delay_ms":999999999999}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/messages", `{"value":1,"color":"red"}`, "invalid_json", nil},
		{"POST", "/v1/queues/../messages", `{"value":1}`, "invalid_key", nil},
		{"POST", "/v1/queues/jobs/claim", `{}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/claim", `{"visibility_ms":1000,"max":101}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/claim", `{"visibility_ms":1000,"wait_ms":3600000}`, "invalid_argument", nil},
		{"DELETE", "/v1/queues/jobs/messages/" + id, ``, "invalid_argument", nil},
		{"DELETE", "/v1/queues/jobs/messages/12", ``, "invalid_argument", []string{"X-Receipt", "r"}},
		{"DELETE", "/v1/queues/jobs/messages/" + id, ``, "not_claimed", []string{"X-Receipt", "r"}},
		{"POST", "/v1/queues/jobs/messages/" + id + "/release", `{}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/messages/" + id + "/extend", `{"receipt":"r"}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/messages", `{"value":1,"max_attempts":1001}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/messages", `{"value":1,"delay_ms":5000,"ttl_ms":5000}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/messages", `{"value":1,"ttl_ms":-1}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/messages", `{"value":1}`, "invalid_argument", []string{"Idempotency-Key", "a b"}},
		{"GET", "/v1/queues/jobs/dead?limit=0", ``, "invalid_argument", nil},
		{"GET", "/v1/queues/jobs/dead?limit=x", ``, "invalid_argument", nil},
		{"GET", "/v1/queues/jobs/dead?cursor=12", ``, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/redrive", `{"limit":0}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/redrive", `{"ids":["12"]}`, "invalid_argument", nil},
		{"POST", "/v1/queues/jobs/redrive", `[]`, "invalid_json", nil},
		{"DELETE", "/v1/queues/jobs/dead/" + id, ``, "not_found", nil},
		{"DELETE", "/v1/queues/jobs/dead/x", ``, "invalid_argument", nil},
	} {
		r := h.do(tt.method, tt.path, tt.body, tt.headers...)
		if r.status < 400 || r.status >= 500 {
			t.Errorf("%s %s %s = %d, want a 4xx", tt.method, tt.path, tt.body, r.status)
			continue
		}
		checkProblem(t, r, tt.code)
	}
	if s := h.must(200, "GET", "/v1/queues/jobs", "").json(t); s["visible"] != 0.0 {
		t.Fatalf("refused requests added messages: %v", s)
	}
}
