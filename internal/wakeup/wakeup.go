// Package wakeup fans one Redis pattern subscription out to the requests
// of this process that wait on something (a queue's next message, a
// barrier's trip): a script that changes a thing publishes its name on its
// namespace's channel, and every waiter registered for it, on every
// instance, wakes and looks again. One PSUBSCRIBE serves every namespace
// and every thing of a kind, never one per waiter.
//
// A wake-up is a hint, not a message: waiters look at Redis again, and
// also on a timer, since a publish made while the subscription was down is
// lost (a resubscription wakes every waiter for that reason).
//
// A message wakes every waiter of its thing (Every: a barrier's trip lets
// all pass), or only the one of this process waiting longest (First: one
// queue message is for one claim), so that a message costs each instance
// one look at Redis, not one per waiter, and a process serves its waiters
// in line. A waiter that leaves with a wake-up it did not use hands it to
// the next.
package wakeup

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
)

// Policy says whom a message wakes.
type Policy int

const (
	// Every waiter of the message's key.
	Every Policy = iota
	// First: the waiter of the key that registered first and has no
	// wake-up pending.
	First
)

// Hub is one pattern subscription and its waiters. It is safe for
// concurrent use.
type Hub struct {
	ps     *redis.PubSub
	keyOf  func(ns, payload string) (string, bool)
	policy Policy

	mu      sync.Mutex
	waiters map[string][]chan struct{} // by key, in the order registered

	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup
}

// Channel is the channel of kind in namespace ns: publish a thing's name
// on it to wake its waiters.
func Channel(ns, kind string) string { return keys.Namespace(ns, kind) }

// New subscribes to the channel of kind in every namespace. keyOf maps a
// message (its namespace and payload) to the key waiters register under;
// false drops the message. policy says whom a message wakes.
func New(rdb redis.UniversalClient, kind string, policy Policy, keyOf func(ns, payload string) (string, bool)) *Hub {
	h := &Hub{keyOf: keyOf, policy: policy, waiters: make(map[string][]chan struct{}), done: make(chan struct{})}
	pattern := Channel("*", kind)
	h.ps = rdb.PSubscribe(context.Background(), pattern)
	ch := h.ps.ChannelWithSubscriptions(redis.WithChannelSize(1024))
	prefix, suffix, _ := strings.Cut(pattern, "*")
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for msg := range ch {
			switch m := msg.(type) {
			case *redis.Subscription:
				h.Wake("") // (re)subscribed: messages may have been missed
			case *redis.Message:
				ns, ok1 := strings.CutPrefix(m.Channel, prefix)
				ns, ok2 := strings.CutSuffix(ns, suffix)
				if !ok1 || !ok2 {
					continue
				}
				if key, ok := h.keyOf(ns, m.Payload); !ok {
					continue
				} else if h.policy == First {
					h.WakeFirst(key)
				} else {
					h.Wake(key)
				}
			}
		}
	}()
	return h
}

// Done is closed when the Hub closes: waiters stop waiting then.
func (h *Hub) Done() <-chan struct{} { return h.done }

// Close stops the subscription.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		close(h.done)
		h.closeErr = h.ps.Close()
		h.wg.Wait()
	})
	return h.closeErr
}

// Register returns a channel that receives (at most one pending) wake-up
// for key, and the function that unregisters it. Unregistering with a
// wake-up pending hands it to the next waiter of key, under policy First.
func (h *Hub) Register(key string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.waiters[key] = append(h.waiters[key], ch)
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.waiters[key] = slices.DeleteFunc(h.waiters[key], func(w chan struct{}) bool { return w == ch })
		if len(h.waiters[key]) == 0 {
			delete(h.waiters, key)
		}
		if len(ch) > 0 && h.policy == First {
			h.wakeFirst(key) // the wake-up was for a message this waiter did not take
		}
	}
}

// Wake wakes every waiter of key, or of every key for "".
func (h *Hub) Wake(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, ws := range h.waiters {
		if key != "" && k != key {
			continue
		}
		for _, w := range ws {
			signal(w)
		}
	}
}

// WakeFirst wakes the waiter of key that registered first and has no
// wake-up pending (none when each has one).
func (h *Hub) WakeFirst(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.wakeFirst(key)
}

func (h *Hub) wakeFirst(key string) {
	for _, w := range h.waiters[key] {
		if len(w) == 0 {
			signal(w)
			return
		}
	}
}

func signal(w chan struct{}) {
	select {
	case w <- struct{}{}:
	default:
	}
}
