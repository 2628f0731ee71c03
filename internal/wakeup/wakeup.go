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
package wakeup

import (
	"context"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
)

// Hub is one pattern subscription and its waiters. It is safe for
// concurrent use.
type Hub struct {
	ps    *redis.PubSub
	keyOf func(ns, payload string) (string, bool)

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{} // by key

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
// false drops the message.
func New(rdb redis.UniversalClient, kind string, keyOf func(ns, payload string) (string, bool)) *Hub {
	h := &Hub{keyOf: keyOf, waiters: make(map[string]map[chan struct{}]struct{}), done: make(chan struct{})}
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
				if key, ok := h.keyOf(ns, m.Payload); ok {
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
// for key, and the function that unregisters it.
func (h *Hub) Register(key string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.waiters[key] == nil {
		h.waiters[key] = make(map[chan struct{}]struct{})
	}
	h.waiters[key][ch] = struct{}{}
	return ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.waiters[key], ch)
		if len(h.waiters[key]) == 0 {
			delete(h.waiters, key)
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
		for w := range ws {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
}
