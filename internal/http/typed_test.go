package http_test

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
)

// concurrently sends one PUT per writer at once, without context, so that
// the writes are concurrent siblings; every one must be 200.
func (h *harness) concurrently(path string, writes map[string]string) {
	h.t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan string, len(writes))
	for writer, body := range writes {
		wg.Go(func() {
			<-start
			r, err := h.exchange("PUT", path, body, "X-Worker-Id", writer)
			if err != nil || r.status != 200 {
				errs <- writer + ": " + string(r.body)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for e := range errs {
		h.t.Errorf("PUT %s as %s", path, e)
	}
}

func TestTaskState(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	put := h.must(200, "PUT", "/v1/tasks/T1/state", `{"value":{"status":"queued"}}`, "X-Worker-Id", "w1")
	version := jsonString(put.json(t)["version"])
	h.must(200, "PUT", "/v1/tasks/T1/state", `{"value":{"status":"running"},"context":`+version+`}`, "X-Worker-Id", "w2")
	e := h.must(200, "GET", "/v1/tasks/T1/state", "")
	m := e.json(t)
	if jsonString(m["value"]) != `{"status":"running"}` || m["key"] != "tasks/T1/state" || m["strategy"] != "lww" ||
		m["conflict"] != false || m["siblings"] != float64(1) {
		t.Errorf("GET state = %s", e.body)
	}
	// The typed route and /v1/kv are one key.
	if kv := h.must(200, "GET", "/v1/kv/tasks/T1/state", ""); kv.header.Get("ETag") != e.header.Get("ETag") {
		t.Errorf("ETag via /v1/kv %q, via the typed route %q", kv.header.Get("ETag"), e.header.Get("ETag"))
	}
	h.must(412, "PUT", "/v1/tasks/T1/state", `{"value":1}`, "If-Match", put.header.Get("ETag"))
	h.must(412, "PUT", "/v1/tasks/T1/state", `{"value":1}`, "If-None-Match", "*")
	h.must(200, "PUT", "/v1/tasks/T1/state", `{"value":{"status":"done"}}`, "If-Match", e.header.Get("ETag"))
	h.must(404, "GET", "/v1/tasks/T404/state", "")
	checkProblem(t, h.must(400, "GET", "/v1/tasks/a%20b/state", ""), "invalid_key")
	checkProblem(t, h.must(400, "GET", "/v1/tasks/T1/state?resolve=newest", ""), "invalid_argument")
}

func TestTaskProgress(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		h.concurrently("/v1/tasks/T1/progress", map[string]string{
			"w1": `{"value":{"progress":70,"status":"late"}}`,
			"w2": `{"value":{"progress":40,"status":"early"}}`,
		})
		m := h.must(200, "GET", "/v1/tasks/T1/progress", "").json(t)
		if jsonString(m["value"]) != `{"progress":70,"status":"late"}` || m["strategy"] != "max" ||
			m["siblings"] != float64(2) || m["conflict"] != true {
			t.Errorf("progress after concurrent 70 and 40 = %v, want 70 of two siblings", m)
		}

		for _, tt := range []struct{ name, body string }{
			{"above 100", `{"value":{"progress":150}}`},
			{"below 0", `{"value":{"progress":-1}}`},
			{"missing", `{"value":{"status":"running"}}`},
			{"not a number", `{"value":{"progress":"50"}}`},
			{"status not a string", `{"value":{"progress":50,"status":7}}`},
			{"not an object", `{"value":50}`},
			{"null", `{"value":null}`},
		} {
			t.Run(tt.name, func(t *testing.T) {
				checkProblem(t, h.must(400, "PUT", "/v1/tasks/T2/progress", tt.body), "invalid_argument")
			})
		}
		h.must(404, "GET", "/v1/tasks/T2/progress", "") // nothing was written
		h.must(200, "PUT", "/v1/tasks/T2/progress", `{"value":{"progress":100}}`)
		h.must(200, "PUT", "/v1/tasks/T2/progress", `{"value":{"progress":0,"status":"restarted","eta":5}}`)
	})
}

func TestTaskAgents(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		h.must(200, "PUT", "/v1/tasks/T1/agents/planner", `{"value":{"role":"plan"}}`, "X-Worker-Id", "w1")
		h.concurrently("/v1/tasks/T1/agents/coder", map[string]string{
			"w1": `{"value":{"role":"code","files":["a.go"]}}`,
			"w2": `{"value":{"done":false,"files":["b.go"]}}`,
		})
		// A deeper key under the agents is not an agent.
		h.must(200, "PUT", "/v1/kv/tasks/T1/agents/planner/notes", `{"value":"deeper"}`)
		h.must(200, "PUT", "/v1/tasks/T2/agents/other", `{"value":{}}`)

		coder := h.must(200, "GET", "/v1/tasks/T1/agents/coder", "").json(t)
		v, _ := coder["value"].(map[string]any)
		files, _ := v["files"].([]any)
		slices.SortFunc(files, func(a, b any) int { return strings.Compare(a.(string), b.(string)) })
		if coder["strategy"] != "merge" || v["role"] != "code" || v["done"] != false || jsonString(files) != `["a.go","b.go"]` {
			t.Errorf("coder = %v, want the merge of both writers", coder)
		}

		var list struct {
			Agents []struct {
				ID    string         `json:"id"`
				Entry map[string]any `json:"entry"`
			} `json:"agents"`
		}
		if err := json.Unmarshal(h.must(200, "GET", "/v1/tasks/T1/agents", "").body, &list); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, a := range list.Agents {
			ids = append(ids, a.ID)
			if a.Entry["key"] != "tasks/T1/agents/"+a.ID {
				t.Errorf("agent %s has the entry of %v", a.ID, a.Entry["key"])
			}
		}
		if jsonString(ids) != `["coder","planner"]` {
			t.Errorf("agents of T1 = %v, want coder and planner, sorted", ids)
		}
		if got := list.Agents[1].Entry["value"]; jsonString(got) != `{"role":"plan"}` {
			t.Errorf("planner's entry value = %v", got)
		}
		if got := h.must(200, "GET", "/v1/tasks/T3/agents", "").json(t)["agents"]; jsonString(got) != `[]` {
			t.Errorf("agents of a task without any = %s, want []", jsonString(got))
		}
		checkProblem(t, h.must(400, "GET", "/v1/tasks/a%20b/agents", ""), "invalid_key")
		checkProblem(t, h.must(400, "PUT", "/v1/tasks/T1/agents/a%20b", `{"value":1}`), "invalid_key")
	})
}

func TestCoordination(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newHarness(t, b)
		h.concurrently("/v1/coordination/queue", map[string]string{
			"w1": `{"value":{"pending":["t1","t2"],"processing":[]}}`,
			"w2": `{"value":{"pending":["t2","t3"],"processing":["t0"]}}`,
		})
		m := h.must(200, "GET", "/v1/coordination/queue", "").json(t)
		q, _ := m["value"].(map[string]any)
		pending, _ := q["pending"].([]any)
		slices.SortFunc(pending, func(a, b any) int { return strings.Compare(a.(string), b.(string)) })
		if m["strategy"] != "merge" || m["conflict"] != true || jsonString(pending) != `["t1","t2","t3"]` ||
			jsonString(q["processing"]) != `["t0"]` {
			t.Errorf("queue after two concurrent writers = %v, want their merge", m)
		}
		for _, k := range []string{"assignments", "metrics"} {
			h.must(200, "PUT", "/v1/coordination/"+k, `{"value":{"a":1}}`, "X-Worker-Id", "w1")
			h.must(200, "PUT", "/v1/coordination/"+k, `{"value":{"b":2}}`, "X-Worker-Id", "w2")
			e := h.must(200, "GET", "/v1/coordination/"+k, "").json(t)
			if jsonString(e["value"]) != `{"a":1,"b":2}` || e["key"] != "coordination/"+k {
				t.Errorf("%s = %v, want the merge of both writers", k, e)
			}
		}
		h.must(404, "GET", "/v1/coordination/queue?ns=other", "")
	})
}

func TestProgressShapeIsCheckedOnEveryRoute(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	h.must(400, "PUT", "/v1/kv/tasks/T1/progress", `{"value":{"progress":500}}`)
	h.must(200, "PUT", "/v1/kv/tasks/T1/progress", `{"value":{"progress":50}}`)
	h.must(200, "PUT", "/v1/kv/tasks/T1/progress/extra", `{"value":"not a progress key"}`)
}

func TestRefreshIsNotALockName(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	for _, path := range []string{"/v1/locks/refresh", "/v1/locks/a%2Frefresh"} {
		if r := h.do("POST", path, `{"ttl_ms":1000}`); r.status != 400 {
			t.Errorf("POST %s = %d %s, want 400", path, r.status, r.body)
		}
	}
}

// Every typed key takes a PATCH on its typed route as on /v1/kv: the
// entry's key is the typed one, and progress keeps its shape.
func TestTypedRoutesTakePatches(t *testing.T) {
	h := newHarness(t, redistest.Mini(t))
	for _, tt := range []struct{ route, key string }{
		{"/v1/tasks/T1/state", "tasks/T1/state"},
		{"/v1/tasks/T1/progress", "tasks/T1/progress"},
		{"/v1/tasks/T1/agents/a1", "tasks/T1/agents/a1"},
		{"/v1/workers/w1/status", "workers/w1/status"},
		{"/v1/workers/w1/capacity", "workers/w1/capacity"},
		{"/v1/coordination/queue", "coordination/queue"},
		{"/v1/coordination/assignments", "coordination/assignments"},
		{"/v1/coordination/metrics", "coordination/metrics"},
	} {
		h.must(200, "PUT", tt.route, `{"value":{"progress":10,"status":"a"}}`)
		e := h.must(200, "PATCH", tt.route, `[{"op":"replace","path":"/progress","value":20}]`, "Content-Type", jsonPatch).json(t)
		if e["key"] != tt.key || jsonString(e["value"]) != `{"progress":20,"status":"a"}` {
			t.Errorf("PATCH %s = %v", tt.route, e)
		}
	}
	h.must(400, "PATCH", "/v1/tasks/T1/progress", `{"progress":101}`)
	h.must(400, "PATCH", "/v1/tasks/a%20b/state", `{"x":1}`)
}
