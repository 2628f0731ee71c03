package queue_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/queue"
	"github.com/memsync/memsync/internal/redistest"
)

// On a Redis Cluster of three masters: a claim waiting on one instance is
// woken by an enqueue on another alone (the safety-net retry is set past
// the test's bound); dead letters, deduplicated enqueues and the listing,
// whose index is in another slot than the queues, work as on one Redis.
func TestQueueOnCluster(t *testing.T) {
	c := redistest.ClusterClient(t, redistest.StartCluster(t, 3))
	instance := func() *queue.Queues {
		q := queue.New(c, queue.Options{RetryInterval: time.Minute})
		t.Cleanup(func() { _ = q.Close() })
		return q
	}
	producer, consumer := instance(), instance()
	ctx := context.Background()
	for _, name := range []string{"jobs", "mail", "x"} {
		got := make(chan []queue.Message, 1)
		go func() {
			msgs, err := consumer.Claim(ctx, ns, name, queue.ClaimRequest{Visibility: 50 * time.Millisecond, Wait: 20 * time.Second})
			if err != nil {
				t.Error(err)
			}
			got <- msgs
		}()
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		req := queue.EnqueueRequest{Value: json.RawMessage(`"` + name + `"`), MaxAttempts: 1, IdempotencyKey: "once"}
		for range 2 {
			if _, _, err := producer.Enqueue(ctx, ns, name, req); err != nil {
				t.Fatal(err)
			}
		}
		if msgs := <-got; values(msgs) != `["`+name+`"]` || time.Since(start) > 10*time.Second {
			t.Fatalf("%s: waiting claim got %s after %v", name, values(msgs), time.Since(start))
		}
		time.Sleep(100 * time.Millisecond) // the claim lapses: its one attempt is spent
		if msgs := claim(t, consumer, name, queue.ClaimRequest{Visibility: time.Minute}); len(msgs) != 0 {
			t.Fatalf("%s: claim after the only attempt = %s", name, values(msgs))
		}
		if dead, total, err := consumer.Dead(ctx, ns, name, "", 10); err != nil || total != 1 || len(dead) != 1 {
			t.Fatalf("%s: dead letters = %+v, %d, %v", name, dead, total, err)
		}
	}
	infos, err := producer.Queues(ctx, ns, "")
	if err != nil || len(infos) != 3 || infos[0].Name != "jobs" || infos[0].Dead != 1 {
		t.Fatalf("Queues = %+v, %v", infos, err)
	}
}
