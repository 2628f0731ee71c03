package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// A work queue against a server: enqueue, claim, extend, release, ack; a
// claim neither acked nor released in time comes back, attempt 2.
func TestQueueAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	for _, task := range []string{"T1", "T2"} {
		if _, err := c.Enqueue(ctx, "jobs", map[string]string{"task": task}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := c.QueueStats(ctx, "jobs"); err != nil || s != (client.QueueStats{Visible: 2}) {
		t.Fatalf("QueueStats = %+v, %v", s, err)
	}
	msgs, err := c.Claim(ctx, "jobs", client.ClaimOptions{Visibility: 200 * time.Millisecond, Max: 2})
	if err != nil || len(msgs) != 2 {
		t.Fatalf("Claim = %v, %v", msgs, err)
	}
	var job struct{ Task string }
	if err := msgs[0].Decode(&job); err != nil || job.Task != "T1" || msgs[0].Attempts != 1 {
		t.Fatalf("first message %+v (%v)", msgs[0], err)
	}
	before := msgs[0].VisibleAt
	if err := msgs[0].Extend(ctx, time.Minute); err != nil || !msgs[0].VisibleAt.After(before) {
		t.Fatalf("Extend: %v, visible at %v (was %v)", err, msgs[0].VisibleAt, before)
	}
	if err := msgs[0].Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := msgs[0].Ack(ctx); !errors.Is(err, client.ErrNotClaimed) {
		t.Fatalf("second Ack: %v, want ErrNotClaimed", err)
	}
	// T2's claim lapses: a waiting claim gets it once its timeout passes.
	again, err := c.Claim(ctx, "jobs", client.ClaimOptions{Visibility: time.Minute, Wait: 5 * time.Second})
	if err != nil || len(again) != 1 || again[0].ID != msgs[1].ID || again[0].Attempts != 2 {
		t.Fatalf("Claim after T2's timeout = %+v, %v", again, err)
	}
	if err := msgs[1].Ack(ctx); !errors.Is(err, client.ErrNotClaimed) {
		t.Fatalf("Ack with the lapsed receipt: %v, want ErrNotClaimed", err)
	}
	if err := again[0].Release(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if s, _ := c.QueueStats(ctx, "jobs"); s != (client.QueueStats{Delayed: 1}) {
		t.Fatalf("QueueStats after a delayed release = %+v", s)
	}
	if n, err := c.PurgeQueue(ctx, "jobs"); err != nil || n != 1 {
		t.Fatalf("PurgeQueue = %d, %v", n, err)
	}
	for _, bad := range []string{"", "a/b"} {
		if _, err := c.Enqueue(ctx, bad, 1, 0); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("Enqueue to %q: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := c.Claim(ctx, "jobs", client.ClaimOptions{}); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("Claim without a visibility: %v, want ErrInvalid", err)
	}
}
