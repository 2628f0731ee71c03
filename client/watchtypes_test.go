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
