package http_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/testserver"
)

// initialPut is the data of an initial event.
type initialPut struct {
	ID      *uint64         `json:"id"`
	Type    string          `json:"type"`
	Key     string          `json:"key"`
	Version map[string]int  `json:"version"`
	Writer  string          `json:"writer"`
	Value   json.RawMessage `json:"value"`
	Initial bool            `json:"initial"`
}

// readInitial reads a stream's initial state up to its synced event, and
// returns the puts and the synced event.
func (s *stream) readInitial() ([]initialPut, sseEvent) {
	s.t.Helper()
	var puts []initialPut
	for {
		ev := s.nextEvent()
		if ev.event == "synced" {
			return puts, ev
		}
		var p initialPut
		if err := json.Unmarshal([]byte(ev.data), &p); err != nil || ev.event != "put" || ev.id != "" || p.ID != nil || !p.Initial || p.Type != "put" {
			s.t.Fatalf("initial event %+v (%v): want a put marked initial, without an id", ev, err)
		}
		puts = append(puts, p)
	}
}

// ?initial=true sends the current state of every matching key, in key
// order, then synced with the id the changes come after; the changes made
// since follow without a gap. A resume (Last-Event-ID) sends no state.
func TestWatchInitialState(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newServerHarness(t, testserver.Options{Backend: &b})
		h.must(200, "PUT", "/v1/kv/tasks/T2/state", `{"value":"queued"}`, "X-Worker-Id", "w1")
		h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":{"status":"running"}}`, "X-Worker-Id", "w1")
		h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":{"status":"failed"}}`, "X-Worker-Id", "w2") // siblings: lww
		h.must(200, "PUT", "/v1/kv/tasks/T1/progress", `{"value":{"progress":5}}`)                        // not matched
		h.must(200, "PUT", "/v1/kv/tasks/T3/state", `{"value":"`+strings.Repeat("x", 17<<10)+`"}`)        // too large to carry
		h.must(200, "PUT", "/v1/kv/tasks/T4/state?ns=other", `{"value":1}`)                               // another namespace
		h.settle()

		s := h.watch("/v1/watch?pattern=tasks/*/state&initial=true")
		puts, synced := s.readInitial()
		var keys []string
		for _, p := range puts {
			keys = append(keys, p.Key)
		}
		if got := strings.Join(keys, ","); got != "tasks/T1/state,tasks/T2/state,tasks/T3/state" {
			t.Fatalf("initial keys = %s", got)
		}
		if p := puts[0]; string(p.Value) != `{"status":"failed"}` || p.Version["w1"] != 1 || p.Version["w2"] != 1 || p.Writer != "w2" {
			t.Errorf("initial state of a key with siblings = %+v, want the resolved value and merged version", p)
		}
		if string(puts[1].Value) != `"queued"` || puts[2].Value != nil {
			t.Errorf("initial values = %s and %d bytes, want \"queued\" and none above 16 KiB", puts[1].Value, len(puts[2].Value))
		}
		var sync struct {
			ID   uint64 `json:"id"`
			Type string `json:"type"`
			Keys int    `json:"keys"`
		}
		if err := json.Unmarshal([]byte(synced.data), &sync); err != nil || synced.id != strconv.FormatUint(sync.ID, 10) || sync.Type != "synced" || sync.Keys != 3 {
			t.Fatalf("synced = %+v (%v)", synced, err)
		}
		newest := h.srv.Hub.Stats().LastID
		if sync.ID != newest {
			t.Errorf("synced id %d, want the newest event %d", sync.ID, newest)
		}

		// The changes made since follow, from the id after synced's.
		h.must(204, "DELETE", "/v1/kv/tasks/T2/state", "")
		if c := s.nextChange(); c.Type != "delete" || c.Key != "tasks/T2/state" || c.ID != sync.ID+1 {
			t.Errorf("first change = %+v, want the delete, id %d", c, sync.ID+1)
		}

		// A resume sends no state: it has it.
		h.must(200, "PUT", "/v1/kv/tasks/T5/state", `{"value":5}`)
		r := h.watch("/v1/watch?pattern=tasks/*/state&initial=true", "Last-Event-ID", synced.id)
		if c := r.nextChange(); c.Type != "delete" || c.ID != sync.ID+1 {
			t.Errorf("resumed stream starts with %+v, want the delete", c)
		}

		// No key yet: synced alone; a types list without put is refused.
		none := h.watch("/v1/watch?pattern=jobs/**&initial=true")
		if puts, synced := none.readInitial(); len(puts) != 0 || !strings.Contains(synced.data, `"keys":0`) {
			t.Errorf("initial state of nothing: %d puts, synced %+v", len(puts), synced)
		}
		if p := h.must(400, "GET", "/v1/watch?initial=true&types=delete", "").json(t); p["code"] != "invalid_argument" {
			t.Errorf("initial with types=delete: %v", p)
		}
		h.must(400, "GET", "/v1/watch?initial=maybe", "")
	})
}

// The initial state goes past a listing page (1,000 keys) and follows a
// regex too. On redis-server: the embedded Redis under -race takes
// seconds to list and read a thousand keys.
func TestWatchInitialStateOfManyKeys(t *testing.T) {
	h := newServerHarness(t, testserver.Options{Backend: new(redistest.Real(t))})
	for start := 0; start < 1100; start += 550 {
		var ops []string
		for i := start; i < start+550; i++ {
			ops = append(ops, fmt.Sprintf(`{"op":"put","key":"jobs/j%04d","value":%d}`, i, i))
		}
		h.must(200, "POST", "/v1/batch", `{"ops":[`+strings.Join(ops, ",")+`]}`)
	}
	s := h.watch("/v1/watch?regex=%5Ejobs/j1&initial=true") // ^jobs/j1: j1000…j1099
	puts, synced := s.readInitial()
	if len(puts) != 100 || puts[0].Key != "jobs/j1000" || puts[99].Key != "jobs/j1099" || string(puts[99].Value) != "1099" {
		t.Fatalf("%d initial puts, from %v", len(puts), puts[:min(1, len(puts))])
	}
	if !strings.Contains(synced.data, `"keys":100`) {
		t.Errorf("synced = %+v", synced)
	}
	all := h.watch("/v1/watch?initial=true")
	if puts, _ := all.readInitial(); len(puts) != 1100 {
		t.Errorf("every key: %d initial puts, want 1100", len(puts))
	}
}
