package client_test

import (
	"context"
	"errors"
	"testing"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// GetIfChanged against a server: nothing while the key is as read, the new
// entry once it changed.
func TestGetIfChangedAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	first, err := c.Put(ctx, "tasks/T1/state", map[string]string{"status": "running"})
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]client.GetOption{nil, {client.Consistent()}} {
		e, changed, err := c.GetIfChanged(ctx, "tasks/T1/state", first.ETag, opts...)
		if err != nil || changed || e != nil {
			t.Errorf("GetIfChanged(current etag) = %v, %v, %v; want nil, false, nil", e, changed, err)
		}
	}
	second, err := c.Put(ctx, "tasks/T1/state", map[string]string{"status": "done"})
	if err != nil {
		t.Fatal(err)
	}
	e, changed, err := c.GetIfChanged(ctx, "tasks/T1/state", first.ETag)
	if err != nil || !changed || e == nil || e.ETag != second.ETag {
		t.Fatalf("GetIfChanged(old etag) = %+v, %v, %v; want the entry of etag %s", e, changed, err, second.ETag)
	}
	var v map[string]string
	if err := e.Decode(&v); err != nil || v["status"] != "done" {
		t.Errorf("changed entry = %v, %v", v, err)
	}
	if _, _, err := c.GetIfChanged(ctx, "tasks/none/state", first.ETag); !errors.Is(err, client.ErrNotFound) {
		t.Errorf("GetIfChanged of a missing key: %v, want ErrNotFound", err)
	}
}

// Put under an IdempotencyKey, sent again: the entry of the first write,
// marked Replayed; the same key on another value is ErrInvalid. Typed
// writes take it too.
func TestIdempotencyKeyAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	put := func(value string) (*client.Entry, error) {
		return c.Put(ctx, "tasks/T1/state", value, client.IfNoneMatch(), client.IdempotencyKey("create-T1"))
	}
	first, err := put("new")
	if err != nil || first.Replayed {
		t.Fatalf("first put: %+v, %v", first, err)
	}
	again, err := put("new")
	if err != nil || !again.Replayed || again.ETag != first.ETag || again.Version["w1"] != 1 {
		t.Errorf("the put again = %+v, %v; want the first write's entry, Replayed", again, err)
	}
	if _, err := put("other"); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("the idempotency key on another value: %v, want ErrInvalid", err)
	}
	for i := range 2 {
		e, err := c.SyncTaskState(ctx, "T2", "running", client.IdempotencyKey("start-T2"))
		if err != nil || e.Replayed != (i == 1) || e.Version["w1"] != 1 {
			t.Errorf("typed write, attempt %d: %+v, %v", i+1, e, err)
		}
	}
}
