package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The types of an Event.
const (
	EventPut    = "put"    // a write
	EventDelete = "delete" // a delete
	EventExpire = "expire" // a key whose TTL ran out (a worker's heartbeat, say)
	EventReset  = "reset"  // events were lost: read what you watch again
	// EventSynced ends the initial state (Initial): the events that
	// follow are changes.
	EventSynced = "synced"
)

// Defaults of Watch.
const (
	// DefaultWatchRetryMin and DefaultWatchRetryMax bound the pause before
	// each reconnect: it starts at DefaultWatchRetryMin (or at the stream's
	// "retry:" field, if it sends one), doubles with every failed attempt
	// up to DefaultWatchRetryMax, and starts over once a stream delivers
	// again. A Retry-After from the server lengthens it.
	DefaultWatchRetryMin = 100 * time.Millisecond
	DefaultWatchRetryMax = 5 * time.Second
	// DefaultWatchIdleTimeout is how long a stream may stay silent before
	// it is taken for dead and reconnected: the server pings an idle
	// stream every 15 s, so this is three missed pings.
	DefaultWatchIdleTimeout = 45 * time.Second
)

const (
	// maxSSELine bounds one line of the stream. The server sends values of
	// up to 16 KiB in its events, so a line this long means the stream is
	// not what it should be.
	maxSSELine = 1 << 20
	// minSSERetry is the shortest reconnection time a "retry:" field can
	// ask for.
	minSSERetry = 10 * time.Millisecond
)

// Event is one change to a watched key, or a reset.
type Event struct {
	// ID orders events. Ids are consecutive across all keys and namespaces
	// (a watch sees a subset of them), and a reconnect resumes after the
	// last one seen. A reset has the id after which events resume, or 0
	// when the client made it itself (see Watch). The puts of the initial
	// state have none (0); EventSynced has the id the changes come after.
	ID uint64
	// Type is EventPut, EventDelete, EventExpire, EventReset or
	// EventSynced.
	Type string
	// Initial is true for the puts of the initial state (see Initial):
	// each is a key as it was when the watch began, its Version the merge
	// of its siblings and its Value the resolved one (nil when larger than
	// 16 KiB, or left to the client by the siblings strategy).
	Initial bool
	// Keys counts, for EventSynced, the puts of the initial state.
	Keys int
	// Namespace and Key name the key that changed; empty for a reset.
	Namespace, Key string
	// Version is the put's vector clock; nil for other types.
	Version map[string]uint64
	// Timestamp is when the change happened, by the server's clock.
	Timestamp time.Time
	// Writer is the worker that put; empty for other types.
	Writer string
	// Value is the put's value as JSON. It is nil for a delete, an expire,
	// a reset, and for a put whose value is larger than 16 KiB: Get the
	// key then.
	Value json.RawMessage
	// Reason says, for a reset, why events were lost.
	Reason string
}

// Decode unmarshals the put's value into v. It fails for an event without
// a value (see Event.Value).
func (e Event) Decode(v any) error {
	if e.Value == nil {
		return fmt.Errorf("memsync: %s event %d of %q carries no value", e.Type, e.ID, e.Key)
	}
	if err := json.Unmarshal(e.Value, v); err != nil {
		return fmt.Errorf("memsync: decode event %d of %q: %w", e.ID, e.Key, err)
	}
	return nil
}

// eventJSON is an event's data on the wire (a reset's data is
// {"reason": …}).
type eventJSON struct {
	ID        uint64            `json:"id"`
	Type      string            `json:"type"`
	Namespace string            `json:"namespace"`
	Key       string            `json:"key"`
	Version   map[string]uint64 `json:"version"`
	Timestamp int64             `json:"timestamp"`
	Writer    string            `json:"writer"`
	Value     json.RawMessage   `json:"value"`
	Reason    string            `json:"reason"`
	Initial   bool              `json:"initial"`
	Keys      int               `json:"keys"`
}

// WatchOption configures Watch.
type WatchOption func(*watchOptions)

type watchOptions struct {
	initial bool
	regex   string
	types   []string
	from    uint64
	onError func(error)
	idle    time.Duration
}

// Regex watches the keys that match expr, an RE2 regular expression
// (unanchored) over the key, instead of a glob: pass "" as Watch's
// pattern.
func Regex(expr string) WatchOption { return func(o *watchOptions) { o.regex = expr } }

// Types watches only the kinds of change named: EventPut, EventDelete,
// EventExpire (a supervisor that waits for workers' heartbeats to expire
// need not hear every heartbeat). Defaults to every kind. Resets come
// whatever the types; event ids still count every change, so they skip.
func Types(kinds ...string) WatchOption {
	return func(o *watchOptions) { o.types = append([]string(nil), kinds...) }
}

// Initial makes the watch start with the current state of every key it
// covers: a put event (Event.Initial) per key that exists, in key order,
// then an EventSynced, then the changes since the watch began. State read
// and changes watched leave no gap between them: a key that changes
// meanwhile, or just before (its event had not reached the server's
// instance yet), comes again with its change, so apply the events in
// order and the last one of a key is its state. When the stream drops before
// EventSynced, the reconnect delivers a reset and the whole state again.
// The types watched must include EventPut; FromEventID, which resumes,
// sends no initial state.
func Initial() WatchOption { return func(o *watchOptions) { o.initial = true } }

// FromEventID starts the watch after event id (an Event.ID seen before):
// every matching event since is replayed first, as long as the server's
// event log still holds it (its latest 10,000 events), else a reset comes
// first. Defaults to 0: from now on.
func FromEventID(id uint64) WatchOption { return func(o *watchOptions) { o.from = id } }

// OnWatchError makes Watch call fn with the reason of every reconnect (a
// dropped or silent stream, a failed attempt to reconnect). fn runs on the
// watch's goroutine: it must not block. Defaults to none.
func OnWatchError(fn func(error)) WatchOption { return func(o *watchOptions) { o.onError = fn } }

// WatchIdleTimeout sets how long a stream may stay silent before it is
// reconnected. Defaults to DefaultWatchIdleTimeout (45 s); set it above
// the server's ping interval (15 s by default).
func WatchIdleTimeout(d time.Duration) WatchOption { return func(o *watchOptions) { o.idle = d } }

// Watch is a running subscription to the changes of some keys: the handle
// Client.Watch returns. Its methods are safe for concurrent use.
type Watch struct {
	c      *Client
	query  url.Values
	opts   watchOptions
	events chan Event
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has ended

	closeOnce sync.Once
	mu        sync.Mutex
	closed    bool
	err       error
	last      uint64 // the id of the last event put in events; only run writes it
	retryMin  time.Duration
}

// Watch subscribes to the changes (puts, deletes, expiries) of the keys in
// the client's namespace that match pattern, a glob ("tasks/*/state": *
// is one segment, ** any depth; "" is every key), or the Regex option's
// expression, and delivers them on Events in id order: the design
// document's subscribe(pattern, onChange).
//
// Watch returns once the server has accepted the subscription, so every
// change made after it returns is delivered. It fails if that first
// attempt fails: ErrInvalid for a bad pattern, regex or type, ErrUnavailable when
// the server cannot serve it, or the transport's error.
//
// From then on it keeps the subscription up until ctx ends or Close is
// called. When a stream drops (the server restarted, a proxy timed it out,
// nothing arrived for WatchIdleTimeout) it reconnects with Last-Event-ID,
// the last id seen, after a bounded pause (DefaultWatchRetryMin to
// DefaultWatchRetryMax), so no event is missed or repeated while the
// server's event log still holds it. When events were lost anyway — the
// caller read too slowly and fell 256 events behind, the log no longer
// held them, or the first stream dropped before any event gave an id to
// resume from — an Event of type EventReset comes in their place: read the
// state you watch again.
//
// A 4xx answer to a reconnect (other than 408 and 429), or a stream that
// is not Server-Sent Events, ends the watch; Err then says why. A Timeout
// on the client's HTTP client (WithHTTPClient) ends each stream after it,
// and Watch reconnects.
func (c *Client) Watch(ctx context.Context, pattern string, opts ...WatchOption) (*Watch, error) {
	o := watchOptions{idle: DefaultWatchIdleTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.idle <= 0 {
		o.idle = DefaultWatchIdleTimeout
	}
	q := url.Values{}
	if pattern != "" {
		q.Set("pattern", pattern)
	}
	if o.regex != "" {
		q.Set("regex", o.regex)
	}
	if len(o.types) > 0 {
		q.Set("types", strings.Join(o.types, ","))
	}
	if o.initial {
		q.Set("initial", "true")
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Watch{c: c, query: q, opts: o, events: make(chan Event), cancel: cancel,
		done: make(chan struct{}), last: o.from, retryMin: DefaultWatchRetryMin}
	conn, err := w.connect(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	go w.run(ctx, conn)
	return w, nil
}

// Events delivers the events in id order. It is closed when the watch
// ends: after Close, when the context ends, or when the server refused a
// reconnect (see Err). Read it promptly: the server keeps up to 256 events
// for a slow reader, then replaces them with a reset.
func (w *Watch) Events() <-chan Event { return w.events }

// Err says why the watch ended: nil while it runs and after Close, the
// context's error when the context ended, else the error that stopped it
// (an *APIError for a refused reconnect).
func (w *Watch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close ends the watch and returns once its goroutine has ended and Events
// is closed. It may be called more than once.
func (w *Watch) Close() {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		w.cancel()
	})
	<-w.done
}

// errStream marks errors that reconnecting cannot cure: the stream is not
// what the server sends.
var errStream = errors.New("memsync: watch: bad event stream")

// sseConn is one open stream.
type sseConn struct {
	resp   *http.Response
	ctx    context.Context    // the request's
	cancel context.CancelFunc // ends the request, for the idle timeout
}

// connect opens a stream that resumes after w.last.
func (w *Watch) connect(ctx context.Context) (*sseConn, error) {
	ctx, cancel := context.WithCancel(ctx)
	h := http.Header{"Accept": {"text/event-stream"}, "Cache-Control": {"no-cache"}}
	if w.last > 0 {
		h.Set("Last-Event-ID", strconv.FormatUint(w.last, 10))
	}
	resp, err := w.c.send(ctx, request{method: http.MethodGet, path: "/v1/watch", query: w.query, header: h})
	if err != nil {
		cancel()
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("%w: GET /v1/watch answered %d with Content-Type %q", errStream, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return &sseConn{resp: resp, ctx: ctx, cancel: cancel}, nil
}

// run reads streams and reconnects until the watch ends.
func (w *Watch) run(ctx context.Context, conn *sseConn) {
	defer close(w.done)
	defer close(w.events)
	backoff := w.retryMin
	for {
		start := time.Now()
		delivered, err := w.stream(ctx, conn)
		if w.stopped(ctx, err) {
			return
		}
		if delivered || time.Since(start) >= DefaultWatchRetryMax {
			backoff = w.retryMin // the stream was healthy: start over
		}
		w.report(err)

		hadID := w.last > 0
		for {
			var ae *APIError
			pause := jitter(backoff)
			if errors.As(err, &ae) && ae.RetryAfter > pause {
				pause = ae.RetryAfter // the server's word is a floor, not jittered
			}
			if !sleep(ctx, pause) {
				w.stopped(ctx, ctx.Err())
				return
			}
			backoff = min(2*backoff, DefaultWatchRetryMax)
			if conn, err = w.connect(ctx); err == nil {
				break
			}
			if w.stopped(ctx, err) {
				return
			}
			w.report(err)
		}
		if !hadID {
			// Without an id the server cannot replay what happened while
			// the first stream was down.
			reset := Event{Type: EventReset, Reason: "reconnected before any event gave an id to resume from: changes may have been missed"}
			if !w.deliver(ctx, reset) {
				w.stopped(ctx, ctx.Err())
				return
			}
		}
	}
}

// stopped reports whether the watch must end after err, and if so records
// why.
func (w *Watch) stopped(ctx context.Context, err error) bool {
	switch {
	case ctx.Err() != nil:
		err = ctx.Err()
	case !incurable(err):
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.err = err
	}
	return true
}

func (w *Watch) report(err error) {
	if w.opts.onError != nil {
		w.opts.onError(err)
	}
}

// deliver hands ev to the caller; false when the watch ended first.
func (w *Watch) deliver(ctx context.Context, ev Event) bool {
	select {
	case w.events <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// stream reads one stream until it ends, delivering its events, and says
// whether it delivered any. It always returns an error: why the stream
// ended.
func (w *Watch) stream(ctx context.Context, conn *sseConn) (delivered bool, err error) {
	defer conn.cancel()
	defer conn.resp.Body.Close()
	idle := time.AfterFunc(w.opts.idle, conn.cancel)
	defer idle.Stop()
	r := newSSEReader(conn.resp.Body)
	for {
		m, err := r.next(func() { idle.Reset(w.opts.idle) })
		if err != nil {
			if ctx.Err() == nil && conn.ctx.Err() != nil {
				err = fmt.Errorf("memsync: watch: nothing received for %v", w.opts.idle)
			}
			return delivered, err
		}
		if r.retry > 0 {
			w.retryMin = min(max(r.retry, minSSERetry), DefaultWatchRetryMax)
		}
		if m.data != nil {
			ev, err := m.event()
			if err != nil {
				return delivered, err
			}
			idle.Stop() // a slow reader is not a silent stream
			if !w.deliver(ctx, ev) {
				return delivered, ctx.Err()
			}
			idle.Reset(w.opts.idle)
			delivered = true
			if ev.ID > 0 {
				w.last = ev.ID
			}
		}
		// The stream's last event id is where a reconnect resumes, even
		// when it came without data.
		if id, ok := m.lastEventID(); ok {
			w.last = id
		}
	}
}

// incurable reports whether err is one that reconnecting cannot cure: a
// 4xx answer other than 408 and 429, or a stream that is not one.
func incurable(err error) bool {
	var ae *APIError
	return errors.Is(err, errStream) || errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 &&
		ae.Status != http.StatusRequestTimeout && ae.Status != http.StatusTooManyRequests
}

// sleep waits d; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter spreads reconnects over [d/2, d], so that the watchers of a
// restarted server do not all come back at once.
func jitter(d time.Duration) time.Duration {
	if d < 2 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// sseMessage is one dispatched message of an event stream.
type sseMessage struct {
	lastID    string  // the stream's last event ID at dispatch: it outlives messages
	hasLastID bool    // an id field has come on the stream
	ownID     bool    // an id field came in this message
	typ       string  // the event field; "" when none came
	data      *string // nil for a dispatch without data lines
}

// lastEventID parses the stream's last event id.
func (m sseMessage) lastEventID() (uint64, bool) {
	if !m.hasLastID {
		return 0, false
	}
	id, err := strconv.ParseUint(m.lastID, 10, 64)
	return id, err == nil
}

// event decodes a message from the server into an Event.
func (m sseMessage) event() (Event, error) {
	var j eventJSON
	if err := json.Unmarshal([]byte(*m.data), &j); err != nil {
		return Event{}, fmt.Errorf("%w: event %q after id %s: %v", errStream, m.typ, m.lastID, err)
	}
	ev := Event{ID: j.ID, Type: m.typ, Namespace: j.Namespace, Key: j.Key, Version: j.Version,
		Timestamp: fromMillis(j.Timestamp), Writer: j.Writer, Value: j.Value, Reason: j.Reason,
		Initial: j.Initial, Keys: j.Keys}
	if id, ok := m.lastEventID(); ok && m.ownID {
		ev.ID = id // the id a reconnect resumes after
	}
	if ev.Type == "" || ev.Type == "message" { // the spec's default type
		ev.Type = j.Type
	}
	return ev, nil
}

// sseReader parses a text/event-stream as the HTML standard's "event
// stream interpretation" does: lines end in CRLF, LF or CR; a blank line
// dispatches; lines starting with ':' are comments (the server's pings);
// "field: value" loses one space after the colon; data lines join with
// '\n'; an id with a NUL is ignored; a message cut off by the end of the
// stream is dropped.
type sseReader struct {
	sc    *bufio.Scanner
	first bool
	// The buffers of the message being read; lastID outlives messages.
	lastID string
	hasID  bool
	ownID  bool
	typ    string
	data   strings.Builder
	lines  int
	// retry is the reconnection time of the last "retry:" field, 0 if none.
	retry time.Duration
}

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxSSELine)
	sc.Split(sseLines())
	return &sseReader{sc: sc, first: true}
}

// next returns the next dispatched message; read is called after every
// line, comments included (the stream is alive). At the end of the stream
// it returns the reader's error, wrapping io.EOF for a clean end.
func (r *sseReader) next(read func()) (sseMessage, error) {
	for r.sc.Scan() {
		read()
		line := r.sc.Text()
		if r.first {
			line = strings.TrimPrefix(line, "\uFEFF")
			r.first = false
		}
		if line == "" {
			if m, ok := r.dispatch(); ok {
				return m, nil
			}
			continue
		}
		if line[0] == ':' {
			continue // a comment: ": ping", ": watching"
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			r.typ = value
		case "data":
			if r.lines > 0 {
				r.data.WriteByte('\n')
			}
			r.data.WriteString(value)
			r.lines++
		case "id":
			if !strings.ContainsRune(value, 0) {
				r.lastID, r.hasID, r.ownID = value, true, true
			}
		case "retry":
			if ms, err := strconv.ParseUint(value, 10, 32); err == nil {
				r.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	err := r.sc.Err()
	switch {
	case errors.Is(err, bufio.ErrTooLong):
		return sseMessage{}, fmt.Errorf("%w: a line longer than %d bytes", errStream, maxSSELine)
	case err == nil:
		return sseMessage{}, fmt.Errorf("memsync: watch: the server ended the stream: %w", io.EOF)
	}
	return sseMessage{}, fmt.Errorf("memsync: watch: %w", err)
}

// dispatch ends the message being read. It returns it unless nothing
// came since the last dispatch.
func (r *sseReader) dispatch() (sseMessage, bool) {
	m := sseMessage{lastID: r.lastID, hasLastID: r.hasID, ownID: r.ownID, typ: r.typ}
	if r.lines > 0 {
		s := r.data.String()
		m.data = &s
	}
	r.typ, r.lines, r.ownID = "", 0, false
	r.data.Reset()
	return m, m.data != nil || m.ownID
}

// sseLines splits lines ending in CRLF, LF or CR. A CR is a line's end at
// once, so a stream that ends its lines with CR alone is not held up
// waiting for the next byte; an LF right after it is skipped then.
func sseLines() bufio.SplitFunc {
	skipLF := false
	return func(data []byte, atEOF bool) (int, []byte, error) {
		skipped := 0
		if skipLF && len(data) > 0 {
			skipLF = false
			if data[0] == '\n' {
				data, skipped = data[1:], 1
			}
		}
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			skipLF = data[i] == '\r'
			return skipped + i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return skipped + len(data), data, nil
		}
		return skipped, nil, nil
	}
}
