package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// Types against a server: a watch of deletes hears the delete and not the
// puts before it; an unknown kind is ErrInvalid.
func TestWatchTypesAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	if _, err := c.Watch(ctx, "workers/**", client.Types("touch")); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("Watch with an unknown type: %v, want ErrInvalid", err)
	}
	gone := mustWatch(t, c, "workers/*/status", client.Types(client.EventDelete, client.EventExpire))
	for _, v := range []string{"idle", "busy"} {
		if _, err := c.Put(ctx, "workers/w1/status", v); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Delete(ctx, "workers/w1/status"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-gone.Events():
		if ev.Type != client.EventDelete || ev.Key != "workers/w1/status" {
			t.Errorf("first event: %+v, want the delete", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5 s")
	}
}

// Initial against a server: the watch starts with a put per existing key,
// marked Initial and without an id, then EventSynced with the count and
// the id the changes come after, then the changes.
func TestWatchInitialAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	for _, key := range []string{"tasks/T2/state", "tasks/T1/state", "tasks/T1/notes"} {
		if _, err := c.Put(ctx, key, key); err != nil {
			t.Fatal(err)
		}
	}
	// Once the server's hub has delivered the puts, the watch begins after
	// them: a put still on its way when a watch begins comes again after
	// synced (README: a key changed meanwhile comes again).
	waitFor(t, func() bool { return srv.Hub.Stats().LastID >= 3 })
	w := mustWatch(t, c, "tasks/*/state", client.Initial())
	for _, key := range []string{"tasks/T1/state", "tasks/T2/state"} {
		var v string
		if ev := next(t, w); ev.Type != client.EventPut || !ev.Initial || ev.ID != 0 || ev.Key != key || ev.Decode(&v) != nil || v != key {
			t.Fatalf("initial event %+v, want %s's state", ev, key)
		}
	}
	synced := next(t, w)
	if synced.Type != client.EventSynced || synced.Keys != 2 || synced.ID == 0 {
		t.Fatalf("after the state: %+v, want synced over 2 keys with an id", synced)
	}
	if _, err := c.Put(ctx, "tasks/T3/state", 3); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, w); ev.Type != client.EventPut || ev.Initial || ev.Key != "tasks/T3/state" || ev.ID != synced.ID+1 {
		t.Errorf("first change %+v, want T3's put, id %d", ev, synced.ID+1)
	}
	// A watch resumed from an id sends no state.
	r := mustWatch(t, c, "tasks/*/state", client.Initial(), client.FromEventID(synced.ID))
	if ev := next(t, r); ev.Initial || ev.Key != "tasks/T3/state" {
		t.Errorf("resumed watch starts with %+v, want T3's put", ev)
	}
}
