package client_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// mirrored reports whether m holds key with value want (JSON), or, for
// want "", does not hold key.
func mirrored(m *client.Mirror, key, want string) func() bool {
	return func() bool {
		e, ok := m.Get(key)
		if want == "" {
			return !ok
		}
		return ok && string(e.Value) == want
	}
}

// A mirror against a server: the initial state, then every change, a
// value too large for its event included; Close keeps the copy.
func TestMirrorAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	for key, v := range map[string]string{"tasks/T1/state": "one", "tasks/T2/state": "two", "tasks/T1/notes": "not mirrored"} {
		if _, err := c.Put(ctx, key, v); err != nil {
			t.Fatal(err)
		}
	}
	m, err := c.Mirror(ctx, "tasks/*/state")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Synced():
	case <-time.After(5 * time.Second):
		t.Fatal("not synced in 5 s")
	}
	if got := m.Snapshot(); len(got) != 2 || string(got["tasks/T1/state"].Value) != `"one"` || string(got["tasks/T2/state"].Value) != `"two"` {
		t.Fatalf("synced copy = %v", got)
	}
	<-m.Changed() // the state replaced the empty copy
	if _, err := c.Put(ctx, "tasks/T4/state", "four"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Changed():
		if !mirrored(m, "tasks/T4/state", `"four"`)() {
			t.Error("Changed came before the change was in the copy")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Changed in 5 s after a put")
	}
	big := strings.Repeat("x", 20<<10)
	if _, err := c.Put(ctx, "tasks/T3/state", big); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "tasks/T1/state"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "tasks/T2/state", "two again"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, mirrored(m, "tasks/T3/state", `"`+big+`"`))
	waitFor(t, mirrored(m, "tasks/T1/state", ""))
	waitFor(t, mirrored(m, "tasks/T2/state", `"two again"`))
	var v string
	if e, _ := m.Get("tasks/T2/state"); e.Decode(&v) != nil || v != "two again" || e.Writer != "w1" || e.Version["w1"] != 2 {
		t.Errorf("T2's copy = %+v", e)
	}
	// Concurrent writers of a merged key: the copy holds what a read
	// resolves, not the latest write alone.
	q, err := c.Mirror(ctx, "coordination/*")
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	<-q.Synced()
	for w, v := range map[string]map[string]any{"w1": {"pending": []string{"T1"}}, "w2": {"owner": "w2"}} {
		if _, err := mustNew(t, srv.URL, client.WithWorkerID(w)).Put(ctx, "coordination/queue", v); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, mirrored(q, "coordination/queue", `{"owner":"w2","pending":["T1"]}`))

	m.Close()
	if err := m.Err(); err != nil {
		t.Errorf("Err after Close = %v", err)
	}
	if _, ok := m.Get("tasks/T2/state"); !ok {
		t.Error("the copy is gone after Close")
	}
}

// After a reset the mirror watches again from a new initial state, past a
// server that is unavailable for a while, and its copy becomes that state:
// keys gone meanwhile leave it.
func TestMirrorStartsOverAfterAReset(t *testing.T) {
	f, n := sseFake(t,
		func(w http.ResponseWriter, r *http.Request) {
			send(w, ": watching\n\n"+
				"event: put\ndata: {\"type\":\"put\",\"key\":\"k/a\",\"value\":1,\"initial\":true}\n\n"+
				"id: 5\nevent: synced\ndata: {\"id\":5,\"type\":\"synced\",\"keys\":1}\n\n"+
				"id: 7\nevent: reset\ndata: {\"reason\":\"fell behind\"}\n\n")
			<-r.Context().Done()
		},
		func(w http.ResponseWriter, r *http.Request) { problem(w, 503, "backend_unavailable", nil) },
		func(w http.ResponseWriter, r *http.Request) {
			send(w, ": watching\n\n"+
				"event: put\ndata: {\"type\":\"put\",\"key\":\"k/b\",\"value\":2,\"initial\":true}\n\n"+
				"id: 9\nevent: synced\ndata: {\"id\":9,\"type\":\"synced\",\"keys\":1}\n\n")
			<-r.Context().Done()
		})
	m, err := mustNew(t, f.URL).Mirror(context.Background(), "k/*")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	waitFor(t, func() bool { return n.Load() == 3 }) // the second answered 503: tried again
	waitFor(t, mirrored(m, "k/a", ""))
	waitFor(t, mirrored(m, "k/b", "2"))
	for i, req := range f.requests() {
		if !strings.Contains(req.Query, "initial=true") || req.Header.Get("Last-Event-ID") != "" {
			t.Errorf("watch %d: query %s, Last-Event-ID %q; want initial, from no id", i, req.Query, req.Header.Get("Last-Event-ID"))
		}
	}
}
