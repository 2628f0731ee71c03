package http

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/memsync/memsync/internal/glob"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/watch"
)

// Watches opens watchers on the change stream; *watch.Hub is one.
type Watches interface {
	Watch(ctx context.Context, f watch.Filter, lastEventID uint64) (*watch.Watcher, error)
}

// CacheInvalidator drops cached keys by pattern on every instance;
// *cache.Cache is one.
type CacheInvalidator interface {
	InvalidatePattern(ctx context.Context, ns string, p *glob.Pattern) (int, error)
}

// DefaultWatchPing is how often an idle watch stream gets a ": ping"
// comment, which keeps proxies from closing it and tells a client the
// connection is alive.
const DefaultWatchPing = 15 * time.Second

const (
	// maxRegexLen bounds ?regex=. Go's regexps run in linear time, so only
	// their size needs a limit.
	maxRegexLen = 1024
	// sseWriteTimeout bounds the writes to a watch stream: a client that
	// stops reading is dropped rather than holding the handler forever.
	// The deadline moves once half of it has passed, so a blocked write
	// fails after 15 to 30 s.
	sseWriteTimeout = 30 * time.Second
)

// Option adds an optional dependency to NewServer.
type Option func(*Server)

// WithWatch serves GET /v1/watch from w, pinging idle streams every ping
// (DefaultWatchPing when 0).
func WithWatch(w Watches, ping time.Duration) Option {
	return func(s *Server) {
		if ping <= 0 {
			ping = DefaultWatchPing
		}
		s.prop.watches, s.prop.ping = w, ping
	}
}

// WithCache serves POST /v1/cache/invalidate with c.
func WithCache(c CacheInvalidator) Option {
	return func(s *Server) { s.prop.cache = c }
}

// propagation holds the optional dependencies of the propagation routes.
type propagation struct {
	watches Watches
	ping    time.Duration
	cache   CacheInvalidator
}

// sseFlushEvery is the shortest time between two writes to one watch
// stream, unless it writes a backlog (sseRoundMax): events that arrive
// meanwhile go out together, and add at most this much latency. A write costs the same syscall (and, on loopback, the
// receiver's TCP processing) whether it carries one event or forty, so this
// is what a busy stream costs: at most 50 writes a second. At 10 ms, a
// thousand watchers of a busy key took a third more CPU (on both ends of
// the connection) for 10 ms less latency, and left too little of a shared
// two-core machine to writers and everything else (cmd/bench watch-fanout).
const sseFlushEvery = 20 * time.Millisecond

// errNotConfigured answers a route whose dependency the server was built
// without (tests that need only part of the API).
var errNotConfigured = fmt.Errorf("%w: not configured on this instance", store.ErrUnavailable)

// handleWatch streams the changes to the keys matching ?pattern= (a glob;
// every key by default) or ?regex=, of the kinds ?types= names (every kind
// by default), as Server-Sent Events:
//
//	id: 42
//	event: put
//	data: {"id":42,"type":"put","namespace":"…","key":"…",…}
//
// A watcher that falls behind gets "event: reset" with data {"reason": …}
// and must read the state it watches again. Last-Event-ID (or
// ?last_event_id=) resumes after that event while the log retains it.
// The stream is not chunked: it ends with its connection.
func handleWatch(log *slog.Logger, cfg Config, st Store, p propagation) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		f, err := watchFilter(r, ns)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		last, err := lastEventID(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		initial, err := initialParam(r, f)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if p.watches == nil {
			writeError(w, r, log, errNotConfigured)
			return
		}
		wt, err := p.watches.Watch(r.Context(), f, last)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		defer wt.Close()

		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
		// Not chunked: the stream ends when the connection does (as the SSE
		// specification suggests, and net/http supports for it). A chunk
		// of more than net/http's 4 KB write buffer costs two syscalls; the
		// plain stream writes any batch of events in one.
		h.Set("Transfer-Encoding", "identity")
		w.WriteHeader(http.StatusOK)
		// The middleware has seen the status: the batches go straight to
		// the connection's writer, not through every wrapper each time.
		w = innermost(w)
		rc := http.NewResponseController(w)
		var deadline time.Time
		send := func(b []byte) bool {
			// Moving the deadline costs as much as a small write: move it
			// only once half of it has passed.
			if now := time.Now(); deadline.Sub(now) < sseWriteTimeout/2 {
				deadline = now.Add(sseWriteTimeout)
				_ = rc.SetWriteDeadline(deadline)
			}
			_, err := w.Write(b)
			return err == nil && rc.Flush() == nil
		}
		if !send([]byte(": watching\n\n")) { // the client sees the stream open at once
			return
		}
		// The stream ends as soon as its token is revoked or changed
		// (SIGHUP) or expires; reconnecting gets 401.
		ctx, stop := untilWithdrawn(r.Context(), cfg.Tokens)
		defer stop()
		defer func() {
			if errors.Is(context.Cause(ctx), errTokenWithdrawn) {
				send([]byte(": token no longer valid\n\n"))
			}
		}()
		// A resume (Last-Event-ID, which an EventSource sends with the
		// same URL when it reconnects) has the state already.
		if initial && last == 0 {
			ok, err := sendInitial(ctx, st, f, wt.From(), send)
			if err != nil && ctx.Err() == nil {
				// The headers are out: the client reconnects, and as it
				// has no id yet, gets the whole state again.
				log.Warn("watch stream ended: its initial state could not be read", "err", err)
			}
			if !ok || err != nil {
				return
			}
		}
		ping := time.NewTicker(p.ping)
		defer ping.Stop()
		// busy: the last round wrote a batch. Then the next round does not
		// wait for a signal: it pauses sseFlushEvery and takes whatever
		// came meanwhile, so that a busy stream costs one timer wake-up
		// and one write per round, and nothing per event.
		busy := false
		for {
			pinged := false
			if busy {
				select {
				case <-ping.C:
					pinged = true
				default:
				}
			} else {
				select {
				case <-ctx.Done():
					return
				case <-ping.C:
					pinged = true
				case <-wt.Ready():
				case <-wt.Done():
				}
			}
			// The buffer is the pool's only while a batch is written: an
			// idle stream holds none.
			bp := sseBuffers.Get().(*[]byte)
			buf := (*bp)[:0]
			if pinged {
				buf = append(buf, ": ping\n\n"...)
			}
			var more bool
			buf, more, err = wt.PollSSEUpTo(ctx, buf, sseRoundMax)
			busy = len(buf) > 0
			ok := !busy || send(buf)
			if cap(buf) <= maxPooledSSEBuffer {
				*bp = buf
				sseBuffers.Put(bp)
			}
			if !ok {
				return
			}
			if err != nil {
				if !errors.Is(err, watch.ErrClosed) && ctx.Err() == nil {
					// The log could not be read: the client reconnects
					// with Last-Event-ID and resumes.
					log.Warn("watch stream ended", "err", err)
				}
				return
			}
			if busy && !more {
				// Coalesce: at most one write (a syscall) per
				// sseFlushEvery per stream, however fast events come;
				// the first event after a quiet spell goes out at once.
				// A closed watcher or a gone client is noticed by the
				// next poll or write, at most this much later.
				time.Sleep(sseFlushEvery)
			}
		}
	}
}

// innermost is the ResponseWriter that middleware wrappers (Unwrap) wrap.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// sseBuffers hold the batches of the watch streams while they are written.
var sseBuffers = sync.Pool{New: func() any {
	// A round of a busy stream: 20 ms of 2,000 events/s of about 250
	// bytes is 10 KB; a round stops at sseRoundMax and a few more events.
	b := make([]byte, 0, 24<<10)
	return &b
}}

// sseRoundMax bounds what one round takes from a watcher's buffer: a
// stream that fell behind (its client reads slowly, or gets no CPU) writes
// its backlog in rounds of about this much, one after the other, instead
// of holding all of it in a buffer of its own while its write waits. The
// backlog stays in the buffer its group shares. With a thousand streams
// stalled at once, that is at most about 24 MB of rounds (16 KB and one
// more batch of events each) rather than 64 MB or more (a whole
// 256-event buffer each).
const sseRoundMax = 16 << 10

// maxPooledSSEBuffer: a larger buffer (a watcher that fell far behind) is
// left to the garbage collector rather than kept for everyone.
const maxPooledSSEBuffer = 64 << 10

// watchFilter reads ?pattern= or ?regex=, and ?types=.
func watchFilter(r *http.Request, ns string) (watch.Filter, error) {
	q := r.URL.Query()
	f := watch.Filter{Namespace: ns}
	if types := q.Get("types"); types != "" {
		ts, ok := watch.TypesOf(strings.Split(types, ",")...)
		if !ok {
			return f, fmt.Errorf("%w: types must be a comma-separated list of put, delete and expire, not %q", errInvalidArgument, types)
		}
		f.Types = ts
	}
	pattern, expr := q.Get("pattern"), q.Get("regex")
	switch {
	case pattern != "" && expr != "":
		return f, fmt.Errorf("%w: give pattern or regex, not both", errInvalidArgument)
	case expr != "":
		if len(expr) > maxRegexLen {
			return f, fmt.Errorf("%w: regex is longer than %d bytes", errInvalidArgument, maxRegexLen)
		}
		re, err := regexp.Compile(expr)
		if err != nil {
			return f, fmt.Errorf("%w: regex: %v", errInvalidArgument, err)
		}
		f.Regexp = re
	default:
		if pattern == "" {
			pattern = "**"
		}
		p, err := glob.Compile(pattern)
		if err != nil {
			return f, fmt.Errorf("%w: pattern: %v", errInvalidArgument, err)
		}
		f.Pattern = p
	}
	return f, nil
}

// initialParam reads ?initial=, which asks for the current state of the
// keys watched before their changes: as puts, so f must let puts through.
func initialParam(r *http.Request, f watch.Filter) (bool, error) {
	initial, err := boolParam(r.URL.Query().Get("initial"), "initial")
	if err != nil || !initial {
		return false, err
	}
	if put, _ := watch.TypesOf(store.EventPut); f.Types != 0 && f.Types&put == 0 {
		return false, fmt.Errorf("%w: initial=true sends the keys' state as puts: types must include put", errInvalidArgument)
	}
	return true, nil
}

// lastEventID reads the Last-Event-ID header (what an EventSource sends when
// it reconnects), or ?last_event_id= for clients that cannot set headers.
func lastEventID(r *http.Request) (uint64, error) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("last_event_id")
	}
	if v == "" {
		return 0, nil
	}
	id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: Last-Event-ID must be an event id (a whole number)", errInvalidArgument)
	}
	return id, nil
}

// handleCacheInvalidate drops the cached keys matching a glob pattern on
// every instance, and reports how many this one dropped.
func handleCacheInvalidate(log *slog.Logger, cfg Config, p propagation) http.HandlerFunc {
	type request struct {
		Pattern string `json:"pattern"`
	}
	type response struct {
		Invalidated int `json:"invalidated"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var req request
		if err := decode(r, cfg.MaxDepth, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		pattern, err := glob.Compile(req.Pattern)
		if err != nil {
			writeError(w, r, log, fmt.Errorf("%w: pattern: %v", errInvalidArgument, err))
			return
		}
		if p.cache == nil {
			writeError(w, r, log, errNotConfigured)
			return
		}
		n, err := p.cache.InvalidatePattern(r.Context(), ns, pattern)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, response{Invalidated: n})
	}
}
