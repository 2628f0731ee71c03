package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/queue"
	"github.com/memsync/memsync/internal/redistest"
)

const ns = "test"

func newQueues(t testing.TB, b redistest.Backend) *queue.Queues {
	t.Helper()
	q := queue.New(b.Client, queue.Options{})
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func enqueue(t testing.TB, q *queue.Queues, name, value string, delay time.Duration) queue.Message {
	t.Helper()
	m, _, err := q.Enqueue(context.Background(), ns, name, queue.EnqueueRequest{Value: json.RawMessage(value), Delay: delay})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func claim(t testing.TB, q *queue.Queues, name string, req queue.ClaimRequest) []queue.Message {
	t.Helper()
	msgs, err := q.Claim(context.Background(), ns, name, req)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func values(msgs []queue.Message) string {
	var out []string
	for _, m := range msgs {
		out = append(out, string(m.Value))
	}
	return fmt.Sprint(out)
}

func TestQueueDeliversInOrderAndAcks(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		q := newQueues(t, b)
		ctx := context.Background()
		for i := range 5 {
			enqueue(t, q, "jobs", strconv.Itoa(i), 0)
		}
		enqueue(t, q, "jobs", `"later"`, time.Hour)
		if s, err := q.Stats(ctx, ns, "jobs"); err != nil || s != (queue.Stats{Visible: 5, Delayed: 1}) {
			t.Fatalf("Stats = %+v, %v", s, err)
		}
		got := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute, Max: 3, Owner: "w1"})
		if values(got) != "[0 1 2]" || got[0].Attempts != 1 || len(got[0].Receipt) != 32 || got[0].Receipt == got[1].Receipt {
			t.Fatalf("first claim = %+v", got)
		}
		more := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute, Max: 10})
		if values(more) != "[3 4]" {
			t.Fatalf("second claim = %s, want the other two visible ones", values(more))
		}
		if none := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute}); len(none) != 0 {
			t.Fatalf("claim of an emptied queue = %s", values(none))
		}
		if s, _ := q.Stats(ctx, ns, "jobs"); s != (queue.Stats{Delayed: 1, InFlight: 5}) {
			t.Fatalf("Stats after the claims = %+v", s)
		}
		if err := q.Ack(ctx, ns, "jobs", got[0].ID, got[0].Receipt); err != nil {
			t.Fatal(err)
		}
		if err := q.Ack(ctx, ns, "jobs", got[0].ID, got[0].Receipt); !errors.Is(err, queue.ErrNotClaimed) {
			t.Fatalf("second ack: %v, want ErrNotClaimed", err)
		}
		if err := q.Ack(ctx, ns, "jobs", got[1].ID, got[2].Receipt); !errors.Is(err, queue.ErrNotClaimed) {
			t.Fatalf("ack with another message's receipt: %v, want ErrNotClaimed", err)
		}
		// Released: visible again at once, one attempt more at its next claim.
		if err := q.Release(ctx, ns, "jobs", got[1].ID, got[1].Receipt, 0); err != nil {
			t.Fatal(err)
		}
		if err := q.Ack(ctx, ns, "jobs", got[1].ID, got[1].Receipt); !errors.Is(err, queue.ErrNotClaimed) {
			t.Fatalf("ack after release: %v, want ErrNotClaimed", err)
		}
		again := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute})
		if values(again) != "[1]" || again[0].Attempts != 2 || again[0].ID != got[1].ID {
			t.Fatalf("claim after release = %+v", again)
		}
		if c := q.Counters(); c != (queue.Counters{Enqueued: 6, Claimed: 6, Redelivered: 1, Acked: 1}) {
			t.Errorf("Counters = %+v", c)
		}
		if n, err := q.Purge(ctx, ns, "jobs"); err != nil || n != 5 {
			t.Fatalf("Purge = %d, %v; want the 5 left", n, err)
		}
		if s, err := q.Stats(ctx, ns, "jobs"); err != nil || s != (queue.Stats{}) {
			t.Fatalf("Stats after Purge = %+v, %v", s, err)
		}
	})
}

// A claim that is neither acked nor released in time (its worker crashed)
// is visible again; its old receipt acks it until a claim takes it again.
func TestQueueRedeliversAfterTheVisibilityTimeout(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		q := newQueues(t, b)
		ctx := context.Background()
		enqueue(t, q, "jobs", `"a"`, 0)
		enqueue(t, q, "jobs", `"b"`, 0)
		first := claim(t, q, "jobs", queue.ClaimRequest{Visibility: 100 * time.Millisecond, Max: 2})
		until, err := q.Extend(ctx, ns, "jobs", first[1].ID, first[1].Receipt, time.Minute)
		if err != nil || time.Until(until) < 50*time.Second {
			t.Fatalf("Extend = %v, %v", until, err)
		}
		time.Sleep(200 * time.Millisecond) // both backends run on real time
		if s, _ := q.Stats(ctx, ns, "jobs"); s != (queue.Stats{Visible: 1, InFlight: 1}) {
			t.Fatalf("Stats after a's timeout = %+v", s)
		}
		// Claimed again: the new claim's receipt replaces the old one.
		second := claim(t, q, "jobs", queue.ClaimRequest{Visibility: time.Minute, Max: 5})
		if values(second) != `["a"]` || second[0].Attempts != 2 {
			t.Fatalf("claim after the timeout = %+v, want a again, attempt 2", second)
		}
		if err := q.Ack(ctx, ns, "jobs", first[0].ID, first[0].Receipt); !errors.Is(err, queue.ErrNotClaimed) {
			t.Fatalf("ack with the lapsed claim's receipt: %v, want ErrNotClaimed", err)
		}
		if _, err := q.Extend(ctx, ns, "jobs", first[0].ID, first[0].Receipt, time.Minute); !errors.Is(err, queue.ErrNotClaimed) {
			t.Fatalf("extend with the lapsed claim's receipt: %v, want ErrNotClaimed", err)
		}
		for _, m := range []queue.Message{second[0], first[1]} {
			if err := q.Ack(ctx, ns, "jobs", m.ID, m.Receipt); err != nil {
				t.Fatal(err)
			}
		}

		// A lapsed claim nobody took since still acks.
		enqueue(t, q, "jobs", `"c"`, 0)
		c := claim(t, q, "jobs", queue.ClaimRequest{Visibility: 50 * time.Millisecond})
		time.Sleep(100 * time.Millisecond)
		if err := q.Ack(ctx, ns, "jobs", c[0].ID, c[0].Receipt); err != nil {
			t.Fatalf("ack of a lapsed claim nobody took since: %v", err)
		}
		if s, _ := q.Stats(ctx, ns, "jobs"); s != (queue.Stats{}) {
			t.Fatalf("Stats at the end = %+v, want none left", s)
		}
	})
}

// Claims wait for a message: woken by an enqueue on another Queues (another
// instance), by a delayed message coming due, and by a release.
func TestQueueClaimsWait(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		producer, consumer := newQueues(t, b), newQueues(t, b)
		ctx := context.Background()
		got := make(chan []queue.Message, 1)
		go func() {
			msgs, err := consumer.Claim(ctx, ns, "jobs", queue.ClaimRequest{Visibility: time.Minute, Wait: 10 * time.Second})
			if err != nil {
				t.Error(err)
			}
			got <- msgs
		}()
		time.Sleep(50 * time.Millisecond)
		enqueue(t, producer, "jobs", `"now"`, 0)
		if msgs := <-got; values(msgs) != `["now"]` {
			t.Fatalf("waiting claim got %s", values(msgs))
		}
		enqueue(t, producer, "jobs", `"soon"`, 300*time.Millisecond)
		msgs := claim(t, consumer, "jobs", queue.ClaimRequest{Visibility: time.Minute, Wait: 10 * time.Second})
		if values(msgs) != `["soon"]` {
			t.Fatalf("claim waiting for a delayed message got %s", values(msgs))
		}
		// A claim whose wait ends first gets nothing, and no error.
		if msgs := claim(t, consumer, "jobs", queue.ClaimRequest{Visibility: time.Minute, Wait: 50 * time.Millisecond}); len(msgs) != 0 {
			t.Fatalf("claim of an empty queue got %s", values(msgs))
		}
	})
}

func TestQueueValidation(t *testing.T) {
	q := newQueues(t, redistest.Mini(t))
	ctx := context.Background()
	ok := queue.ClaimRequest{Visibility: time.Second}
	enq := func(name string, req queue.EnqueueRequest) error {
		_, _, err := q.Enqueue(ctx, ns, name, req)
		return err
	}
	for _, tt := range []struct {
		name string
		err  error
	}{
		{"bad name", enq("a/b", queue.EnqueueRequest{Value: json.RawMessage(`1`)})},
		{"dot name", func() error { _, err := q.Claim(ctx, ns, "..", ok); return err }()},
		{"bad namespace", func() error { _, err := q.Stats(ctx, "a/b", "jobs"); return err }()},
		{"not JSON", enq("jobs", queue.EnqueueRequest{Value: json.RawMessage(`{`)})},
		{"negative delay", enq("jobs", queue.EnqueueRequest{Value: json.RawMessage(`1`), Delay: -time.Second})},
		{"negative max attempts", enq("jobs", queue.EnqueueRequest{Value: json.RawMessage(`1`), MaxAttempts: -1})},
		{"max attempts too large", enq("jobs", queue.EnqueueRequest{Value: json.RawMessage(`1`), MaxAttempts: queue.MaxAttempts + 1})},
		{"bad idempotency key", enq("jobs", queue.EnqueueRequest{Value: json.RawMessage(`1`), IdempotencyKey: "a b"})},
		{"dead page too large", func() error { _, _, err := q.Dead(ctx, ns, "jobs", "", queue.MaxDeadPage+1); return err }()},
		{"bad cursor", func() error { _, _, err := q.Dead(ctx, ns, "jobs", "7", 10); return err }()},
		{"no redrive limit", func() error { _, _, err := q.Redrive(ctx, ns, "jobs", nil, 0); return err }()},
		{"bad redrive id", func() error { _, _, err := q.Redrive(ctx, ns, "jobs", []string{"x"}, 1); return err }()},
		{"bad dead id", q.DropDead(ctx, ns, "jobs", "1")},
		{"bad list namespace", func() error { _, err := q.Queues(ctx, "a/b", ""); return err }()},
		{"no visibility", func() error { _, err := q.Claim(ctx, ns, "jobs", queue.ClaimRequest{}); return err }()},
		{"max too large", func() error {
			_, err := q.Claim(ctx, ns, "jobs", queue.ClaimRequest{Visibility: time.Second, Max: queue.MaxClaim + 1})
			return err
		}()},
		{"wait too long", func() error {
			_, err := q.Claim(ctx, ns, "jobs", queue.ClaimRequest{Visibility: time.Second, Wait: time.Hour})
			return err
		}()},
		{"bad id", q.Ack(ctx, ns, "jobs", "12", "r")},
		{"no receipt", q.Ack(ctx, ns, "jobs", "0000000000000001", "")},
	} {
		if !errors.Is(tt.err, queue.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", tt.name, tt.err)
		}
	}
	if s, err := q.Stats(ctx, ns, "jobs"); err != nil || s != (queue.Stats{}) {
		t.Fatalf("refused calls left %+v, %v", s, err)
	}
}

// TestQueueDeliversEachMessageOnce has consumers on two Queues claim and ack
// concurrently while producers enqueue: every message is acked exactly once.
func TestQueueDeliversEachMessageOnce(t *testing.T) {
	b := redistest.Real(t)
	qs := []*queue.Queues{newQueues(t, b), newQueues(t, b)}
	ctx := context.Background()
	const producers, perProducer, consumers = 4, 50, 6
	var seen sync.Map
	var acked, dup int64
	var mu sync.Mutex
	var wg, produced sync.WaitGroup
	var done atomic.Bool
	for p := range producers {
		produced.Go(func() {
			for i := range perProducer {
				if _, _, err := qs[p%2].Enqueue(ctx, ns, "jobs", queue.EnqueueRequest{Value: json.RawMessage(strconv.Itoa(p*1000 + i))}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for c := range consumers {
		wg.Go(func() {
			for {
				// Read before the claim: once every enqueue returned, a
				// claim that finds nothing finds the queue drained.
				finished := done.Load()
				msgs, err := qs[c%2].Claim(ctx, ns, "jobs", queue.ClaimRequest{Visibility: time.Minute, Wait: 300 * time.Millisecond, Max: 3})
				if err != nil {
					t.Error(err)
					return
				}
				if len(msgs) == 0 && finished {
					return // drained
				}
				for _, m := range msgs {
					if err := qs[c%2].Ack(ctx, ns, "jobs", m.ID, m.Receipt); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if _, loaded := seen.LoadOrStore(string(m.Value), true); loaded {
						dup++
					}
					acked++
					mu.Unlock()
				}
			}
		})
	}
	produced.Wait()
	done.Store(true)
	wg.Wait()
	if acked != producers*perProducer || dup != 0 {
		t.Fatalf("%d acked (%d twice), want each of %d once", acked, dup, producers*perProducer)
	}
}

// Claims waiting on one instance are served in line: each message, added
// on another instance, goes to the claim that has waited longest, woken
// by the message alone (the safety-net retry is set past the test).
func TestQueueWaitingClaimsServedInLine(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		producer := newQueues(t, b)
		consumer := queue.New(b.Client, queue.Options{RetryInterval: time.Minute})
		t.Cleanup(func() { _ = consumer.Close() })
		ctx := context.Background()
		const waiters = 3
		got := make([]chan string, waiters)
		for i := range waiters {
			got[i] = make(chan string, 1)
			go func() {
				msgs, err := consumer.Claim(ctx, ns, "line", queue.ClaimRequest{Visibility: time.Minute, Wait: 20 * time.Second})
				if err != nil {
					t.Error(err)
				}
				got[i] <- values(msgs)
			}()
			time.Sleep(250 * time.Millisecond) // in line before the next
		}
		for i := range waiters {
			enqueue(t, producer, "line", strconv.Itoa(i), 0)
			select {
			case v := <-got[i]:
				if v != fmt.Sprintf("[%d]", i) {
					t.Fatalf("claim %d got %s, want message %d", i, v, i)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("claim %d, the longest waiting, did not get message %d within 10 s", i, i)
			}
		}
	})
}
