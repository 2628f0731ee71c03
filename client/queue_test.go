package client_test

import (
	"context"
	"errors"
	"slices"
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
		if _, err := c.Enqueue(ctx, "jobs", map[string]string{"task": task}, client.EnqueueOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := c.QueueStats(ctx, "jobs"); err != nil || s != (client.QueueStats{Queue: "jobs", Visible: 2}) {
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
	if s, _ := c.QueueStats(ctx, "jobs"); s != (client.QueueStats{Queue: "jobs", Delayed: 1}) {
		t.Fatalf("QueueStats after a delayed release = %+v", s)
	}
	if n, err := c.PurgeQueue(ctx, "jobs"); err != nil || n != 1 {
		t.Fatalf("PurgeQueue = %d, %v", n, err)
	}
	// A bounded enqueue on a queue that holds its bound.
	if _, err := c.Enqueue(ctx, "jobs", 1, client.EnqueueOptions{MaxLength: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enqueue(ctx, "jobs", 2, client.EnqueueOptions{MaxLength: 1}); !errors.Is(err, client.ErrQueueFull) {
		t.Errorf("Enqueue past MaxLength: %v, want ErrQueueFull", err)
	}
	for _, bad := range []string{"", "a/b"} {
		if _, err := c.Enqueue(ctx, bad, 1, client.EnqueueOptions{}); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("Enqueue to %q: %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := c.Claim(ctx, "jobs", client.ClaimOptions{}); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("Claim without a visibility: %v, want ErrInvalid", err)
	}
}

// Dead letters against a server: a message past its MaxAttempts is read,
// given back and dropped; a keyed enqueue sent twice adds one message;
// Queues lists the queues.
func TestDeadLettersAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	var ids []string
	for _, task := range []string{"T1", "T2", "T3"} {
		m, err := c.Enqueue(ctx, "mail", task, client.EnqueueOptions{MaxAttempts: 1, IdempotencyKey: "send-" + task})
		if err != nil || m.Replayed || m.MaxAttempts != 1 {
			t.Fatalf("Enqueue %s = %+v, %v", task, m, err)
		}
		ids = append(ids, m.ID)
	}
	again, err := c.Enqueue(ctx, "mail", "T1", client.EnqueueOptions{MaxAttempts: 1, IdempotencyKey: "send-T1"})
	if err != nil || !again.Replayed || again.ID != ids[0] {
		t.Fatalf("Enqueue sent again = %+v, %v; want the first, Replayed", again, err)
	}
	if _, err := c.Enqueue(ctx, "mail", "T9", client.EnqueueOptions{IdempotencyKey: "send-T1"}); !errors.Is(err, client.ErrInvalid) {
		t.Fatalf("key reused for another message: %v, want ErrInvalid", err)
	}
	if msgs, err := c.Claim(ctx, "mail", client.ClaimOptions{Visibility: 20 * time.Millisecond, Max: 3}); err != nil || len(msgs) != 3 {
		t.Fatalf("Claim = %v, %v", msgs, err)
	}
	time.Sleep(60 * time.Millisecond)
	if msgs, err := c.Claim(ctx, "mail", client.ClaimOptions{Visibility: time.Minute}); err != nil || len(msgs) != 0 {
		t.Fatalf("Claim of dead messages = %v, %v", msgs, err)
	}
	page, err := c.DeadLetters(ctx, "mail", "", 2)
	if err != nil || page.Dead != 3 || len(page.Messages) != 2 || page.Cursor != ids[1] {
		t.Fatalf("DeadLetters = %+v, %v", page, err)
	}
	var task string
	if d := page.Messages[0]; d.Decode(&task) != nil || task != "T1" || d.Owner != "w1" || d.Attempts != 1 || d.DeadAt.IsZero() {
		t.Fatalf("dead letter %+v (%s)", d, task)
	}
	rest, err := c.DeadLetters(ctx, "mail", page.Cursor, 0)
	if err != nil || len(rest.Messages) != 1 || rest.Messages[0].ID != ids[2] || rest.Cursor != "" {
		t.Fatalf("second page = %+v, %v", rest, err)
	}
	if err := c.DropDeadLetter(ctx, "mail", ids[2]); err != nil {
		t.Fatal(err)
	}
	if err := c.DropDeadLetter(ctx, "mail", ids[2]); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("second DropDeadLetter: %v, want ErrNotFound", err)
	}
	if n, left, err := c.Redrive(ctx, "mail", ids[0]); err != nil || n != 1 || left != 1 {
		t.Fatalf("Redrive of one = %d, %d left, %v", n, left, err)
	}
	if n, left, err := c.Redrive(ctx, "mail"); err != nil || n != 1 || left != 0 {
		t.Fatalf("Redrive of the rest = %d, %d left, %v", n, left, err)
	}
	if m, err := c.Enqueue(ctx, "build", "B1", client.EnqueueOptions{Delay: time.Hour, TTL: 2 * time.Hour}); err != nil || m.ExpiresAt.Sub(m.EnqueuedAt) != 2*time.Hour {
		t.Fatalf("Enqueue with a TTL = %+v, %v", m, err)
	}
	qs, err := c.Queues(ctx, "")
	want := []client.QueueStats{{Queue: "build", Delayed: 1}, {Queue: "mail", Visible: 2}}
	if err != nil || !slices.Equal(qs, want) {
		t.Fatalf("Queues = %+v, %v; want %+v", qs, err, want)
	}
	if qs, err := c.Queues(ctx, "ma"); err != nil || len(qs) != 1 {
		t.Fatalf("Queues with prefix ma = %+v, %v", qs, err)
	}
}
