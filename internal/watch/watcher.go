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
}

// Match reports whether ev passes the filter.
func (f Filter) Match(ev store.Event) bool {
	if !isChange(ev.Type) || (f.Namespace != "" && ev.Namespace != f.Namespace) {
		return false
	}
	if f.Pattern != nil && !f.Pattern.Match(ev.Key) {
		return false
	}
	return f.Regexp == nil || f.Regexp.MatchString(ev.Key)
}

// Message is what a watcher receives: an event, or a reset.
type Message struct {
	// Event is the change. For a reset only Event.ID is set: the newest id
	// the reset stands for, after which events resume.
	Event store.Event
	// Reset, when not empty, says why events were lost: the receiver must
	// read the state it watches again.
	Reset string
	// Data is Event as JSON when the hub received it so (live events):
	// shared by every watcher, not to be modified. Nil otherwise.
	Data []byte
}

// Watcher is one subscriber's view of the change stream, with its own
// bounded buffer: a watcher that falls behind gets a reset instead of
// slowing the hub, the writers or other watchers down. Poll and Next are
// for one consumer goroutine; Close may be called from any.
type Watcher struct {
	hub    *Hub
	filter Filter
	size   int
	ready  chan struct{} // a token when there may be something to Poll
	done   chan struct{} // closed by Close
	stop   func() bool   // unregisters the context's AfterFunc

	// Consumer state, while the watcher replays the log.
	cursor       uint64 // the newest id read from the log
	losses       uint64 // the hub's loss count when the replay started
	checkedAhead bool
	behind       int       // consecutive empty reads with the hub ahead
	next         []Message // taken by Poll, not yet returned by Next

	mu     sync.Mutex
	live   bool      // receiving from the hub (else replaying the log)
	skip   uint64    // live events up to this id were replayed already
	buf    []Message // live messages not yet polled
	closed bool
}

// Watch opens a watcher for the events that match f. With lastEventID 0 it
// receives the events delivered from now on. Otherwise it first replays the
// logged events after lastEventID, then joins the live stream without a gap
// or a duplicate; if the log no longer holds the event after lastEventID,
// the watcher starts with a reset. The watcher is closed when ctx ends, when
// Close is called, or when the hub stops. Watch returns ErrClosed once the
// hub has stopped.
func (h *Hub) Watch(ctx context.Context, f Filter, lastEventID uint64) (*Watcher, error) {
	w := &Watcher{hub: h, filter: f, size: h.opts.Buffer,
		ready: make(chan struct{}, 1), done: make(chan struct{})}
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
	if !replay || (h.started && from == h.last) {
		w.live = true
		h.live[w] = struct{}{}
	} else {
		w.cursor, w.losses = from, h.losses
		h.replaying[w] = struct{}{}
		w.signal()
	}
	w.stop = context.AfterFunc(ctx, w.close)
	return w, nil
}

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
	delete(w.hub.live, w)
	delete(w.hub.replaying, w)
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		close(w.done)
	}
}

// Poll appends to dst the messages available now, without waiting for new
// ones: while the watcher replays, that is one or more pages of the log (a
// Redis read). It returns ErrClosed once the watcher is closed and drained,
// and a store error when the log cannot be read.
func (w *Watcher) Poll(ctx context.Context, dst []Message) ([]Message, error) {
	n := len(dst)
	for {
		w.mu.Lock()
		live, closed := w.live, w.closed
		if live {
			dst = append(dst, w.buf...)
			clear(w.buf) // let go of the values
			w.buf = w.buf[:0]
		}
		w.mu.Unlock()
		switch {
		case len(dst) > n:
			if !live {
				w.signal() // more to replay
			}
			return dst, nil
		case closed:
			return dst, ErrClosed
		case live:
			return dst, nil
		}
		var idle bool
		var err error
		if dst, idle, err = w.replay(ctx, dst); err != nil || idle {
			return dst, err
		}
	}
}

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

// replay reads one page of the log after the cursor, and joins the live
// stream once it has caught up with the hub. idle is true when it has
// caught up but the hub has not started yet: Ready fires when it does.
//
// Joining is race-free because the log is written before an event is
// published, so the hub is never ahead of it: once the cursor has reached
// the hub's last delivered id (checked with the hub's lock held, so no
// delivery slips in between), every later event is still to be delivered
// live, and live events the replay already returned are skipped.
func (w *Watcher) replay(ctx context.Context, dst []Message) (_ []Message, idle bool, _ error) {
	h := w.hub
	evs, complete, err := h.events.EventsAfter(ctx, w.cursor, logPage)
	if err != nil {
		return dst, false, fmt.Errorf("watch: replay after %d: %w", w.cursor, err)
	}
	if !complete {
		return w.join(dst, fmt.Sprintf("the events after %d are no longer retained", w.cursor)), false, nil
	}
	if len(evs) == 0 && !w.checkedAhead {
		// An id the log never reached (Redis lost its data since, or the
		// client made it up) would otherwise skip live events until the
		// ids catch up with it.
		w.checkedAhead = true
		newest, err := h.events.LastEventID(ctx)
		if err != nil {
			return dst, false, fmt.Errorf("watch: replay after %d: %w", w.cursor, err)
		}
		if newest < w.cursor {
			return w.join(dst, fmt.Sprintf("event %d is beyond the newest in the log (%d)", w.cursor, newest)), false, nil
		}
	}
	for _, ev := range evs {
		if w.filter.Match(ev) {
			dst = append(dst, Message{Event: ev})
		}
	}
	if len(evs) > 0 {
		w.cursor = evs[len(evs)-1].ID
	}
	if len(evs) == logPage {
		return dst, false, nil
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.replaying[w]; !ok { // closed meanwhile
		return dst, false, nil
	}
	switch {
	case h.losses != w.losses:
		return w.joinLocked(dst, "the event subscription lost events"), false, nil
	case !h.started:
		return dst, true, nil
	case w.cursor >= h.last:
		w.goLiveLocked(w.cursor)
	case len(evs) > 0:
		w.behind = 0
	default:
		// The hub delivered more since the read: the next read finds it,
		// since the log is written first. Twice in a row means the log
		// restarted behind the hub.
		if w.behind++; w.behind >= 2 {
			return w.joinLocked(dst, "the event log restarted"), false, nil
		}
	}
	return dst, false, nil
}

// join gives up the replay: a reset, then live events from the hub's
// position.
func (w *Watcher) join(dst []Message, reason string) []Message {
	w.hub.mu.Lock()
	defer w.hub.mu.Unlock()
	if _, ok := w.hub.replaying[w]; !ok {
		return dst
	}
	return w.joinLocked(dst, reason)
}

func (w *Watcher) joinLocked(dst []Message, reason string) []Message {
	w.hub.resets.Add(1)
	w.goLiveLocked(w.hub.last)
	return append(dst, Message{Event: store.Event{ID: w.hub.last}, Reset: reason})
}

// goLiveLocked moves w from replaying to live, skipping live events up to
// skip; the hub's mu is held.
func (w *Watcher) goLiveLocked(skip uint64) {
	delete(w.hub.replaying, w)
	w.hub.live[w] = struct{}{}
	w.mu.Lock()
	w.live, w.skip = true, skip
	w.mu.Unlock()
	w.signal()
}

// push buffers a live event; the hub's mu is held. A full buffer is
// replaced by one reset, after which events resume.
func (w *Watcher) push(ev store.Event, raw []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ev.ID <= w.skip || w.closed {
		return
	}
	if len(w.buf) >= w.size {
		w.dropBuffered()
		w.hub.dropped.Add(1) // ev itself
		w.buf = append(w.buf, Message{Event: store.Event{ID: ev.ID},
			Reset: fmt.Sprintf("the watcher fell more than %d events behind", w.size)})
		w.hub.resets.Add(1)
	} else {
		w.buf = append(w.buf, Message{Event: ev, Data: raw})
		w.hub.delivered.Add(1)
	}
	w.signal()
}

// reset replaces the buffer by a reset standing for every event up to id;
// the hub's mu is held.
func (w *Watcher) reset(id uint64, reason string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.dropBuffered()
	w.buf = append(w.buf, Message{Event: store.Event{ID: id}, Reset: reason})
	w.skip = id // the hub goes on after id, even if the ids restarted below skip
	w.hub.resets.Add(1)
	w.signal()
}

// dropBuffered empties the buffer, counting the events in it; w.mu is held.
func (w *Watcher) dropBuffered() {
	for _, m := range w.buf {
		if m.Reset == "" {
			w.hub.dropped.Add(1)
		}
	}
	clear(w.buf)
	w.buf = w.buf[:0]
}

func (w *Watcher) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}
