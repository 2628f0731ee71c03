package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// An Ephemeral key lives while its worker beats: kept by StartHeartbeat,
// deleted by the server once the beats stop and the last one expires.
func TestEphemeralAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	if _, err := c.Put(ctx, "tasks/T1/claim", "w1", client.Ephemeral()); !errors.Is(err, client.ErrNoHeartbeat) {
		t.Fatalf("Ephemeral put before any heartbeat: %v, want ErrNoHeartbeat", err)
	}
	if err := c.PutAsync(ctx, "tasks/T1/claim", "w1", client.Ephemeral()); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("Ephemeral PutAsync: %v, want ErrInvalid", err)
	}
	stop := c.StartHeartbeat(ctx, 300*time.Millisecond, client.HeartbeatTTL(time.Second))
	defer stop()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := c.Put(ctx, "tasks/T1/claim", "w1", client.Ephemeral()); err == nil {
			break
		} else if !errors.Is(err, client.ErrNoHeartbeat) || time.Now().After(deadline) {
			t.Fatalf("Ephemeral put with a heartbeat: %v", err)
		}
	}
	if _, err := c.Patch(ctx, "tasks/T1/state", map[string]any{"owner": "w1"}, client.Ephemeral()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond) // more than a TTL: the beats keep both keys
	for _, k := range []string{"tasks/T1/claim", "tasks/T1/state"} {
		if _, err := c.Get(ctx, k, client.Consistent()); err != nil {
			t.Fatalf("%s while the worker beats: %v", k, err)
		}
	}
	stop()
	for deadline := time.Now().Add(8 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		_, err1 := c.Get(ctx, "tasks/T1/claim", client.Consistent())
		_, err2 := c.Get(ctx, "tasks/T1/state", client.Consistent())
		if errors.Is(err1, client.ErrNotFound) && errors.Is(err2, client.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("8 s after the last beat: %v, %v; want both keys gone", err1, err2)
		}
	}
}
