package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
)

// startStoppable runs run() with args on a free port and returns its base
// URL and a function that shuts it down as SIGTERM would and waits for run
// to return.
func startStoppable(t *testing.T, args ...string) (string, func()) {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--addr", addr}, args...), func(string) string { return "" }, logs)
	}()
	base := "http://" + addr
	waitHealthy(t, base, done, logs)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("run did not return within 20 s of the shutdown")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	}
	t.Cleanup(stop)
	return base, stop
}

// call sends a request and decodes a JSON answer into a map.
func call(t *testing.T, method, url, body string, header ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return res.StatusCode, m
}

// TestDataFileKeepsStateAcrossRestarts: with --data-file, what the
// embedded Redis held before a graceful shutdown is there after a restart:
// keys with their versions, etags and expiries, a held lock and its fence,
// a counter, a queued message, a write that was still queued (?async=true)
// when the shutdown began, and the event log, which a watcher resumes from
// across the restart.
func TestDataFileKeepsStateAcrossRestarts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "memsync.data")
	// Saved only at shutdown, and async writes flushed only then too.
	args := []string{"--data-file", file, "--save-interval", "0", "--batch-interval", "1h"}
	base, stop := startStoppable(t, args...)

	code, put := call(t, "PUT", base+"/v1/kv/tasks/T1/state", `{"value":{"status":"running"}}`, "X-Worker-Id", "w1")
	if code != 200 {
		t.Fatalf("PUT: %d %v", code, put)
	}
	if code, _ = call(t, "PUT", base+"/v1/kv/tasks/T1/state", `{"value":{"status":"failed"}}`, "X-Worker-Id", "w2"); code != 200 {
		t.Fatalf("second PUT: %d", code)
	}
	code, before := call(t, "GET", base+"/v1/kv/tasks/T1/state?consistent=true", "")
	if code != 200 || before["siblings"] != float64(2) {
		t.Fatalf("GET: %d %v", code, before)
	}
	code, short := call(t, "PUT", base+"/v1/kv/tasks/T2/state", `{"value":1,"ttl":120}`)
	if code != 200 {
		t.Fatalf("PUT with ttl: %d %v", code, short)
	}
	code, lock := call(t, "POST", base+"/v1/locks/jobs/L1", `{"ttl_ms":60000}`, "X-Worker-Id", "w1")
	if code != 200 {
		t.Fatalf("lock: %d %v", code, lock)
	}
	if code, _ = call(t, "POST", base+"/v1/counters/jobs/done", `{"by":5}`); code != 200 {
		t.Fatalf("counter: %d", code)
	}
	if code, _ = call(t, "POST", base+"/v1/queues/jobs/messages", `{"value":{"task":"T9"}}`); code != 201 {
		t.Fatalf("enqueue: %d", code)
	}
	if code, _ = call(t, "PUT", base+"/v1/kv/tasks/T3/state?async=true", `{"value":"queued"}`); code != 202 {
		t.Fatalf("async PUT: %d", code)
	}
	lastEvent := lastEventID(t, base, "tasks/**", 2) // after T1's first: T1's second, T2
	stop()

	base, stop = startStoppable(t, args...)
	defer stop()
	code, after := call(t, "GET", base+"/v1/kv/tasks/T1/state?siblings=true", "")
	if code != 200 || after["etag"] != before["etag"] || after["siblings"] != float64(2) {
		t.Errorf("after the restart, GET = %d %v; want etag %v and 2 siblings", code, after, before["etag"])
	}
	code, got := call(t, "GET", base+"/v1/kv/tasks/T2/state", "")
	if code != 200 || got["expires_at"] != short["expires_at"] {
		t.Errorf("after the restart, the key with a TTL = %d %v; want expires_at %v", code, got, short["expires_at"])
	}
	if code, got = call(t, "GET", base+"/v1/kv/tasks/T3/state", ""); code != 200 || got["value"] != "queued" {
		t.Errorf("after the restart, the async write = %d %v; want it flushed before the save", code, got)
	}
	if code, got = call(t, "POST", base+"/v1/locks/jobs/L1", `{"ttl_ms":60000}`, "X-Worker-Id", "w2"); code != 409 {
		t.Errorf("after the restart, another worker's lock request = %d %v; want 409 (still held)", code, got)
	}
	if code, got = call(t, "DELETE", base+"/v1/locks/jobs/L1", "", "X-Lock-Token", lock["token"].(string)); code != 204 {
		t.Errorf("after the restart, releasing with the old token = %d %v", code, got)
	}
	if code, got = call(t, "POST", base+"/v1/locks/jobs/L1", `{"ttl_ms":60000}`, "X-Worker-Id", "w2"); code != 200 || got["fence"].(float64) <= lock["fence"].(float64) {
		t.Errorf("after the restart, the next grant = %d %v; want a fence above %v", code, got, lock["fence"])
	}
	if code, got = call(t, "GET", base+"/v1/counters/jobs/done", ""); code != 200 || got["value"] != float64(5) {
		t.Errorf("after the restart, the counter = %d %v; want 5", code, got)
	}
	if code, got = call(t, "POST", base+"/v1/queues/jobs/claim", `{"visibility_ms":30000}`); code != 200 {
		t.Errorf("after the restart, a claim = %d %v; want the message", code, got)
	} else if m, _ := got["messages"].([]any); len(m) != 1 || !strings.Contains(mustJSON(m[0]), `"task":"T9"`) {
		t.Errorf("after the restart, a claim = %v; want the message T9", got)
	}

	// A watcher resumes from its last event before the restart: the next
	// event it gets is the one written after.
	if code, _ = call(t, "PUT", base+"/v1/kv/tasks/T4/state", `{"value":"after"}`); code != 200 {
		t.Fatalf("PUT after restart: %d", code)
	}
	req, _ := http.NewRequest("GET", base+"/v1/watch?pattern=tasks/**", nil)
	req.Header.Set("Last-Event-ID", lastEvent)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var keys []string
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() && len(keys) < 2 {
		line := sc.Text()
		if strings.HasPrefix(line, "event: reset") {
			t.Fatalf("resuming from %s across the restart gave a reset", lastEvent)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var ev struct{ Key string }
			json.Unmarshal([]byte(data), &ev)
			keys = append(keys, ev.Key)
		}
	}
	// T3's async write was flushed at shutdown, after lastEvent was read.
	if strings.Join(keys, " ") != "tasks/T3/state tasks/T4/state" {
		t.Errorf("resumed watch delivered %v, want tasks/T3/state then tasks/T4/state", keys)
	}
}

// lastEventID replays the watch of pattern from after the first event
// (of a fresh server: id 1) and returns the id of the n-th event after it.
func lastEventID(t *testing.T, base, pattern string, n int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/watch?pattern="+pattern, nil)
	req.Header.Set("Last-Event-ID", "1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for seen := 0; sc.Scan(); {
		if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			if seen++; seen == n {
				return id
			}
		}
	}
	t.Fatalf("the watch of %s ended before its event %d: %v", pattern, n, sc.Err())
	return ""
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestImportDataMovesMakeRunToRedis: `memsync import-data` copies what a
// server with a data file held into a Redis server, and into a Redis
// Cluster, where memsync serves it on as it was: the key with its siblings
// and etag, the lock still held (and released with its token), the
// counter, the queued message. A Redis that holds memsync keys already is
// refused.
func TestImportDataMovesMakeRunToRedis(t *testing.T) {
	file := filepath.Join(t.TempDir(), "memsync.data")
	base, stop := startStoppable(t, "--data-file", file)
	for _, w := range []string{"w1", "w2"} {
		if code, _ := call(t, "PUT", base+"/v1/kv/tasks/T1/state", `{"value":"by `+w+`"}`, "X-Worker-Id", w); code != 200 {
			t.Fatalf("PUT: %d", code)
		}
	}
	_, before := call(t, "GET", base+"/v1/kv/tasks/T1/state?consistent=true", "")
	code, lock := call(t, "POST", base+"/v1/locks/jobs/L1", `{"ttl_ms":120000}`, "X-Worker-Id", "w1")
	if code != 200 {
		t.Fatalf("lock: %d %v", code, lock)
	}
	call(t, "POST", base+"/v1/counters/jobs/done", `{"by":7}`)
	call(t, "POST", base+"/v1/queues/jobs/messages", `{"value":"m1"}`)
	stop()

	if err := run(context.Background(), []string{"import-data", "--data-file", file}, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("import-data without a Redis: %v, want its usage", err)
	}
	targets := map[string]func(t *testing.T) string{
		"redis-server": func(t *testing.T) string { return "redis://" + redistest.Start(t, redistest.Options{}).Addr },
		"cluster":      func(t *testing.T) string { return clusterURL(redistest.StartCluster(t, 3)) },
	}
	for name, target := range targets {
		t.Run(name, func(t *testing.T) {
			url := target(t)
			var out syncBuffer
			imp := []string{"import-data", "--data-file", file, "--redis-url", url}
			if err := run(context.Background(), imp, func(string) string { return "" }, &out); err != nil {
				t.Fatalf("import-data: %v\n%s", err, out.String())
			}
			if err := run(context.Background(), imp, func(string) string { return "" }, &out); err == nil || !strings.Contains(err.Error(), "already holds memsync keys") {
				t.Errorf("a second import-data into the same Redis: %v", err)
			}

			base, stop := startStoppable(t, "--redis-url", url)
			defer stop()
			code, got := call(t, "GET", base+"/v1/kv/tasks/T1/state", "")
			if code != 200 || got["etag"] != before["etag"] || got["siblings"] != float64(2) {
				t.Errorf("imported key = %d %v; want etag %v, 2 siblings", code, got, before["etag"])
			}
			if code, got = call(t, "POST", base+"/v1/locks/jobs/L1", `{"ttl_ms":60000}`, "X-Worker-Id", "w2"); code != 409 {
				t.Errorf("imported lock, another worker's request = %d %v; want 409", code, got)
			}
			if code, got = call(t, "DELETE", base+"/v1/locks/jobs/L1", "", "X-Lock-Token", lock["token"].(string)); code != 204 {
				t.Errorf("imported lock released with its token = %d %v", code, got)
			}
			if code, got = call(t, "GET", base+"/v1/counters/jobs/done", ""); code != 200 || got["value"] != float64(7) {
				t.Errorf("imported counter = %d %v; want 7", code, got)
			}
			if code, got = call(t, "POST", base+"/v1/queues/jobs/claim", `{"visibility_ms":30000}`); code != 200 || !strings.Contains(mustJSON(got), `"value":"m1"`) {
				t.Errorf("claim of the imported queue = %d %v; want m1", code, got)
			}
		})
	}
}
