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
