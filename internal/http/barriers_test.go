package http_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
)

type barrierState struct {
	Barrier    string   `json:"barrier"`
	Generation int64    `json:"generation"`
	Parties    int      `json:"parties"`
	Tripped    bool     `json:"tripped"`
	Arrived    []string `json:"arrived"`
}

// Three workers on two instances wait at a barrier over HTTP and pass it
// together; the barrier then reads as its next generation.
func TestBarrierOverHTTP(t *testing.T) {
	b := redistest.Real(t)
	hs := []*harness{newHarness(t, b), newHarness(t, b)}
	const path = "/v1/barriers/phases/p1"
	checkProblem(t, hs[0].must(404, "GET", path, ""), "not_found")
	var wg sync.WaitGroup
	got := make([]barrierState, 3)
	for i := range got {
		wg.Go(func() {
			r, err := hs[i%2].exchange("POST", path, `{"parties":3,"wait_ms":10000}`, "X-Worker-Id", fmt.Sprint("w", i))
			if err == nil && r.status == 200 {
				err = json.Unmarshal(r.body, &got[i])
			} else if err == nil {
				err = fmt.Errorf("status %d: %s", r.status, r.body)
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i, st := range got {
		if !st.Tripped || st.Generation != 0 || st.Parties != 3 || fmt.Sprint(st.Arrived) != "[w0 w1 w2]" || st.Barrier != "phases/p1" {
			t.Errorf("w%d: %+v", i, st)
		}
	}
	var st barrierState
	if err := json.Unmarshal(hs[1].must(200, "GET", path, "").body, &st); err != nil || st.Generation != 1 || len(st.Arrived) != 0 {
		t.Fatalf("GET after the trip = %+v, %v", st, err)
	}
	// A wait that ends first answers tripped false; its arrival stays.
	if err := json.Unmarshal(hs[0].must(200, "POST", path, `{"parties":3,"wait_ms":20}`, "X-Worker-Id", "w0").body, &st); err != nil ||
		st.Tripped || fmt.Sprint(st.Arrived) != "[w0]" {
		t.Fatalf("a wait that ended = %+v, %v", st, err)
	}
	checkProblem(t, hs[1].must(409, "POST", path, `{"parties":2}`, "X-Worker-Id", "w1"), "limit_mismatch")
	// A keyed arrival sent again after its generation passed learns so.
	hs[0].must(200, "POST", "/v1/barriers/phases/p2", `{"parties":2}`, "X-Worker-Id", "w0", "Idempotency-Key", "p2-w0")
	hs[1].must(200, "POST", "/v1/barriers/phases/p2", `{"parties":2}`, "X-Worker-Id", "w1")
	if err := json.Unmarshal(hs[1].must(200, "POST", "/v1/barriers/phases/p2", `{"parties":2}`, "X-Worker-Id", "w0", "Idempotency-Key", "p2-w0").body, &st); err != nil ||
		!st.Tripped || st.Generation != 0 || fmt.Sprint(st.Arrived) != "[w0 w1]" {
		t.Fatalf("keyed arrival sent again = %+v, %v", st, err)
	}
	// Both barriers are listed, from the other instance too.
	var list struct {
		Barriers []struct {
			Barrier    string
			Generation int64
		}
	}
	if err := json.Unmarshal(hs[0].must(200, "GET", "/v1/barriers?prefix=phases/", "").body, &list); err != nil || len(list.Barriers) != 2 ||
		list.Barriers[0].Barrier != "phases/p1" || list.Barriers[1].Barrier != "phases/p2" || list.Barriers[1].Generation != 1 {
		t.Fatalf("barrier listing = %+v, %v", list, err)
	}
	// An admin's reset breaks a generation: its waiter is answered 409.
	done := make(chan response, 1)
	go func() {
		r, err := hs[0].exchange("POST", "/v1/barriers/phases/p3", `{"parties":2,"wait_ms":10000}`, "X-Worker-Id", "w0")
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	for deadline := time.Now().Add(5 * time.Second); hs[1].do("GET", "/v1/barriers/phases/p3", "").status != 200; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("w0 did not arrive within 5 s")
		}
	}
	if r := hs[1].must(200, "DELETE", "/v1/barriers/phases/p3", "").json(t); r["broken_generation"] != 0.0 || r["dropped"] != 1.0 {
		t.Fatalf("reset = %v", r)
	}
	checkProblem(t, <-done, "barrier_broken")
	checkProblem(t, hs[1].must(404, "DELETE", "/v1/barriers/phases/none", ""), "not_found")
}

func TestBarrierBadInput(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	for _, tt := range []struct {
		path, body, code string
		headers          []string
	}{
		{"/v1/barriers/p", `{"parties":2}`, "invalid_argument", nil}, // no party
		{"/v1/barriers/p", `{"parties":0}`, "invalid_argument", []string{"X-Worker-Id", "w1"}},
		{"/v1/barriers/p", `{"parties":2,"wait_ms":-1}`, "invalid_argument", []string{"X-Worker-Id", "w1"}},
		{"/v1/barriers/p", `{"parties":2,"wait_ms":3600000}`, "invalid_argument", []string{"X-Worker-Id", "w1"}},
		{"/v1/barriers/p", `{"parties":2,"ttl_ms":7200000}`, "invalid_argument", []string{"X-Worker-Id", "w1"}},
		{"/v1/barriers/p", `{"parties":"2"}`, "invalid_json", []string{"X-Worker-Id", "w1"}},
		{"/v1/barriers/a//b", `{"parties":2}`, "invalid_key", []string{"X-Worker-Id", "w1"}},
	} {
		r := h.do("POST", tt.path, tt.body, tt.headers...)
		if r.status < 400 || r.status >= 500 {
			t.Errorf("POST %s %s = %d, want a 4xx", tt.path, tt.body, r.status)
			continue
		}
		checkProblem(t, r, tt.code)
	}
	checkProblem(t, h.must(404, "GET", "/v1/barriers/p", ""), "not_found")
}
