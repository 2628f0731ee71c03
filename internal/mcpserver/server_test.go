package mcpserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/mcpserver"
	"github.com/memsync/memsync/internal/testserver"
)

// agent is one MCP session, as an agent's host holds it, on a memsync
// server.
type agent struct {
	t       *testing.T
	session *mcp.ClientSession
	stop    func(context.Context)
}

// connect starts an MCP server for worker on the memsync server at url and
// connects a client session to it in memory.
func connect(t *testing.T, url, worker string) *agent {
	t.Helper()
	ctx := context.Background()
	c, err := client.New(url, client.WithWorkerID(worker))
	if err != nil {
		t.Fatal(err)
	}
	srv, stop := mcpserver.New(c, "task-sentinel")
	st, ct := mcp.NewInMemoryTransports()
	ss, err := srv.Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	session, err := mcp.NewClient(&mcp.Implementation{Name: "test-host"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		session.Close()
		ss.Wait()
	})
	return &agent{t: t, session: session, stop: stop}
}

// call calls a tool and returns its structured result, or the text of the
// tool error it ended in.
func (a *agent) call(name string, args map[string]any) (map[string]any, string) {
	a.t.Helper()
	res, err := a.session.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		a.t.Fatalf("%s: protocol error: %v", name, err)
	}
	if res.IsError {
		var text []string
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				text = append(text, tc.Text)
			}
		}
		return nil, strings.Join(text, " ")
	}
	out, ok := res.StructuredContent.(map[string]any)
	if !ok {
		a.t.Fatalf("%s: structured content %T", name, res.StructuredContent)
	}
	return out, ""
}

// must calls a tool that must succeed.
func (a *agent) must(name string, args map[string]any) map[string]any {
	a.t.Helper()
	out, errText := a.call(name, args)
	if errText != "" {
		a.t.Fatalf("%s %v: %s", name, args, errText)
	}
	return out
}

func TestToolsAreListed(t *testing.T) {
	srv := testserver.Start(t)
	a := connect(t, srv.URL, "agent-1")
	res, err := a.session.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
		if tool.Description == "" || tool.InputSchema == nil {
			t.Errorf("tool %s has no description or input schema", tool.Name)
		}
	}
	slices.Sort(names)
	want := []string{"barrier_arrive", "counter_increment", "kv_delete", "kv_get", "kv_list", "kv_patch", "kv_put", "lock_acquire",
		"lock_release", "memory_usage", "queue_ack", "queue_claim", "queue_dead_letters", "queue_enqueue", "queue_redrive", "queue_stats",
		"semaphore_acquire", "workers_active"}
	if !slices.Equal(names, want) {
		t.Fatalf("tools %v, want %v", names, want)
	}
}

// memory_usage answers the design document's client: keys given with the
// namespace in front, store, retrieve, list, search and delete.
func TestMemoryUsageAsTheSeedsClientCallsIt(t *testing.T) {
	srv := testserver.Start(t)
	a := connect(t, srv.URL, "agent-1")
	stored := a.must("memory_usage", map[string]any{"action": "store", "key": "task-sentinel/tasks/T1/state",
		"namespace": "task-sentinel", "value": map[string]any{"status": "running"}, "ttl": 3600})
	e := stored["entry"].(map[string]any)
	if e["key"] != "tasks/T1/state" || e["version"].(map[string]any)["agent-1"] != 1.0 || e["expires_at"] == nil {
		t.Fatalf("store = %v", stored)
	}
	a.must("memory_usage", map[string]any{"action": "store", "key": "tasks/T2/state", "value": "queued"})
	a.must("memory_usage", map[string]any{"action": "store", "key": "workers/agent-1/status", "value": "idle"})
	got := a.must("memory_usage", map[string]any{"action": "retrieve", "key": "task-sentinel/tasks/T1/state"})
	if got["found"] != true || fmt.Sprint(got["entry"].(map[string]any)["value"]) != "map[status:running]" {
		t.Fatalf("retrieve = %v", got)
	}
	if got := a.must("memory_usage", map[string]any{"action": "retrieve", "key": "tasks/T9/state"}); got["found"] != false {
		t.Fatalf("retrieve of a missing key = %v", got)
	}
	if got := a.must("memory_usage", map[string]any{"action": "list", "key": "tasks/"}); fmt.Sprint(got["keys"]) != "[tasks/T1/state tasks/T2/state]" {
		t.Fatalf("list = %v", got)
	}
	for _, tt := range []struct{ pattern, want string }{
		{"tasks/*/state", "[tasks/T1/state tasks/T2/state]"},
		{"**/status", "[workers/agent-1/status]"},
		{"tasks/T1/*", "[tasks/T1/state]"},
	} {
		if got := a.must("memory_usage", map[string]any{"action": "search", "key": tt.pattern}); fmt.Sprint(got["keys"]) != tt.want {
			t.Errorf("search %s = %v, want %s", tt.pattern, got["keys"], tt.want)
		}
	}
	if got := a.must("memory_usage", map[string]any{"action": "delete", "key": "task-sentinel/tasks/T1/state"}); got["found"] != true {
		t.Fatalf("delete = %v", got)
	}
	if got := a.must("memory_usage", map[string]any{"action": "delete", "key": "tasks/T1/state"}); got["found"] != false {
		t.Fatalf("second delete = %v", got)
	}
	for _, bad := range []map[string]any{
		{"action": "rename", "key": "tasks/T1/state"},
		{"action": "retrieve", "key": "tasks/T1/state", "namespace": "elsewhere"},
		{"action": "store", "key": "tasks//state", "value": 1},
	} {
		if _, errText := a.call("memory_usage", bad); errText == "" {
			t.Errorf("memory_usage %v: no error", bad)
		}
	}
}

// Two agents write one key: a compare-and-set with a stale etag fails,
// a patch merges, the versions say who wrote what.
func TestKeysShareStateBetweenAgents(t *testing.T) {
	srv := testserver.Start(t)
	a, b := connect(t, srv.URL, "agent-a"), connect(t, srv.URL, "agent-b")
	first := a.must("kv_put", map[string]any{"key": "tasks/T1/state", "value": map[string]any{"owner": "agent-a"}})
	b.must("kv_put", map[string]any{"key": "tasks/T1/state", "value": map[string]any{"owner": "agent-b"},
		"context": first["version"], "if_match": first["etag"]})
	if _, errText := a.call("kv_put", map[string]any{"key": "tasks/T1/state", "value": 1, "if_match": first["etag"]}); !strings.Contains(errText, "precondition_failed") {
		t.Fatalf("compare-and-set with a stale etag: %q, want precondition_failed", errText)
	}
	patched := a.must("kv_patch", map[string]any{"key": "tasks/T1/state", "merge": map[string]any{"step": 2}})
	if fmt.Sprint(patched["value"]) != "map[owner:agent-b step:2]" {
		t.Fatalf("patch = %v", patched)
	}
	got := b.must("kv_get", map[string]any{"key": "tasks/T1/state", "consistent": true})
	if v := got["version"].(map[string]any); v["agent-a"] != 2.0 || v["agent-b"] != 1.0 {
		t.Fatalf("get = %v", got)
	}
	// A read waits for another agent's write rather than polling.
	if got := b.must("kv_get", map[string]any{"key": "tasks/T1/state", "if_none_match": got["etag"], "wait_ms": 50}); got["unchanged"] != true {
		t.Fatalf("get of an unchanged key = %v, want unchanged", got)
	}
	changed := make(chan map[string]any, 1)
	go func() {
		// call, not must: Fatal belongs to the test's goroutine.
		got, errText := b.call("kv_get", map[string]any{"key": "tasks/T1/state", "if_none_match": got["etag"], "wait_ms": 10000})
		if errText != "" {
			got = map[string]any{"error": errText}
		}
		changed <- got
	}()
	time.Sleep(100 * time.Millisecond)
	a.must("kv_patch", map[string]any{"key": "tasks/T1/state", "merge": map[string]any{"step": 3}})
	select {
	case got := <-changed:
		if v, _ := got["value"].(map[string]any); got["unchanged"] == true || v["step"] != 3.0 {
			t.Fatalf("waiting get = %v, want step 3", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting get did not answer the change within 5 s")
	}
	if got := b.must("kv_list", map[string]any{"prefix": "tasks/"}); fmt.Sprint(got["keys"]) != "[tasks/T1/state]" {
		t.Fatalf("list = %v", got)
	}
	if _, errText := b.call("kv_delete", map[string]any{"key": "tasks/T1/state", "if_match": first["etag"]}); !strings.Contains(errText, "precondition_failed") {
		t.Fatalf("conditional delete with a stale etag: %q", errText)
	}
	if got := b.must("kv_delete", map[string]any{"key": "tasks/T1/state"}); got["deleted"] != true {
		t.Fatalf("delete = %v", got)
	}
	if _, errText := b.call("kv_get", map[string]any{"key": "tasks/T1/state"}); !strings.Contains(errText, "not_found") {
		t.Fatalf("get after delete: %q", errText)
	}
}

// A lock taken by one agent holds against another until released; kept,
// it outlives its TTL; the session's end releases what it held.
func TestLocksBetweenAgents(t *testing.T) {
	srv := testserver.Start(t)
	a, b := connect(t, srv.URL, "agent-a"), connect(t, srv.URL, "agent-b")
	held := a.must("lock_acquire", map[string]any{"name": "tasks/T1", "ttl_ms": 1000, "keep": true})
	if held["token"] == "" || held["fence"].(float64) < 1 {
		t.Fatalf("acquire = %v", held)
	}
	time.Sleep(2 * time.Second) // past the TTL twice: only refreshes keep it
	if _, errText := b.call("lock_acquire", map[string]any{"name": "tasks/T1", "ttl_ms": 1000}); !strings.Contains(errText, "lock_held") {
		t.Fatalf("second agent's acquire of a kept lock: %q, want lock_held", errText)
	}
	if _, errText := b.call("lock_release", map[string]any{"token": held["token"]}); errText == "" {
		t.Fatal("another session released a lock it does not hold")
	}
	if got := a.must("lock_release", map[string]any{"token": held["token"]}); got["released"] != true {
		t.Fatalf("release = %v", got)
	}
	next := b.must("lock_acquire", map[string]any{"name": "tasks/T1", "ttl_ms": 60000, "wait_ms": 1000})
	if next["fence"].(float64) <= held["fence"].(float64) {
		t.Fatalf("fences %v then %v, want increasing", held["fence"], next["fence"])
	}
	// Semaphores: two permits, a third holder is refused until one goes.
	p1 := a.must("semaphore_acquire", map[string]any{"name": "apis/search", "limit": 2, "ttl_ms": 60000})
	b.must("semaphore_acquire", map[string]any{"name": "apis/search", "limit": 2, "ttl_ms": 60000})
	if _, errText := b.call("semaphore_acquire", map[string]any{"name": "apis/search", "limit": 2, "ttl_ms": 60000}); !strings.Contains(errText, "semaphore_full") {
		t.Fatalf("a third permit of two: %q, want semaphore_full", errText)
	}
	a.must("lock_release", map[string]any{"token": p1["token"]})
	b.must("semaphore_acquire", map[string]any{"name": "apis/search", "limit": 2, "ttl_ms": 60000, "wait_ms": 1000})

	// The session ends: its lock goes at once, not when its 60 s lease ends.
	b.stop(context.Background())
	if got := a.must("lock_acquire", map[string]any{"name": "tasks/T1", "ttl_ms": 1000}); got["token"] == "" {
		t.Fatalf("acquire after the holder's session ended = %v", got)
	}
}

// Queue messages pass from one agent to another; counters count keyed
// increments once; agents see each other among the active workers.
func TestQueuesCountersAndWorkers(t *testing.T) {
	srv := testserver.Start(t)
	a, b := connect(t, srv.URL, "agent-a"), connect(t, srv.URL, "agent-b")
	a.must("queue_enqueue", map[string]any{"queue": "jobs", "value": map[string]any{"task": "T1"}, "idempotency_key": "T1"})
	a.must("queue_enqueue", map[string]any{"queue": "jobs", "value": map[string]any{"task": "T1"}, "idempotency_key": "T1"})
	claimed := b.must("queue_claim", map[string]any{"queue": "jobs", "visibility_ms": 60000, "wait_ms": 1000, "max": 5})
	msgs := claimed["messages"].([]any)
	if len(msgs) != 1 {
		t.Fatalf("claim = %v, want the one message", claimed)
	}
	m := msgs[0].(map[string]any)
	if fmt.Sprint(m["value"]) != "map[task:T1]" || m["attempts"] != 1.0 {
		t.Fatalf("message = %v", m)
	}
	if _, errText := a.call("queue_ack", map[string]any{"receipt": m["receipt"]}); errText == "" {
		t.Fatal("a session acked a message another claimed")
	}
	if got := b.must("queue_ack", map[string]any{"receipt": m["receipt"]}); got["id"] != m["id"] {
		t.Fatalf("ack = %v", got)
	}
	if got := b.must("queue_claim", map[string]any{"queue": "jobs", "visibility_ms": 60000}); len(got["messages"].([]any)) != 0 {
		t.Fatalf("claim after the ack = %v", got)
	}

	for range 2 {
		a.must("counter_increment", map[string]any{"name": "jobs/done", "idempotency_key": "T1-done"})
	}
	if got := b.must("counter_increment", map[string]any{"name": "jobs/done", "by": 2}); got["value"] != 3.0 {
		t.Fatalf("counter = %v, want 3 (1 once, then 2)", got)
	}

	// Two agents meet at a barrier.
	met := make(chan map[string]any, 1)
	go func() {
		got, errText := b.call("barrier_arrive", map[string]any{"name": "phases/p1", "parties": 2, "wait_ms": 10000})
		if errText != "" {
			got = map[string]any{"error": errText}
		}
		met <- got
	}()
	if got := a.must("barrier_arrive", map[string]any{"name": "phases/p1", "parties": 2, "wait_ms": 10000}); got["tripped"] != true ||
		fmt.Sprint(got["arrived"]) != "[agent-a agent-b]" {
		t.Fatalf("barrier = %v", got)
	}
	if got := <-met; got["tripped"] != true || got["generation"] != 0.0 {
		t.Fatalf("the other agent's barrier = %v", got)
	}

	a.must("workers_active", map[string]any{"heartbeat": true, "ttl": 30})
	got := b.must("workers_active", map[string]any{"heartbeat": true})
	var ws []string
	raw, _ := json.Marshal(got["workers"])
	_ = json.Unmarshal(raw, &ws)
	if !slices.Equal(ws, []string{"agent-a", "agent-b"}) {
		t.Fatalf("workers = %v", ws)
	}
}

// A supervising agent finds a poison message among the dead letters, sees
// who claimed it last, and gives it back.
func TestDeadLettersBetweenAgents(t *testing.T) {
	srv := testserver.Start(t)
	worker, supervisor := connect(t, srv.URL, "agent-w"), connect(t, srv.URL, "agent-s")
	worker.must("queue_enqueue", map[string]any{"queue": "crawl", "value": map[string]any{"url": "bad"}, "max_attempts": 1})
	worker.must("queue_enqueue", map[string]any{"queue": "crawl", "value": map[string]any{"url": "good"}})
	first := worker.must("queue_claim", map[string]any{"queue": "crawl", "visibility_ms": 60000})["messages"].([]any)[0].(map[string]any)
	worker.must("queue_ack", map[string]any{"receipt": first["receipt"], "release": true})
	next := worker.must("queue_claim", map[string]any{"queue": "crawl", "visibility_ms": 60000})["messages"].([]any)
	if len(next) != 1 || fmt.Sprint(next[0].(map[string]any)["value"]) != "map[url:good]" {
		t.Fatalf("second claim = %v, want the good message", next)
	}
	// Its one attempt spent, the bad message goes to the dead letters when
	// the next claim finds it, and that claim gets nothing.
	if none := worker.must("queue_claim", map[string]any{"queue": "crawl", "visibility_ms": 60000})["messages"].([]any); len(none) != 0 {
		t.Fatalf("third claim = %v, want nothing", none)
	}

	stats := supervisor.must("queue_stats", map[string]any{"queue": "crawl"})
	if got := fmt.Sprint(stats["queues"]); got != "[map[dead:1 delayed:0 in_flight:1 queue:crawl visible:0]]" {
		t.Errorf("queue_stats = %s", got)
	}
	if all := supervisor.must("queue_stats", map[string]any{"prefix": "cr"}); len(all["queues"].([]any)) != 1 {
		t.Errorf("queue_stats by prefix = %v", all)
	}
	dead := supervisor.must("queue_dead_letters", map[string]any{"queue": "crawl"})
	msgs := dead["messages"].([]any)
	if dead["dead"] != 1.0 || len(msgs) != 1 {
		t.Fatalf("queue_dead_letters = %v", dead)
	}
	m := msgs[0].(map[string]any)
	if m["id"] != first["id"] || m["owner"] != "agent-w" || m["attempts"] != 1.0 || fmt.Sprint(m["value"]) != "map[url:bad]" || m["dead_at"] == "" {
		t.Errorf("dead letter = %v, want %v claimed once by agent-w", m, first["id"])
	}
	if got := supervisor.must("queue_redrive", map[string]any{"queue": "crawl", "ids": []string{m["id"].(string)}}); got["redriven"] != 1.0 || got["left"] != 0.0 {
		t.Errorf("queue_redrive = %v", got)
	}
	again := supervisor.must("queue_claim", map[string]any{"queue": "crawl", "visibility_ms": 60000})["messages"].([]any)
	if len(again) != 1 || again[0].(map[string]any)["id"] != first["id"] {
		t.Errorf("claim after the redrive = %v, want the bad message back", again)
	}
}
