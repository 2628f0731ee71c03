package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
)

// Waiting.
//
// Waiters stand in one line per lock in Redis, shared by every instance, in
// the order they first found the lock held (acquireScript): a free lock with
// waiters in line goes to the first of them, so waiters are served in arrival
// order across instances, and an acquire that does not wait cannot overtake
// them. A place in line has a lease (waiterLease); this Locker renews the
// leases of its waiters (renewLeases), and a waiter whose lease ran out (its
// instance died) is dropped when it reaches the head of the line. A waiter
// that gives up or is cancelled leaves the line and wakes the others.
//
// Within one Locker the waiters for one lock also form a FIFO queue. Each
// tries the lock once on arrival, to take its place in line; after that only
// the head tries, and the others sleep until they become head (or their Wait
// runs out), so a release costs one Redis call per Locker, not one per waiter.
// The head wakes on:
//
//   - a release message for the lock (from any instance, through the
//     Locker's single pattern subscription) or a local Release;
//   - the holder's expiry, or the end of the lease of the waiter the lock is
//     kept for, by a timer set from what the head's last try saw: miniredis
//     has no keyspace notifications, and Redis's are not delivered reliably
//     anyway;
//   - Options.RetryInterval, the safety net for a message lost while the
//     subscription was down; go-redis also delivers a subscription
//     confirmation after every reconnect, which wakes every head at once;
//   - its Wait deadline, for one last try.
//
// A head that fails stays head. One that gets the lock, gives up or is
// cancelled leaves the queue and wakes the next.

// waiterLease is how long a place in line lasts without renewal: four
// renewals, and at least a second. A free lock waits at most this long for a
// waiter whose instance died.
func (l *Locker) waiterLease() time.Duration {
	return max(4*l.opts.RetryInterval, time.Second)
}

// lineKey and leasesKey are a lock's line of waiters and their leases, in
// the lock's hash slot.
func lineKey(ns, name string) string   { return keys.Aux(ns, name, "lock-line") }
func leasesKey(ns, name string) string { return keys.Aux(ns, name, "lock-leases") }

// releasedPattern matches the release channel of every namespace; one
// PSUBSCRIBE serves all of them. Namespaces cannot contain glob characters.
var releasedPattern = keys.Namespace("*", "lock-released")

// releasedChannel is the channel the release scripts publish a lock's name on.
func releasedChannel(ns string) string { return keys.Namespace(ns, "lock-released") }

// waiter is one Acquire waiting in a queue.
type waiter struct {
	ns, name, token, owner string
	line, leases           string        // the Redis keys of its line and its leases
	wake                   chan struct{} // capacity 1: a pending wake-up is never lost nor doubled
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
	w := &waiter{ns: ns, name: name, token: token, owner: req.Owner,
		line: lineKey(ns, name), leases: leasesKey(ns, name), wake: make(chan struct{}, 1)}
	l.enqueue(qk, w)
	granted := false
	defer func() {
		l.dequeue(qk, w)
		if !granted {
			l.leaveLineOf(ns, name, w)
		}
	}()

	lease := l.waiterLease()
	timer := time.NewTimer(req.Wait)
	defer timer.Stop()
	for first := true; ; first = false {
		left := time.Until(deadline)
		last := left <= 0
		sleep := left
		if first || last || l.isHead(qk, w) {
			g, err := l.try(ctx, ns, name, token, req, lease)
			var he *HeldError
			if err == nil {
				granted = true
				return g, nil
			}
			if !errors.As(err, &he) || last {
				return g, err
			}
			if he.keptFor != "" && he.keptFor != token {
				// The lock is free and kept for the first waiter in
				// Redis's line: when that one waits here behind this
				// one (the two arrived at Redis in the other order), it
				// goes first here too, or it would sleep while the lock
				// waits for it.
				l.promote(qk, he.keptFor)
			}
			retry := l.opts.RetryInterval
			if he.left >= 0 {
				// The key is gone once Redis's clock passes expires_at (or
				// the lease of the waiter it is kept for ends).
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

// leaveLineOf takes a waiter that did not get the lock (or permit) out of
// its line, and announces it like a release: it may have been first in
// line, keeping a free lock from the others. Best effort: a place left
// behind ends with its lease.
func (l *Locker) leaveLineOf(ns, name string, w *waiter) {
	ctx, cancel := context.WithTimeout(context.Background(), l.waiterLease())
	defer cancel()
	_, _ = l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, w.line, w.token)
		p.HDel(ctx, w.leases, w.token)
		p.Publish(ctx, releasedChannel(ns), name)
		return nil
	})
}

// renewLeases renews the places in line of this Locker's waiters every
// RetryInterval until the Locker closes: one script call per lock waited for.
func (l *Locker) renewLeases() {
	tick := time.NewTicker(l.opts.RetryInterval)
	defer tick.Stop()
	lease := l.waiterLease()
	for {
		select {
		case <-l.done:
			return
		case <-tick.C:
		}
		for _, line := range l.lines() {
			w := line[0]
			args := make([]any, 0, 1+2*len(line))
			args = append(args, lease.Milliseconds())
			for _, w := range line {
				args = append(args, w.token, w.owner)
			}
			ctx, cancel := context.WithTimeout(context.Background(), lease)
			_ = renewScript.Run(ctx, l.rdb, []string{w.line, w.leases}, args...).Err() // the next tick tries again
			cancel()
		}
	}
}

// lines returns a copy of the local queues.
func (l *Locker) lines() [][]*waiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([][]*waiter, 0, len(l.queues))
	for _, q := range l.queues {
		out = append(out, slices.Clone(q))
	}
	return out
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

// promote moves the waiter with token, when it is in the local queue qk,
// to its head, and wakes it.
func (l *Locker) promote(qk, token string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.queues[qk]
	for i, w := range q {
		if w.token == token {
			if i > 0 {
				copy(q[1:i+1], q[:i])
				q[0] = w
			}
			w.signal()
			return
		}
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

// wakeEvery wakes every waiter of queue qk: a semaphore's, whose waiters
// all try (Redis's line picks who gets a free permit).
func (l *Locker) wakeEvery(qk string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.queues[qk] {
		w.signal()
	}
}

// wakeAll wakes every waiter; a lock's waiters that are not at the head of
// their queue go back to sleep.
func (l *Locker) wakeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, q := range l.queues {
		for _, w := range q {
			w.signal()
		}
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
			// A lock and a semaphore of one name share the message.
			l.wakeHead(keys.Aux(ns, m.Payload, "lock"))
			l.wakeEvery(keys.Aux(ns, m.Payload, "sem"))
		}
	}
}
