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
