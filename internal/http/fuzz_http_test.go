package http_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/api"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/spectest"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/testserver"
)

// fuzzRoutes are the routes FuzzRequests sends to: {k} takes the fuzzed
// key, {id} a segment of it.
var fuzzRoutes = []struct{ method, path string }{
	{"GET", "/v1/kv/{k}"},
	{"PUT", "/v1/kv/{k}"},
	{"DELETE", "/v1/kv/{k}"},
	{"GET", "/v1/keys"},
	{"POST", "/v1/batch"},
	{"POST", "/v1/sync"},
	{"POST", "/v1/locks/{k}"},
	{"GET", "/v1/locks/{k}"},
	{"DELETE", "/v1/locks/{k}"},
	{"GET", "/v1/locks"},
	{"PUT", "/v1/tasks/{id}/state"},
	{"GET", "/v1/tasks/{id}/progress"},
	{"POST", "/v1/tasks/{id}/lock"},
	{"POST", "/v1/tasks/{id}/lock/refresh"},
	{"DELETE", "/v1/tasks/{id}/lock"},
	{"GET", "/v1/tasks/{id}/agents"},
	{"PUT", "/v1/tasks/{id}/agents/{id}"},
	{"GET", "/v1/workers"},
	{"PUT", "/v1/workers/{id}/heartbeat"},
	{"PUT", "/v1/coordination/queue"},
	{"POST", "/v1/cache/invalidate"},
	{"GET", "/v1/stats"},
	{"GET", "/v1/watch"}, // its stream is closed once its head is checked
	{"DELETE", "/v1/keys"},
	{"PATCH", "/v1/kv/{k}"}, // a body that starts with [ as a JSON Patch
	{"PATCH", "/v1/tasks/{id}/progress"},
	{"POST", "/v1/semaphores/{k}"}, // a key ending in /refresh refreshes
	{"GET", "/v1/semaphores/{k}"},
	{"DELETE", "/v1/semaphores/{k}"},
	{"GET", "/v1/semaphores"},
	{"POST", "/v1/queues/{id}/messages"},
	{"POST", "/v1/queues/{id}/claim"},
	{"DELETE", "/v1/queues/{id}/messages/0000000000000001"}, // X-Receipt takes the idempotency key
	{"GET", "/v1/queues/{id}"},
	{"GET", "/v1/queues"},
	{"GET", "/v1/queues/{id}/dead"},
	{"POST", "/v1/queues/{id}/redrive"},
	{"DELETE", "/v1/queues/{id}/dead/0000000000000001"},
	{"POST", "/v1/counters/{k}"},
	{"PUT", "/v1/counters/{k}"},
	{"GET", "/v1/counters/{k}"},
	{"DELETE", "/v1/counters/{k}"},
	{"GET", "/v1/counters"},
	{"POST", "/v1/barriers/{k}"}, // a wait for parties that never come ends at the client's timeout, as a lock's
	{"GET", "/v1/barriers/{k}"},
	{"DELETE", "/v1/barriers/{k}"},
	{"GET", "/v1/barriers"},
}

// FuzzRequests sends requests made of the fuzzer's strings (a route, a key,
// a query, a body and the headers that steer writes, reads and locks) to a server
// on miniredis, or on a real redis-server with MEMSYNC_FUZZ_REDIS=real
// (its Lua differs at the edges). Whatever they hold, the server answers below 500, every
// error as application/problem+json with a code, and every exchange on a
// documented route (a key may make another: tasks//state) as
// api/openapi.yaml documents it.
func FuzzRequests(f *testing.F) {
	b := redistest.Mini(f)
	if os.Getenv("MEMSYNC_FUZZ_REDIS") == "real" {
		b = redistest.Real(f)
	}
	srv := testserver.StartWith(f, testserver.Options{
		Backend: &b,
		Rules:   []store.Rule{{Pattern: "lists/**", Strategy: store.Union}},
		MaxTTL:  time.Hour,
	})
	spec := &spectest.Recorder{TB: f}
	validator := spectest.New(spec, api.Spec)
	client, plain := validator.Client(), &http.Client{}
	client.Timeout, plain.Timeout = 5*time.Second, 5*time.Second // a lock may be waited for
	seeds := []struct {
		route                                   uint8
		key, query, body, ifMatch, worker, idem string
	}{
		{0, "tasks/T1/state", "", "", "", "", ""},
		{0, "lists/L/x", "resolve=union&siblings=true&consistent=true&ns=other", "", "", "", ""},
		{0, "jobs/J1/result", "wait_ms=20", "", "", "", ""},
		{0, "tasks/T1/state", "wait_ms=20&consistent=true", "", "*", "", ""},
		{7, "jobs/J1", "ns=other", "", "", "", ""},
		{17, "", "limit=1", "", "", "", ""},
		{1, "tasks/T1/state", "async=true", `{"value":{"a":1},"ttl":60}`, "", "w1", "i1"},
		{1, "lists/L/x", "", `{"value":[1],"context":{"w1":1}}`, `*`, "w2", ""},
		{2, "tasks/T1/state", "", "", `"e"`, "", "d1"},
		{3, "", "prefix=tasks/&limit=2&cursor=zz", "", "", "", ""},
		{4, "", "", `{"atomic":true,"ops":[{"op":"put","key":"a/b","value":1,"if_match":"*"},{"op":"delete","key":"a/c"},{"op":"get","key":"a/b"}]}`, "", "w1", "b1"},
		{6, "jobs/J1", "", `{"ttl_ms":1000,"wait_ms":10}`, "", "w1", "l1"},
		{8, "jobs/J1", "", "", "", "", ""},
		{10, "T1", "", `{"value":"x"}`, "", "", ""},
		{18, "w1", "", `{"ttl":5}`, "", "", ""},
		{20, "", "", `{"pattern":"tasks/**"}`, "", "", ""},
		{22, "", "pattern=tasks/*/state&ns=other", "", "", "", "7"},
		{22, "", "regex=^tasks/T[0-9]+$&last_event_id=3", "", "", "", ""},
		{22, "", "pattern=workers/*/heartbeat&types=expire,delete", "", "", "", ""},
		{22, "", "pattern=tasks/*/state&initial=true&types=put", "", "", "", ""},
		{23, "", "prefix=tasks/T1/", "", "", "", ""},
		{3, "", "prefix=tasks/&entries=true&resolve=merge&siblings=true", "", "", "", ""},
		{24, "tasks/T1/state", "ttl=60", `{"status":"done","step":null}`, "", "w1", ""},
		{25, "T1", "", `{"progress":40}`, "", "w1", ""},
		{24, "coordination/queue", "", `[{"op":"test","path":"/owner","value":"w1"},{"op":"add","path":"/pending/-","value":"T3"}]`, "*", "w2", ""},
		{26, "jobs/J1", "", `{"limit":2,"ttl_ms":1000,"wait_ms":10}`, "", "w1", "s1"},
		{26, "jobs/J1/refresh", "", `{"token":"s1","ttl_ms":1000}`, "", "", ""},
		{27, "jobs/J1", "ns=other", "", "", "", ""},
		{28, "jobs/J1", "force=true", "", "", "", "s1"},
		{29, "", "prefix=jobs/&ns=other", "", "", "", ""},
		{24, "jobs/J1", "", `[{"op":"add","path":"/n","value":1}]`, "*", "w1", "p1"},
		{30, "jobs", "", `{"value":{"task":"T1"},"delay_ms":0}`, "", "", ""},
		{31, "jobs", "ns=other", `{"visibility_ms":1000,"wait_ms":10,"max":2}`, "", "w1", ""},
		{32, "jobs", "", "", "", "", "0123456789abcdef0123456789abcdef"},
		{33, "jobs", "", "", "", "", ""},
		{1, "tasks/T1/claim", "ephemeral=true", `{"value":"w1"}`, "", "w1", "i2"},
		{24, "tasks/T1/state", "ephemeral=true&ttl=60", `{"owner":"w1"}`, "", "w1", ""},
	}
	for _, s := range seeds {
		f.Add(s.route, s.key, s.query, s.body, s.ifMatch, s.worker, s.idem)
	}
	f.Fuzz(func(t *testing.T, route uint8, key, query, body, ifMatch, worker, idem string) {
		spec.Take() // a request that failed on the client's side last time
		r := fuzzRoutes[int(route)%len(fuzzRoutes)]
		// Each segment escaped, as a client sends it: a '?' in a key is
		// part of the key.
		segs := strings.Split(key, "/")
		for i, seg := range segs {
			segs[i] = url.PathEscape(seg)
		}
		path := strings.NewReplacer("{k}", strings.Join(segs, "/"), "{id}", segs[0]).Replace(r.path)
		u, err := url.Parse(srv.URL + path)
		q, qerr := url.ParseQuery(query)
		if err != nil || qerr != nil {
			return // no client could send it
		}
		u.RawQuery = q.Encode() // as a client sends it: net/http refuses a raw space
		req, err := http.NewRequest(r.method, u.String(), strings.NewReader(body))
		if err != nil {
			return
		}
		switch {
		case r.method == "PATCH" && strings.HasPrefix(body, "["):
			req.Header.Set("Content-Type", "application/json-patch+json")
		case body != "":
			req.Header.Set("Content-Type", "application/json")
		}
		condition := "If-Match"
		if r.method == "GET" {
			condition = "If-None-Match" // a read's: 304, and what a blocking read waits on
		}
		for name, value := range map[string]string{condition: ifMatch, "X-Worker-Id": worker, "Idempotency-Key": idem, "X-Lock-Token": idem, "X-Receipt": idem, "Last-Event-ID": idem} {
			// Without the whitespace around it, which is not part of a
			// field's value (RFC 9110 5.5): the server never sees it.
			if value = strings.Trim(value, " \t"); value != "" {
				req.Header.Set(name, value)
			}
		}
		send := client
		if _, _, err := validator.FindRoute(req); err != nil {
			send = plain
		}
		resp, err := send.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) && (ue.Timeout() || strings.Contains(err.Error(), "invalid header")) {
				return // a lock waited for; a header no client sends
			}
			t.Fatalf("%s %s: %v", r.method, u, err)
		}
		var data []byte
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
			data, _ = io.ReadAll(resp.Body) // a stream has no end
		}
		resp.Body.Close()
		what := fmt.Sprintf("%s %s (body %q) → %d %s", r.method, u, body, resp.StatusCode, data)
		if resp.StatusCode >= 500 {
			t.Fatalf("%s", what)
		}
		if resp.StatusCode >= 400 {
			mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			var p struct {
				Code string `json:"code"`
			}
			if mt != "application/problem+json" || json.Unmarshal(data, &p) != nil || p.Code == "" {
				t.Fatalf("%s: want application/problem+json with a code, got %q", what, resp.Header.Get("Content-Type"))
			}
		}
		if errs := spec.Take(); len(errs) > 0 {
			t.Fatalf("%s: %s", what, strings.Join(errs, "; "))
		}
	})
}
