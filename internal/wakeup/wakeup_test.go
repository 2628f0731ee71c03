package wakeup_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/wakeup"
)

func received(ch <-chan struct{}, within time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(within):
		return false
	}
}

// A publish on a namespace's channel wakes the waiters of the key it maps
// to, on every Hub, and no other.
func TestPublishWakesTheWaitersOfItsKey(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		keyOf := func(ns, payload string) (string, bool) { return ns + "|" + payload, payload != "ignored" }
		h1, h2 := wakeup.New(b.Client, "thing-ready", wakeup.Every, keyOf), wakeup.New(b.Client, "thing-ready", wakeup.Every, keyOf)
		t.Cleanup(func() { h1.Close(); h2.Close() })
		a, unregisterA := h1.Register("n1|a")
		a2, _ := h2.Register("n1|a")
		other, _ := h1.Register("n1|b")
		// The subscriptions' first confirmations wake everyone: drain them.
		for _, ch := range []<-chan struct{}{a, a2, other} {
			received(ch, 200*time.Millisecond)
		}
		ctx := context.Background()
		if err := b.Client.Publish(ctx, wakeup.Channel("n1", "thing-ready"), "a").Err(); err != nil {
			t.Fatal(err)
		}
		if !received(a, 5*time.Second) || !received(a2, 5*time.Second) {
			t.Fatal("the waiters of n1|a, on both Hubs, were not woken")
		}
		if received(other, 100*time.Millisecond) {
			t.Fatal("the waiter of n1|b was woken by a's message")
		}
		for _, msg := range []struct{ ns, payload string }{{"n2", "a"}, {"n1", "ignored"}} {
			_ = b.Client.Publish(ctx, wakeup.Channel(msg.ns, "thing-ready"), msg.payload).Err()
		}
		_ = b.Client.Publish(ctx, wakeup.Channel("n1", "other-kind"), "a").Err()
		if received(a, 200*time.Millisecond) {
			t.Fatal("n1|a was woken by another namespace's, a dropped or another kind's message")
		}
		unregisterA()
		h1.Wake("")
		if received(a, 100*time.Millisecond) || !received(other, time.Second) {
			t.Fatal("Wake(\"\") woke an unregistered waiter, or not a registered one")
		}
		if err := h1.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-h1.Done():
		default:
			t.Fatal("Done is open after Close")
		}
	})
}

// Under policy First a message wakes the waiter that registered first and
// has no wake-up pending; one that leaves with a wake-up pending hands it
// on.
func TestFirstWakesOneWaiterInLine(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := wakeup.New(b.Client, "job-ready", wakeup.First, func(ns, payload string) (string, bool) { return payload, true })
		t.Cleanup(func() { h.Close() })
		a, leaveA := h.Register("q")
		bw, _ := h.Register("q")
		c, _ := h.Register("q")
		for _, ch := range []<-chan struct{}{a, bw, c} {
			received(ch, 200*time.Millisecond) // the subscription's confirmation woke all
		}
		pending := func() string { return fmt.Sprint(len(a), len(bw), len(c)) }
		eventually := func(want string) {
			t.Helper()
			deadline := time.Now().Add(5 * time.Second)
			for pending() != want {
				if time.Now().After(deadline) {
					t.Fatalf("pending wake-ups of a, b, c: %s, want %s", pending(), want)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		ctx := context.Background()
		publish := func() {
			t.Helper()
			if err := b.Client.Publish(ctx, wakeup.Channel("n1", "job-ready"), "q").Err(); err != nil {
				t.Fatal(err)
			}
		}
		publish()
		eventually("1 0 0")
		publish() // a has one pending: b is next
		eventually("1 1 0")
		time.Sleep(50 * time.Millisecond)
		if got := pending(); got != "1 1 0" {
			t.Fatalf("pending after two messages: %s, want a and b only", got)
		}
		leaveA() // a leaves without using its wake-up: c gets it
		eventually("1 1 1")
		h.WakeFirst("q") // each has one pending: nobody more
		if got := pending(); got != "1 1 1" {
			t.Fatalf("pending: %s", got)
		}
	})
}
