// Package watch fans this instance's one Redis subscription to the change
// channel out to everything in the process that follows changes: the read
// cache (a synchronous Listener) and the SSE watchers (each a Watcher with a
// bounded buffer).
//
// Every change event carries a consecutive id and is logged in a capped
// Redis stream before it is published (see store.Publish), so the Hub can
// tell when it missed some (the subscription broke and came back, or Redis
// dropped a message) and fill the gap from the log, delivering every event
// exactly once and in id order. When the log no longer holds the missing
// events, listeners hear Gap and watchers get a reset: the state must be
// read again.
package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/store"
)

// ErrClosed is returned by Watch once Run has returned, and by a Watcher's
// Poll and Next once it is closed and drained.
var ErrClosed = errors.New("watch: closed")

// Defaults of Options.
const (
	// DefaultBuffer is how many events a watcher may fall behind before its
	// buffer is replaced by a reset. The hub hands a batch's events over at
	// once, faster than any watcher takes them, so the buffer holds two of
	// the largest batches (1,000 puts, each possibly after an expire event):
	// a watcher that keeps up is never reset by a burst. A group's ring
	// grows to it only while a watcher is that far behind, and the events
	// in it are shared by every group.
	DefaultBuffer = 4096
	// DefaultHealthCheck is how long the subscription may stay silent
	// before the hub pings it; a ping unanswered for as long again means the
	// connection is dead (a half-open TCP connection never errors by
	// itself), so a broken subscription is noticed within twice this.
	DefaultHealthCheck = 2 * time.Second
)

const (
	// Reconnection back-off: the first retry after a working subscription
	// broke comes at once (CLIENT KILL, a failover), later ones slow down to
	// maxRetry while Redis stays away.
	minRetry = 20 * time.Millisecond
	maxRetry = time.Second
	// logPage is how many events one read of the log returns when a
	// watcher replays (each replaying watcher holds one page).
	logPage = 512
	// hubPage is how many events one read of the log returns when the hub
	// catches up (after a brief or a gap): one reader per instance, which
	// under a stream of batches must keep pace with the writers. Four times
	// logPage delivered more than three times the events to a watcher of
	// every key under 16 connections of batches (CPUs saturated), and is
	// half a watcher's default buffer.
	hubPage = 2048
)

// EventLog is the replayable log of change events; *store.Store is one.
type EventLog interface {
	// LoggedAfter returns up to limit events with ids above after, oldest
	// first, and whether the log still held the event after+1. The events
	// carry their routing fields and their JSON in Raw.
	LoggedAfter(ctx context.Context, after uint64, limit int64) ([]store.Event, bool, error)
	// LastEventID returns the newest logged id, 0 for an empty log.
	LastEventID(ctx context.Context) (uint64, error)
}

// Listener follows every event synchronously, on the hub's goroutine. Its
// methods must return quickly and must not call the Hub.
type Listener interface {
	// Event is called for every event, control events included, exactly
	// once each and in id order. It carries at least the id, type,
	// namespace and key, and the value of control events; live events carry
	// no more (see store.ParseEventRoute).
	Event(store.Event)
	// Gap says events may have been missed: the subscription is down, or
	// the log no longer held events the hub missed. Until Connected,
	// anything derived from earlier events may be stale.
	Gap()
	// Connected says the subscription is up and every event since the last
	// Gap has been delivered (or, on the first call, that events are being
	// delivered from now on). Listen calls it at once when the hub is
	// already connected.
	Connected()
}

// Options tune a Hub. Zero fields take the defaults above.
type Options struct {
	// Buffer is each watcher's buffer, in events (DefaultBuffer).
	Buffer int
	// HealthCheck is the silence after which the subscription is pinged
	// (DefaultHealthCheck).
	HealthCheck time.Duration
	// Logger reports lost and recovered subscriptions; nil discards.
	Logger *slog.Logger
}

// Hub is an instance's subscription to the change channel, shared by every
// listener and watcher in the process. Create it with New and start it with
// Run; it is safe for concurrent use.
type Hub struct {
	rdb    redis.UniversalClient
	events EventLog
	opts   Options
	log    *slog.Logger

	// mu orders everything the hub delivers: events, gaps and the
	// registration of listeners and watchers. Listeners and watchers'
	// buffers are called with it held.
	mu        sync.Mutex
	started   bool   // last is known
	last      uint64 // the newest id delivered (or skipped by a loss)
	losses    uint64 // bumped whenever the hub skipped events
	connected bool
	closed    bool
	listeners map[*listener]struct{}
	live      map[*Watcher]struct{} // receiving live events
	replaying map[*Watcher]struct{} // still reading the log
	// groups are the watchers by filter, in a slice for delivery (one
	// match per group and event) and a map to find a filter's group.
	groups []*group
	byKey  map[filterKey]*group

	// dupRun is true while the hub is skipping a run of events it already
	// delivered (normal right after a resync); only Run's goroutine uses it.
	dupRun bool

	delivered atomic.Uint64 // events watchers took (Poll, PollSSE, Close)
	dropped   atomic.Uint64 // events a watcher's reset replaced
	resets    atomic.Uint64 // resets sent to watchers
}

type listener struct{ l Listener }

// New returns a hub that subscribes with rdb and fills gaps from events.
func New(rdb redis.UniversalClient, events EventLog, opts Options) *Hub {
	if opts.Buffer <= 0 {
		opts.Buffer = DefaultBuffer
	}
	if opts.HealthCheck <= 0 {
		opts.HealthCheck = DefaultHealthCheck
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{
		rdb: rdb, events: events, opts: opts, log: log,
		listeners: map[*listener]struct{}{},
		live:      map[*Watcher]struct{}{},
		replaying: map[*Watcher]struct{}{},
		byKey:     map[filterKey]*group{},
	}
}

// groupLocked returns the group of the watchers with filter f, for one
// more of them; the hub's mu is held.
func (h *Hub) groupLocked(f Filter) *group {
	k := f.key()
	g := h.byKey[k]
	if g == nil {
		g = newGroup(f, h.opts.Buffer)
		g.idx = len(h.groups)
		h.groups = append(h.groups, g)
		h.byKey[k] = g
	}
	g.users++
	return g
}

// releaseLocked says one watcher of g left; the hub's mu is held.
func (h *Hub) releaseLocked(g *group) {
	if g.users--; g.users > 0 {
		return
	}
	last := len(h.groups) - 1
	h.groups[g.idx] = h.groups[last]
	h.groups[g.idx].idx = g.idx
	h.groups[last] = nil
	h.groups = h.groups[:last]
	delete(h.byKey, g.key)
}

// Listen registers l until cancel is called. If the hub is connected, l
// hears Connected before Listen returns.
func (h *Hub) Listen(l Listener) (cancel func()) {
	e := &listener{l}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.listeners[e] = struct{}{}
	if h.connected {
		l.Connected()
	}
	return func() {
		h.mu.Lock()
		delete(h.listeners, e)
		h.mu.Unlock()
	}
}

// Stats are a hub's counters.
type Stats struct {
	Connected bool
	LastID    uint64 // the newest event delivered
	Watchers  int    // open watchers, replaying or live
	Delivered uint64 // events watchers took
	Dropped   uint64 // events a watcher missed, replaced by a reset
	Resets    uint64 // resets sent to watchers (slow consumers, lost events)
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{Connected: h.connected, LastID: h.last, Watchers: len(h.live) + len(h.replaying),
		Delivered: h.delivered.Load(), Dropped: h.dropped.Load(), Resets: h.resets.Load()}
}

// Run keeps the subscription up until ctx ends, then closes every watcher
// and tells the listeners Gap. Call it once.
func (h *Hub) Run(ctx context.Context) {
	defer h.close()
	retry := minRetry
	for {
		ps := h.rdb.Subscribe(ctx, store.ChangeChannel)
		// A blocked read notices a cancelled ctx only at its deadline;
		// closing the subscription ends it at once.
		stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
		err := h.session(ctx, ps)
		stop()
		_ = ps.Close()
		wasUp := h.disconnected()
		if ctx.Err() != nil {
			return
		}
		switch {
		case wasUp:
			retry = minRetry
			h.log.Warn("event subscription lost; caches are dropped until it is back", "err", err)
		case retry == minRetry:
			h.log.Warn("event subscription down; retrying", "err", err)
		default:
			h.log.Debug("event subscription still down", "err", err, "retry_in", retry)
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if !wasUp {
			retry = min(2*retry, maxRetry)
		}
	}
}

// session reads one subscription until it fails. go-redis would reconnect a
// broken PubSub by itself, silently; the hub rather starts a new one, so
// that every break is seen and every reconnection resynchronises.
func (h *Hub) session(ctx context.Context, ps *redis.PubSub) error {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, h.opts.HealthCheck)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			if pinged {
				return fmt.Errorf("watch: no answer to a ping for %s", h.opts.HealthCheck)
			}
			if err := ps.Ping(ctx); err != nil {
				return err
			}
			pinged = true
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == store.ChangeChannel {
				if err := h.resync(ctx); err != nil {
					return err
				}
			}
		case *redis.Message:
			if evs, ok, err := store.ParseBrief(m.Payload); ok {
				if err != nil { // the next event shows the gap
					h.log.Warn("ignoring a malformed change message", "err", err)
					continue
				}
				if err := h.receiveBrief(ctx, evs); err != nil {
					return err
				}
				continue
			}
			// One message may carry several events, a line each.
			for payload := range strings.SplitSeq(m.Payload, "\n") {
				if err := h.receive(ctx, payload); err != nil {
					return err
				}
			}
		}
	}
}

// resync runs when the subscription is (re)established: live events are
// being buffered by then, so whatever the log holds beyond the last
// delivered id is exactly what was missed.
func (h *Hub) resync(ctx context.Context) error {
	newest, err := h.events.LastEventID(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	started, last := h.started, h.last
	if !started {
		// Live from here on; replaying watchers may now join.
		h.started, h.last = true, newest
		for w := range h.replaying {
			w.signal()
		}
	}
	h.mu.Unlock()
	switch {
	case !started:
	case newest < last:
		h.lost(newest, fmt.Sprintf("the event log restarted at %d after %d: Redis lost its data", newest, last))
	default:
		if err := h.catchUp(ctx, 0); err != nil {
			return err
		}
	}
	h.mu.Lock()
	h.connected = true
	for e := range h.listeners {
		e.l.Connected()
	}
	h.mu.Unlock()
	h.dupRun = false
	h.log.Info("event subscription up", "last_event_id", newest)
	return nil
}

// receive handles one published event.
func (h *Hub) receive(ctx context.Context, payload string) error {
	ev, err := store.ParseEventRoute(payload)
	if err != nil || ev.ID == 0 {
		h.log.Warn("ignoring a malformed change event", "payload", payload, "err", err)
		return nil
	}
	h.mu.Lock()
	last := h.last
	h.mu.Unlock()
	// Watchers share the payload as their event's JSON: encoded once, not
	// once per watcher.
	ev.Raw = []byte(payload)
	switch {
	case ev.ID == last+1:
		h.dupRun = false
		h.deliver([]store.Event{ev})
	case ev.ID > last+1:
		// Missed some: take them from the log first.
		h.dupRun = false
		if err := h.catchUp(ctx, ev.ID-1); err != nil {
			return err
		}
		h.mu.Lock()
		last = h.last
		h.mu.Unlock()
		if ev.ID > last+1 { // the log ended early; cannot happen while it is written first
			h.lost(ev.ID-1, fmt.Sprintf("events %d to %d are missing from the event log", last+1, ev.ID-1))
		}
		h.deliver([]store.Event{ev})
	default:
		return h.stale(ctx, last)
	}
	return nil
}

// stale handles an event already delivered (last is the newest delivered
// id): the subscription buffered it while a resync read it from the log.
// Or the log restarted from 1 (Redis lost its data): check once per run of
// old ids.
func (h *Hub) stale(ctx context.Context, last uint64) error {
	if h.dupRun {
		return nil
	}
	h.dupRun = true
	newest, err := h.events.LastEventID(ctx)
	if err != nil {
		return err
	}
	if newest < last {
		h.lost(newest, fmt.Sprintf("the event log restarted at %d after %d: Redis lost its data", newest, last))
	}
	return nil
}

// receiveBrief handles a brief message (store.ParseBrief): the ids, types,
// namespaces and keys of consecutive events whose JSON is only in the log.
// That is all listeners take, so while no watcher is live they hear them
// at once. Watchers need the whole events: those come from the log, as
// after a gap.
func (h *Hub) receiveBrief(ctx context.Context, evs []store.Event) error {
	first, newest := evs[0].ID, evs[len(evs)-1].ID
	h.mu.Lock()
	last := h.last
	if len(h.groups) == 0 && first <= last+1 && newest > last {
		h.deliverLocked(evs)
		h.mu.Unlock()
		h.dupRun = false
		return nil
	}
	h.mu.Unlock()
	if newest <= last {
		return h.stale(ctx, last)
	}
	h.dupRun = false
	// To the end of the log, not just this message: the events of the
	// messages queued behind it come in the same reads, and those messages
	// are then skipped as delivered. A hub that fell behind a stream of
	// big batches so catches up in a few reads rather than one per batch.
	if err := h.catchUp(ctx, 0); err != nil {
		return err
	}
	h.mu.Lock()
	last = h.last
	h.mu.Unlock()
	if last < newest { // the log ended early; cannot happen while it is written first
		h.lost(newest, fmt.Sprintf("events %d to %d are missing from the event log", last+1, newest))
	}
	return nil
}

// catchUp delivers the logged events after the last delivered one, up to
// until (0: to the end of the log).
func (h *Hub) catchUp(ctx context.Context, until uint64) error {
	for {
		h.mu.Lock()
		last := h.last
		h.mu.Unlock()
		if until > 0 && last >= until {
			return nil
		}
		evs, complete, err := h.events.LoggedAfter(ctx, last, hubPage)
		if err != nil {
			return err
		}
		full := len(evs) == hubPage
		if !complete {
			h.lost(evs[0].ID-1, fmt.Sprintf("events %d to %d are no longer in the event log", last+1, evs[0].ID-1))
		}
		if until > 0 {
			for i, ev := range evs {
				if ev.ID > until {
					evs = evs[:i]
					break
				}
			}
		}
		h.deliver(evs)
		if !full {
			return nil
		}
	}
}

// deliver hands events to every listener and to the groups of watchers
// whose filter they match, skipping any already delivered. An event's Raw,
// when set, is its JSON as received, which watchers then share.
//
// An event is matched once per group and encoded once: every watcher of
// every group it matches shares the entry.
func (h *Hub) deliver(evs []store.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.deliverLocked(evs)
}

// deliverLocked is deliver with h.mu held.
func (h *Hub) deliverLocked(evs []store.Event) {
	for _, ev := range evs {
		if ev.ID <= h.last {
			continue
		}
		h.last = ev.ID
		for e := range h.listeners {
			e.l.Event(ev)
		}
		if !isChange(ev.Type) {
			continue
		}
		var e *entry
		for _, g := range h.groups {
			if !g.filter.Match(ev) {
				continue
			}
			if e == nil {
				e = &entry{ev: ev, data: ev.Raw, frame: AppendFrame(nil, Message{Event: ev, Data: ev.Raw})}
			}
			g.mu.Lock()
			ws := g.appendLocked(e)
			g.mu.Unlock()
			if ws != nil {
				g.signalAll(ws)
			}
		}
	}
}

// lost records that the events up to newLast will never be delivered:
// listeners hear Gap (and Connected again at once if the subscription is
// up: delivery is contiguous from newLast on), live watchers get a reset,
// and replaying ones notice the bumped loss count when they try to join.
func (h *Hub) lost(newLast uint64, reason string) {
	h.log.Warn("change events lost; caches dropped, watchers reset", "reason", reason)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = newLast
	h.losses++
	for e := range h.listeners {
		e.l.Gap()
	}
	for w := range h.live {
		w.resetLocked(newLast, reason)
	}
	if h.connected {
		for e := range h.listeners {
			e.l.Connected()
		}
	}
}

// disconnected records that the subscription is down and reports whether
// it was up.
func (h *Hub) disconnected() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	was := h.connected
	h.connected = false
	if was {
		for e := range h.listeners {
			e.l.Gap()
		}
	}
	return was
}

// close ends the hub: listeners hear Gap, watchers are closed.
func (h *Hub) close() {
	h.disconnected()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for w := range h.live {
		w.closeLocked()
	}
	for w := range h.replaying {
		w.closeLocked()
	}
}

// isChange reports whether an event type is a change to a key, which
// watchers see, rather than a control event, which only listeners see.
func isChange(typ string) bool {
	switch typ {
	case store.EventPut, store.EventDelete, store.EventExpire:
		return true
	}
	return false
}
