package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
)

// Waiting.
//
// The waiters of one Locker for one lock form a FIFO queue. Only the head
// tries the lock; the others sleep until they become head (or their Wait runs
// out), so a release costs one Redis call per Locker, not one per waiter. The
// head wakes on:
//
//   - a release message for the lock (from any instance, through the
//     Locker's single pattern subscription) or a local Release;
//   - the holder's expiry, by a timer set from the lease the holder had left
//     when the head last tried: miniredis has no keyspace notifications, and
//     Redis's are not delivered reliably anyway;
//   - Options.RetryInterval, the safety net for a message lost while the
//     subscription was down; go-redis also delivers a subscription
//     confirmation after every reconnect, which wakes every head at once;
//   - its Wait deadline, for one last try.
//
// A head that fails stays head. One that gets the lock, gives up or is
// cancelled leaves the queue and wakes the next. Between Lockers (instances)
// there is no queue: their heads race, so service is only roughly in arrival
// order across instances.

// releasedPattern matches the release channel of every namespace; one
// PSUBSCRIBE serves all of them. Namespaces cannot contain glob characters.
var releasedPattern = keys.Namespace("*", "lock-released")

// releasedChannel is the channel the release scripts publish a lock's name on.
func releasedChannel(ns string) string { return keys.Namespace(ns, "lock-released") }

// waiter is one Acquire waiting in a queue.
type waiter struct {
	wake chan struct{} // capacity 1: a pending wake-up is never lost nor doubled
}

func (w *waiter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// wait is Acquire with req.Wait > 0.
func (l *Locker) wait(ctx context.Context, ns, name, token string, req AcquireRequest) (Grant, error) {
	select {
	case <-l.done:
		return Grant{}, ErrClosed
	default:
	}
	deadline := time.Now().Add(req.Wait)
	qk := keys.Aux(ns, name, "lock")
	w := &waiter{wake: make(chan struct{}, 1)}
	l.enqueue(qk, w)
	defer l.dequeue(qk, w)

	timer := time.NewTimer(req.Wait)
	defer timer.Stop()
	for {
		left := time.Until(deadline)
		last := left <= 0
		sleep := left
		if last || l.isHead(qk, w) {
			g, err := l.try(ctx, ns, name, token, req)
			var he *HeldError
			if err == nil || !errors.As(err, &he) || last {
				return g, err
			}
			retry := l.opts.RetryInterval
			if he.left >= 0 {
				// The key is gone once Redis's clock passes expires_at.
				retry = min(retry, he.left+time.Millisecond)
			}
			sleep = min(sleep, retry)
		}
		timer.Reset(sleep)
		select {
		case <-ctx.Done():
			return Grant{}, fmt.Errorf("lock: acquire %q: %w", name, ctx.Err())
		case <-l.done:
			return Grant{}, ErrClosed
		case <-w.wake:
		case <-timer.C:
		}
	}
}

func (l *Locker) enqueue(qk string, w *waiter) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.queues[qk] = append(l.queues[qk], w)
}

// dequeue removes w and, when it was the head, wakes the next waiter.
func (l *Locker) dequeue(qk string, w *waiter) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queues[qk]
	for i, x := range q {
		if x != w {
			continue
		}
		q = append(q[:i], q[i+1:]...)
		if len(q) == 0 {
			delete(l.queues, qk)
			return
		}
		l.queues[qk] = q
		if i == 0 {
			q[0].signal()
		}
		return
	}
}

func (l *Locker) isHead(qk string, w *waiter) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queues[qk]
	return len(q) > 0 && q[0] == w
}

func (l *Locker) wakeHead(qk string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if q := l.queues[qk]; len(q) > 0 {
		q[0].signal()
	}
}

func (l *Locker) wakeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, q := range l.queues {
		q[0].signal()
	}
}

// dispatch fans release messages out to the heads of the local queues until
// the subscription is closed.
func (l *Locker) dispatch(ch <-chan any) {
	prefix, suffix, _ := strings.Cut(releasedPattern, "*")
	for msg := range ch {
		switch m := msg.(type) {
		case *redis.Subscription:
			// (Re)subscribed: releases may have been missed meanwhile.
			l.wakeAll()
		case *redis.Message:
			ns, ok1 := strings.CutPrefix(m.Channel, prefix)
			ns, ok2 := strings.CutSuffix(ns, suffix)
			if !ok1 || !ok2 || keys.Validate(m.Payload) != nil {
				continue
			}
			l.wakeHead(keys.Aux(ns, m.Payload, "lock"))
		}
	}
}
