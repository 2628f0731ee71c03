package watch

import (
	"context"
	"fmt"
	"regexp"
	"sync"

	"github.com/memsync/memsync/internal/glob"
	"github.com/memsync/memsync/internal/store"
)

// Filter selects the events a watcher receives. Only changes to keys (put,
// delete, expire) ever reach a watcher; control events never do.
type Filter struct {
	// Namespace is the namespace watched; "" watches every namespace.
	Namespace string
	// Pattern, when set, must match the key (glob: "*" one segment, "**"
	// any depth).
	Pattern *glob.Pattern
	// Regexp, when set, must match the key (unanchored, as with ?regex=).
	Regexp *regexp.Regexp
	// Types, when not zero, are the kinds of change received: a watcher
	// of expiries alone need not hear every heartbeat's put.
	Types Types
}

// Types is a set of kinds of change (store.EventPut, EventDelete,
// EventExpire), made by TypesOf.
type Types uint8

// TypesOf returns the set of the kinds named, and false if one of them is
// no kind of change.
func TypesOf(kinds ...string) (Types, bool) {
	var ts Types
	for _, k := range kinds {
		t := typeBit(k)
		if t == 0 {
			return 0, false
		}
		ts |= t
	}
	return ts, true
}

// typeBit is the kind's member of Types; 0 for what is no change.
func typeBit(kind string) Types {
	switch kind {
	case store.EventPut:
		return 1
	case store.EventDelete:
		return 2
	case store.EventExpire:
		return 4
	}
	return 0
}

// Match reports whether ev passes the filter.
func (f Filter) Match(ev store.Event) bool {
	if !isChange(ev.Type) || (f.Namespace != "" && ev.Namespace != f.Namespace) {
		return false
	}
	if f.Types != 0 && f.Types&typeBit(ev.Type) == 0 {
		return false
	}
	if f.Pattern != nil && !f.Pattern.Match(ev.Key) {
		return false
	}
	return f.Regexp == nil || f.Regexp.MatchString(ev.Key)
}

// filterKey identifies a filter by what it matches: watchers whose filters
// have the same key share a group.
type filterKey struct {
	namespace         string
	pattern, regexp   string
	hasPattern, hasRE bool
	types             Types
}

func (f Filter) key() filterKey {
	k := filterKey{namespace: f.Namespace, types: f.Types}
	if f.Pattern != nil {
		k.pattern, k.hasPattern = f.Pattern.String(), true
	}
	if f.Regexp != nil {
		k.regexp, k.hasRE = f.Regexp.String(), true
	}
	return k
}

// Message is what a watcher receives: an event, or a reset.
type Message struct {
	// Event is the change. For a reset only Event.ID is set: the newest id
	// the reset stands for, after which events resume.
	Event store.Event
	// Reset, when not empty, says why events were lost: the receiver must
	// read the state it watches again.
	Reset string
	// Data is Event as JSON when the hub received it so (live events, and
	// events read from the log): shared by every watcher, not to be
	// modified. Nil otherwise. Event then carries only the routing fields
	// (see store.ParseEventRoute).
	Data []byte
}

// entry is one live event as every watcher it matches receives it: the
// hub decodes, matches and encodes an event once, whatever the number of
// watchers. Entries are never modified once made.
type entry struct {
	ev    store.Event
	data  []byte // ev as JSON, as received; nil when the hub read it from the log
	frame []byte // the event as a text/event-stream message (AppendFrame)
}

// group is the watchers whose filters are the same (filterKey): the hub
// matches an event once per group, not once per watcher, and buffers it
// once, in the group's ring, where each watcher has its own position.
type group struct {
	key    filterKey
	filter Filter
	size   int // each watcher's buffer (Options.Buffer)
	users  int // watchers using the group, replaying or live; the hub's mu
	idx    int // in Hub.groups; the hub's mu

	// mu guards the ring, and the live state of the group's watchers.
	mu   sync.Mutex
	ring []*entry // a power of two long; entry s is ring[s&(len(ring)-1)]
	head uint64   // entries ever appended
	tail uint64   // entries before it are let go of: every watcher took them
	// waiters are the open live watchers that took everything there was:
	// the next append signals them; the others know to look again.
	waiters []*Watcher
	// spare is the hub's: the waiters' last slice, signalled with g.mu
	// released and handed back for the next ones. Guarded by the hub's mu
	// (only deliver appends).
	spare []*Watcher
	// open counts the open live watchers: when every one of them waits,
	// the ring holds nothing anyone needs and is cleared.
	open int
}

// minRing is a group's first ring length: a ring grows to a watcher's
// buffer only while a watcher is that far behind.
const minRing = 16

func newGroup(f Filter, size int) *group {
	return &group{key: f.key(), filter: f, size: size, ring: make([]*entry, min(minRing, ringLen(size)))}
}

// ringLen is the ring length that holds the newest size entries.
func ringLen(size int) int {
	n := 1
	for n < size {
		n *= 2
	}
	return n
}

// appendLocked adds e to the ring and returns the waiting watchers, no
// longer waiting, for the caller to signal once g.mu is released: every
// watcher of the group takes that lock to drain, and should not wait for a
// thousand channel sends. The caller hands the slice back as g.spare. g.mu
// and the hub's mu are held. The ring keeps the newest entries: a watcher
// more than size behind gets a reset instead of those it missed
// (drainLocked).
func (g *group) appendLocked(e *entry) []*Watcher {
	n := uint64(len(g.ring))
	if g.head-g.tail >= n && len(g.ring) < ringLen(g.size) {
		// Full of entries someone may still take: double.
		ring := make([]*entry, 2*n)
		for s := g.head - n; s < g.head; s++ {
			ring[s&(2*n-1)] = g.ring[s&(n-1)]
		}
		g.ring, n = ring, 2*n
	}
	g.ring[g.head&(n-1)] = e
	g.head++
	g.tail = max(g.tail, g.head-min(g.head, n))
	if len(g.waiters) == 0 {
		return nil
	}
	ws := g.waiters
	for _, w := range ws {
		w.waiting = false
	}
	g.waiters, g.spare = g.spare[:0], nil
	return ws
}

// signalAll signals the watchers appendLocked returned, g.mu released,
// and keeps their slice for the next waiters; the hub's mu is held. A
// watcher that meanwhile took the entry and waits again gets a token for
// nothing, which only costs it a look.
func (g *group) signalAll(ws []*Watcher) {
	for i, w := range ws {
		w.signal()
		ws[i] = nil
	}
	g.spare = ws[:0]
}

// waitLocked makes the open live watcher w a waiter, and clears the ring
// if every watcher has taken everything; g.mu is held.
func (g *group) waitLocked(w *Watcher) {
	if !w.waiting {
		w.waiting = true
		g.waiters = append(g.waiters, w)
	}
	g.trimLocked()
}

// unwaitLocked removes w from the waiters; g.mu is held.
func (g *group) unwaitLocked(w *Watcher) {
	if !w.waiting {
		return
	}
	w.waiting = false
	for i, x := range g.waiters {
		if x == w {
			last := len(g.waiters) - 1
			g.waiters[i], g.waiters[last] = g.waiters[last], nil
			g.waiters = g.waiters[:last]
			return
		}
	}
}

// trimLocked lets go of the ring's entries once no watcher needs them, so
// that a quiet group holds no events; g.mu is held.
func (g *group) trimLocked() {
	if len(g.waiters) < g.open {
		return
	}
	n := uint64(len(g.ring))
	for ; g.tail < g.head; g.tail++ {
		g.ring[g.tail&(n-1)] = nil
	}
}

// Watcher is one subscriber's view of the change stream, with its own
// bounded buffer: a watcher that falls behind gets a reset instead of
// slowing the hub, the writers or other watchers down. Poll, PollSSE and
// Next are for one consumer goroutine; Close may be called from any.
//
// A live watcher's buffer is its position in its group's ring: buffering
// an event for a thousand watchers of one filter costs one append, and
// falling behind is noticed when the watcher next takes its messages.
type Watcher struct {
	hub   *Hub
	g     *group
	ready chan struct{} // a token when there may be something to Poll
	done  chan struct{} // closed by Close
	stop  func() bool   // unregisters the context's AfterFunc
	from  uint64        // the id its events come after (From)

	// Consumer state, while the watcher replays the log.
	cursor       uint64 // the newest id read from the log
	losses       uint64 // the hub's loss count when the replay started
	checkedAhead bool
	behind       int       // consecutive empty reads with the hub ahead
	next         []Message // taken by Poll, not yet returned by Next

	// Guarded by g.mu.
	live    bool      // receiving from the hub (else replaying the log)
	pos     uint64    // the next ring entry to take
	skip    uint64    // live events up to this id were replayed already
	reset   *Message  // a reset to hand out before the events after pos
	waiting bool      // in g.waiters
	closed  bool      // by then, what it had not taken moved to rest
	rest    []Message // closed: what is left to take
}

// Watch opens a watcher for the events that match f. With lastEventID 0 it
// receives the events delivered from now on. Otherwise it first replays the
// logged events after lastEventID, then joins the live stream without a gap
// or a duplicate; if the log no longer holds the event after lastEventID,
// the watcher starts with a reset. The watcher is closed when ctx ends, when
// Close is called, or when the hub stops. Watch returns ErrClosed once the
// hub has stopped.
func (h *Hub) Watch(ctx context.Context, f Filter, lastEventID uint64) (*Watcher, error) {
	w := &Watcher{hub: h, ready: make(chan struct{}, 1), done: make(chan struct{})}
	replay, from := lastEventID != 0, lastEventID
	h.mu.Lock()
	started := h.started
	h.mu.Unlock()
	if !replay && !started {
		// "From now on" before the hub knows where now is: from the end of
		// the log, replaying whatever lands there until the hub starts.
		newest, err := h.events.LastEventID(ctx)
		if err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
		replay, from = true, newest
		w.checkedAhead = true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	w.g = h.groupLocked(f)
	if !replay {
		from = h.last
	}
	w.from = from
	if !replay || (h.started && from == h.last) {
		h.live[w] = struct{}{}
		w.g.mu.Lock()
		w.live, w.pos = true, w.g.head
		w.g.open++
		w.g.waitLocked(w)
		w.g.mu.Unlock()
	} else {
		w.cursor, w.losses = from, h.losses
		h.replaying[w] = struct{}{}
		w.signal()
	}
	w.stop = context.AfterFunc(ctx, w.close)
	return w, nil
}

// From returns the id of the event the watcher's events come after: the
// lastEventID it was opened with, or the newest event the hub had
// delivered when it was opened. A reader of the state the watcher covers,
// made after Watch returned, is at least this recent.
func (w *Watcher) From() uint64 { return w.from }

// Ready returns a channel that receives when Poll may have something new.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Done returns a channel closed when the watcher is closed.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Close stops the watcher; messages already buffered can still be polled.
func (w *Watcher) Close() {
	w.stop()
	w.close()
}

func (w *Watcher) close() {
	w.hub.mu.Lock()
	defer w.hub.mu.Unlock()
	w.closeLocked()
}

// closeLocked closes w; the hub's mu is held.
func (w *Watcher) closeLocked() {
	h := w.hub
	_, live := h.live[w]
	_, replaying := h.replaying[w]
	if live || replaying {
		delete(h.live, w)
		delete(h.replaying, w)
		h.releaseLocked(w.g)
	}
	g := w.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if !w.closed {
		if w.live {
			// Take what is left now: the ring moves on without w.
			s := sink{}
			var batch [drainBatch]*entry
			for more := true; more; {
				var n int
				n, more = w.drainLocked(&s, batch[:])
				for _, e := range batch[:n] {
					s.entry(e)
				}
			}
			w.rest = s.msgs
			g.open--
			g.unwaitLocked(w)
			g.trimLocked()
		}
		w.closed = true
		close(w.done)
	}
}

// sink receives the messages Poll or PollSSE take: as Messages, or as
// text/event-stream bytes.
type sink struct {
	sse   bool
	msgs  []Message
	buf   []byte
	n     int // messages taken
	limit int // PollSSEUpTo: stop taking live events once buf holds this much
}

// full reports whether s has taken as much as it may.
func (s *sink) full() bool { return s.limit > 0 && len(s.buf) >= s.limit }

func (s *sink) message(m Message) {
	s.n++
	if s.sse {
		s.buf = AppendFrame(s.buf, m)
	} else {
		s.msgs = append(s.msgs, m)
	}
}

func (s *sink) entry(e *entry) {
	s.n++
	if s.sse {
		s.buf = append(s.buf, e.frame...)
	} else {
		s.msgs = append(s.msgs, Message{Event: e.ev, Data: e.data})
	}
}

// Poll appends to dst the messages available now, without waiting for new
// ones: while the watcher replays, that is one or more pages of the log (a
// Redis read). It returns ErrClosed once the watcher is closed and drained,
// and a store error when the log cannot be read.
func (w *Watcher) Poll(ctx context.Context, dst []Message) ([]Message, error) {
	s := sink{msgs: dst}
	err := w.poll(ctx, &s)
	return s.msgs, err
}

// PollSSE is Poll with each message appended to dst as a text/event-stream
// message (AppendFrame). A live event's bytes are encoded once, by the
// hub, and copied from there for every watcher.
func (w *Watcher) PollSSE(ctx context.Context, dst []byte) ([]byte, error) {
	s := sink{sse: true, buf: dst}
	err := w.poll(ctx, &s)
	return s.buf, err
}

// PollSSEUpTo is PollSSE that stops taking live events once dst holds
// limit bytes or more, overshooting by at most drainBatch events: more
// reports that some were left for the next call, which needs no signal to
// find them. A watcher that fell behind then holds a bounded round of its
// own, while the rest stay shared in its group's buffer.
func (w *Watcher) PollSSEUpTo(ctx context.Context, dst []byte, limit int) (_ []byte, more bool, _ error) {
	s := sink{sse: true, buf: dst, limit: max(limit, 1)}
	err := w.poll(ctx, &s)
	return s.buf, s.full() && err == nil, err
}

func (w *Watcher) poll(ctx context.Context, s *sink) error {
	g := w.g
	for {
		// A live watcher takes its entries in batches, copying only
		// pointers with g.mu held: the hub, and a thousand watchers of the
		// same filter, wait for that lock.
		var batch [drainBatch]*entry
		g.mu.Lock()
		live, closed := w.live, w.closed
		var n int
		more := false
		switch {
		case closed:
			for _, m := range w.rest {
				s.message(m)
			}
			w.rest = nil
		case live:
			n, more = w.drainLocked(s, batch[:])
		}
		g.mu.Unlock()
		for _, e := range batch[:n] {
			s.entry(e)
		}
		switch {
		case more && !s.full():
			continue
		case s.n > 0:
			if !live {
				w.signal() // more to replay
			}
			return nil
		case closed:
			return ErrClosed
		case live:
			return nil
		}
		if idle, err := w.replay(ctx, s); err != nil || idle {
			return err
		}
	}
}

// drainBatch is how many entries a watcher takes at a time.
const drainBatch = 32

// Next returns the next message, waiting until there is one, ctx ends
// (ctx.Err()) or the watcher is closed and drained (ErrClosed).
func (w *Watcher) Next(ctx context.Context) (Message, error) {
	for len(w.next) == 0 {
		var err error
		if w.next, err = w.Poll(ctx, w.next[:0]); err != nil {
			return Message{}, err
		}
		if len(w.next) > 0 {
			break
		}
		select {
		case <-w.ready:
		case <-w.done:
		case <-ctx.Done():
			return Message{}, ctx.Err()
		}
	}
	m := w.next[0]
	w.next = w.next[1:]
	return m, nil
}

// drainLocked takes a live watcher's messages: its pending reset, to s,
// then the ring's entries from its position on, into batch (n of them),
// more saying whether the batch was too short for them all. A watcher more
// than a buffer behind gets, instead of the oldest, one reset standing for
// them, so that it never holds more than a buffer of messages: what it
// would have held had each event been pushed to a buffer of its own,
// replaced by a reset when it overflowed. g.mu is held.
func (w *Watcher) drainLocked(s *sink, batch []*entry) (n int, more bool) {
	g, h := w.g, w.hub
	if behind := g.head - w.pos; behind > uint64(g.size) {
		first := g.head - uint64(g.size-1)
		id := g.ring[(first-1)&uint64(len(g.ring)-1)].ev.ID
		h.dropped.Add(first - w.pos)
		h.resets.Add(1)
		w.pos, w.reset = first, nil // this reset stands for that one too
		s.message(Message{Event: store.Event{ID: id},
			Reset: fmt.Sprintf("the watcher fell more than %d events behind", g.size)})
	}
	if w.reset != nil {
		s.message(*w.reset)
		w.reset = nil
	}
	for ; w.pos < g.head && n < len(batch); w.pos++ {
		if e := g.ring[w.pos&uint64(len(g.ring)-1)]; e.ev.ID > w.skip {
			batch[n] = e
			n++
		}
	}
	h.delivered.Add(uint64(n))
	if w.pos < g.head {
		return n, true
	}
	g.waitLocked(w)
	return n, false
}

// replay reads one page of the log after the cursor, and joins the live
// stream once it has caught up with the hub. idle is true when it has
// caught up but the hub has not started yet: Ready fires when it does.
//
// Joining is race-free because the log is written before an event is
// published, so the hub is never ahead of it: once the cursor has reached
// the hub's last delivered id (checked with the hub's lock held, so no
// delivery slips in between), every later event is still to be delivered
// live, and live events the replay already returned are skipped.
func (w *Watcher) replay(ctx context.Context, s *sink) (idle bool, _ error) {
	h := w.hub
	evs, complete, err := h.events.LoggedAfter(ctx, w.cursor, logPage)
	if err != nil {
		return false, fmt.Errorf("watch: replay after %d: %w", w.cursor, err)
	}
	if !complete {
		w.join(s, fmt.Sprintf("the events after %d are no longer retained", w.cursor))
		return false, nil
	}
	if len(evs) == 0 && !w.checkedAhead {
		// An id the log never reached (Redis lost its data since, or the
		// client made it up) would otherwise skip live events until the
		// ids catch up with it.
		w.checkedAhead = true
		newest, err := h.events.LastEventID(ctx)
		if err != nil {
			return false, fmt.Errorf("watch: replay after %d: %w", w.cursor, err)
		}
		if newest < w.cursor {
			w.join(s, fmt.Sprintf("event %d is beyond the newest in the log (%d)", w.cursor, newest))
			return false, nil
		}
	}
	for _, ev := range evs {
		if w.g.filter.Match(ev) {
			s.message(Message{Event: ev, Data: ev.Raw})
		}
	}
	if len(evs) > 0 {
		w.cursor = evs[len(evs)-1].ID
	}
	if len(evs) == logPage {
		return false, nil
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.replaying[w]; !ok { // closed meanwhile
		return false, nil
	}
	switch {
	case h.losses != w.losses:
		w.joinLocked(s, "the event subscription lost events")
	case !h.started:
		return true, nil
	case w.cursor >= h.last:
		w.goLiveLocked(w.cursor)
	case len(evs) > 0:
		w.behind = 0
	default:
		// The hub delivered more since the read: the next read finds it,
		// since the log is written first. Twice in a row means the log
		// restarted behind the hub.
		if w.behind++; w.behind >= 2 {
			w.joinLocked(s, "the event log restarted")
		}
	}
	return false, nil
}

// join gives up the replay: a reset, then live events from the hub's
// position.
func (w *Watcher) join(s *sink, reason string) {
	w.hub.mu.Lock()
	defer w.hub.mu.Unlock()
	if _, ok := w.hub.replaying[w]; ok {
		w.joinLocked(s, reason)
	}
}

func (w *Watcher) joinLocked(s *sink, reason string) {
	w.hub.resets.Add(1)
	w.goLiveLocked(w.hub.last)
	s.message(Message{Event: store.Event{ID: w.hub.last}, Reset: reason})
}

// goLiveLocked moves w from replaying to live, skipping live events up to
// skip; the hub's mu is held, so no event is delivered meanwhile: w takes
// the ring's entries from the next one on.
func (w *Watcher) goLiveLocked(skip uint64) {
	delete(w.hub.replaying, w)
	w.hub.live[w] = struct{}{}
	g := w.g
	g.mu.Lock()
	w.live, w.skip, w.pos = true, skip, g.head
	g.open++
	g.waitLocked(w)
	g.mu.Unlock()
	w.signal()
}

// resetLocked replaces what w holds by a reset standing for every event up
// to id; the hub's mu is held.
func (w *Watcher) resetLocked(id uint64, reason string) {
	g := w.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.closed {
		return
	}
	w.hub.dropped.Add(g.head - w.pos)
	w.pos = g.head
	w.reset = &Message{Event: store.Event{ID: id}, Reset: reason}
	w.skip = id // the hub goes on after id, even if the ids restarted below skip
	w.hub.resets.Add(1)
	w.signal()
}

func (w *Watcher) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}
