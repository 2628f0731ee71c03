package client_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// Counters against a server: increments, a keyed one sent again, TTL, set,
// overflow, delete.
func TestCountersAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	if _, err := c.Counter(ctx, "jobs/done"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Counter of none: %v, want ErrNotFound", err)
	}
	if got, err := c.Increment(ctx, "jobs/done", 1); err != nil || got.Value != 1 || got.Name != "jobs/done" || got.Replayed {
		t.Fatalf("Increment = %+v, %v", got, err)
	}
	first, err := c.Increment(ctx, "jobs/done", 4, client.IdempotencyKey("J1"), client.TTL(time.Minute))
	if err != nil || first.Value != 5 || time.Until(first.ExpiresAt) < 50*time.Second {
		t.Fatalf("keyed Increment = %+v, %v", first, err)
	}
	again, err := c.Increment(ctx, "jobs/done", 4, client.IdempotencyKey("J1"), client.TTL(time.Minute))
	if err != nil || !again.Replayed || again.Value != 5 {
		t.Fatalf("sent again = %+v, %v; want 5, Replayed", again, err)
	}
	if got, err := c.SetCounter(ctx, "jobs/done", 1<<53-1, client.TTL(0)); err != nil || got.Value != 1<<53-1 || !got.ExpiresAt.IsZero() {
		t.Fatalf("SetCounter = %+v, %v", got, err)
	}
	if _, err := c.Increment(ctx, "jobs/done", 1); !errors.Is(err, client.ErrCounterOverflow) {
		t.Fatalf("Increment past the bound: %v, want ErrCounterOverflow", err)
	}
	if got, err := c.Counter(ctx, "jobs/done"); err != nil || got.Value != 1<<53-1 {
		t.Fatalf("Counter = %+v, %v", got, err)
	}
	if cs, err := c.Counters(ctx, "jobs/"); err != nil || len(cs) != 1 || cs[0].Name != "jobs/done" || cs[0].Value != 1<<53-1 {
		t.Fatalf("Counters = %+v, %v", cs, err)
	}
	if err := c.DeleteCounter(ctx, "jobs/done"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteCounter(ctx, "jobs/done"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("second DeleteCounter: %v, want ErrNotFound", err)
	}
	for _, opt := range []client.PutOption{client.IfMatch(`"x"`), client.Ephemeral()} {
		if _, err := c.Increment(ctx, "jobs/done", 1, opt); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("Increment with %T: %v, want ErrInvalid", opt, err)
		}
	}
	if _, err := c.SetCounter(ctx, "jobs/done", 1, client.IdempotencyKey("k")); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("SetCounter with a key: %v, want ErrInvalid", err)
	}
}

// An increment whose answer is lost, from a client WithRetries, counts
// once.
func TestIncrementRetriedCountsOnce(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, lossyProxy(t, srv.URL, http.MethodPost), client.WithWorkerID("w1"), client.WithRetries(2))
	got, err := c.Increment(ctx, "jobs/done", 3)
	if err != nil || !got.Replayed || got.Value != 3 {
		t.Fatalf("Increment with its first answer lost = %+v, %v; want 3, Replayed", got, err)
	}
	if now, err := mustNew(t, srv.URL).Counter(ctx, "jobs/done"); err != nil || now.Value != 3 {
		t.Fatalf("counter = %+v, %v; want 3", now, err)
	}
}
