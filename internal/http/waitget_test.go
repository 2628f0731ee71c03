package http_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/testserver"
)

// A read with wait_ms waits while its answer would be 304 or (without
// If-None-Match) 404, and answers as soon as the key changes, on this
// instance or another; or, when nothing changes, what it would have
// answered at once, after wait_ms.
func TestGetWaitsForAChange(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		a := newServerHarness(t, testserver.Options{Backend: &b})
		other := newServerHarness(t, testserver.Options{Backend: &b}) // another instance on the same Redis
		etag := func(r response) string { return r.header.Get("ETag") }

		// waitThen starts a waiting read on a, waits until a's hub holds
		// its watcher, runs change and returns the read's answer.
		waitThen := func(path string, headers []string, change func()) response {
			t.Helper()
			// The earlier reads' watchers close just after their answers.
			watching := func(n int) bool { return a.srv.Hub.Stats().Watchers == n }
			for deadline := time.Now().Add(5 * time.Second); !watching(0); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("GET %s: the earlier reads' watchers still open after 5 s", path)
				}
			}
			got := make(chan response, 1)
			go func() { got <- a.do("GET", path, "", headers...) }()
			for deadline := time.Now().Add(5 * time.Second); !watching(1); time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("GET %s: not waiting after 5 s", path)
				}
			}
			change()
			select {
			case r := <-got:
				return r
			case <-time.After(10 * time.Second):
				t.Fatalf("GET %s: no answer 10 s after the change", path)
				return response{}
			}
		}

		// Created, on another instance: the read that found nothing
		// answers with it.
		r := waitThen("/v1/kv/jobs/J1/result?wait_ms=30000", nil, func() {
			other.must(200, "PUT", "/v1/kv/jobs/J1/result", `{"value":"done"}`)
		})
		if r.status != 200 || !strings.Contains(string(r.body), `"value":"done"`) {
			t.Errorf("waiting for a key to be created: %d %s, want 200 with the value", r.status, r.body)
		}

		// Changed: the read whose If-None-Match held answers with the new
		// entry; on a typed route too.
		first := etag(a.must(200, "PUT", "/v1/tasks/T1/state", `{"value":"running"}`))
		r = waitThen("/v1/tasks/T1/state?wait_ms=30000", []string{"If-None-Match", first}, func() {
			other.must(200, "PUT", "/v1/tasks/T1/state", `{"value":"done"}`)
		})
		if r.status != 200 || etag(r) == first || !strings.Contains(string(r.body), `"value":"done"`) {
			t.Errorf("waiting for a change: %d %s (ETag %s), want 200 with the new entry", r.status, r.body, etag(r))
		}

		// Deleted: 404.
		second := etag(a.must(200, "GET", "/v1/kv/tasks/T1/state?consistent=true", ""))
		r = waitThen("/v1/kv/tasks/T1/state?wait_ms=30000", []string{"If-None-Match", "*"}, func() {
			a.must(204, "DELETE", "/v1/kv/tasks/T1/state", "")
		})
		if r.status != 404 {
			t.Errorf("waiting on %s for a delete: %d %s, want 404", second, r.status, r.body)
		}

		// Nothing changes: after wait_ms, what it would have answered.
		third := etag(a.must(200, "PUT", "/v1/kv/jobs/J2/state", `{"value":1}`))
		for _, tt := range []struct {
			path    string
			headers []string
			status  int
		}{
			{"/v1/kv/jobs/J2/state?wait_ms=150", []string{"If-None-Match", third}, 304},
			{"/v1/kv/jobs/J9/state?wait_ms=150", nil, 404},
		} {
			start := time.Now()
			if r := a.do("GET", tt.path, "", tt.headers...); r.status != tt.status || time.Since(start) < 150*time.Millisecond {
				t.Errorf("GET %s: %d after %v, want %d after 150 ms", tt.path, r.status, time.Since(start), tt.status)
			}
		}
		// An answer that is neither comes at once; bad waits are refused.
		a.must(200, "GET", "/v1/kv/jobs/J2/state?wait_ms=60000", "", "If-None-Match", first)
		a.must(404, "GET", "/v1/kv/jobs/J9/state?wait_ms=60000", "", "If-None-Match", "*")
		for _, bad := range []string{"-1", "60001", "1.5", "soon"} {
			if p := a.must(400, "GET", "/v1/kv/jobs/J2/state?wait_ms="+bad, "").json(t); p["code"] != "invalid_argument" {
				t.Errorf("wait_ms=%s: code %v, want invalid_argument", bad, p["code"])
			}
		}
		if n := a.srv.Hub.Stats().Watchers; n != 0 {
			t.Errorf("%d watchers left open by the reads", n)
		}

		// How soon a read waiting on a hears of a write acknowledged by
		// the other instance: reported, not asserted.
		var lat []time.Duration
		cur := etag(a.must(200, "PUT", "/v1/kv/jobs/J3/state", `{"value":0}`))
		n := 100
		if b.Mini != nil {
			n = 20 // miniredis under the race detector is slow
		}
		for i := range n {
			var acked time.Time
			r := waitThen("/v1/kv/jobs/J3/state?wait_ms=30000", []string{"If-None-Match", cur}, func() {
				other.must(200, "PUT", "/v1/kv/jobs/J3/state", fmt.Sprintf(`{"value":%d}`, i+1))
				acked = time.Now()
			})
			lat = append(lat, time.Since(acked))
			if r.status != 200 || etag(r) == cur {
				t.Fatalf("write %d: %d %s", i+1, r.status, r.body)
			}
			cur = etag(r)
		}
		slices.Sort(lat)
		t.Logf("another instance's acknowledgement → the waiting read's answer, over %d writes: p50 %s, p99 %s, max %s",
			len(lat), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	})
}
