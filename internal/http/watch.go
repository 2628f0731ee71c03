package http

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
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
	// sseWriteTimeout bounds one write to a watch stream: a client that
	// stops reading is dropped rather than holding the handler forever.
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

// errNotConfigured answers a route whose dependency the server was built
// without (tests that need only part of the API).
var errNotConfigured = fmt.Errorf("%w: not configured on this instance", store.ErrUnavailable)

// handleWatch streams the changes to the keys matching ?pattern= (a glob;
// every key by default) or ?regex= as Server-Sent Events:
//
//	id: 42
//	event: put
//	data: {"id":42,"type":"put","namespace":"…","key":"…",…}
//
// A watcher that falls behind gets "event: reset" with data {"reason": …}
// and must read the state it watches again. Last-Event-ID (or
// ?last_event_id=) resumes after that event while the log retains it.
// sseFlushEvery is the shortest time between two writes to one watch
// stream: events that arrive meanwhile go out together. It bounds a busy
// stream to 100 writes a second (1,000 watchers of a busy key would
// otherwise cost a syscall per event each) and adds at most this much
// latency.
const sseFlushEvery = 10 * time.Millisecond

func handleWatch(log *slog.Logger, cfg Config, p propagation) http.HandlerFunc {
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
		if p.watches == nil {
			writeError(w, r, log, errNotConfigured)
			return
		}
		wt, err := p.watches.Watch(r.Context(), f, last)
		if err != nil {
			if errors.Is(err, watch.ErrClosed) {
				err = fmt.Errorf("%w: %w", store.ErrUnavailable, err) // shutting down
			}
			writeError(w, r, log, err)
			return
		}
		defer wt.Close()

		rc := http.NewResponseController(w)
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
		w.WriteHeader(http.StatusOK)
		var buf bytes.Buffer
		buf.WriteString(": watching\n\n") // the client sees the stream open at once
		send := func() bool {
			_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
			_, err := w.Write(buf.Bytes())
			buf.Reset()
			return err == nil && rc.Flush() == nil
		}
		if !send() {
			return
		}
		ping := time.NewTicker(p.ping)
		defer ping.Stop()
		var msgs []watch.Message
		lastSend := time.Now()
		pause := time.NewTimer(0)
		<-pause.C
		for {
			select {
			case <-r.Context().Done():
				return
			case <-ping.C:
				buf.WriteString(": ping\n\n")
			case <-wt.Ready():
				// Coalesce: at most one write (a syscall) per sseFlushEvery
				// per stream, however fast events come.
				if wait := sseFlushEvery - time.Since(lastSend); wait > 0 {
					pause.Reset(wait)
					select {
					case <-pause.C:
					case <-r.Context().Done():
						return
					}
				}
			case <-wt.Done():
			}
			msgs, err = wt.Poll(r.Context(), msgs[:0])
			for _, m := range msgs {
				writeSSE(&buf, m)
			}
			clear(msgs)
			if buf.Len() > 0 {
				if !send() {
					return
				}
				lastSend = time.Now()
			}
			if err != nil {
				if !errors.Is(err, watch.ErrClosed) && r.Context().Err() == nil {
					// The log could not be read: the client reconnects
					// with Last-Event-ID and resumes.
					log.Warn("watch stream ended", "err", err)
				}
				return
			}
		}
	}
}

// watchFilter reads ?pattern= or ?regex=.
func watchFilter(r *http.Request, ns string) (watch.Filter, error) {
	q := r.URL.Query()
	f := watch.Filter{Namespace: ns}
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

// writeSSE appends one message in the text/event-stream format. Event JSON
// never contains a newline (encoding/json compacts raw values, and published
// events are encoded by it), so one data line carries it.
func writeSSE(buf *bytes.Buffer, m watch.Message) {
	var data []byte
	typ := m.Event.Type
	if m.Reset != "" {
		typ = "reset"
		data, _ = json.Marshal(struct {
			Reason string `json:"reason"`
		}{m.Reset})
	} else if data = m.Data; data == nil || bytes.IndexByte(data, '\n') >= 0 {
		var err error
		if data, err = json.Marshal(m.Event); err != nil {
			return // cannot happen: events were decoded from JSON
		}
	}
	if m.Event.ID > 0 {
		buf.WriteString("id: ")
		buf.WriteString(strconv.FormatUint(m.Event.ID, 10))
		buf.WriteByte('\n')
	}
	buf.WriteString("event: ")
	buf.WriteString(typ)
	buf.WriteString("\ndata: ")
	buf.Write(data)
	buf.WriteString("\n\n")
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
