package client

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"sync"
	"time"
)

// MirrorEntry is a mirrored key's state.
type MirrorEntry struct {
	Key string
	// Value is the key's value as a read resolves it. Nil when the
	// siblings strategy leaves several values to the client.
	Value json.RawMessage
	// Version is the key's version (see Entry.Version), Writer and
	// Timestamp its latest write's.
	Version   map[string]uint64
	Writer    string
	Timestamp time.Time
}

// Decode unmarshals the value into v.
func (e MirrorEntry) Decode(v any) error {
	if e.Value == nil {
		return errors.New("memsync: mirrored key " + e.Key + " has no single value")
	}
	return json.Unmarshal(e.Value, v)
}

// Mirror is a local copy of the keys a pattern covers, kept current by a
// watch (the informer of a Kubernetes controller, the cache of an etcd
// watcher): a worker reads its copy of workers/*/status or of a task's
// keys without a request per read. Client.Mirror makes one.
type Mirror struct {
	c       *Client
	pattern string
	opts    []WatchOption
	cancel  context.CancelFunc
	done    chan struct{}

	mu      sync.RWMutex
	entries map[string]MirrorEntry
	synced  chan struct{} // closed once the first state is complete
	changed chan struct{} // a token when the copy changed since the last receive
	once    sync.Once
	err     error
}

// mirrorRetry is the pause before a mirror watches again after a reset.
const mirrorRetry = 100 * time.Millisecond

// Mirror starts a local copy of the keys that match pattern (a glob, as
// for Watch; Regex among opts for a regular expression): it watches them
// with Initial, fills the copy from the initial state, and applies every
// change after it. Synced is closed once the copy holds the whole state;
// until then it may hold part of it.
//
// A put event carries the write's value: the mirror takes it when the
// write superseded what the copy held, and otherwise (concurrent writers
// left siblings for the key's strategy to resolve) reads the key, as it
// does for a value too large to ride in its event (16 KiB). When events
// are lost (a reset: the mirror read too slowly, the server's log no
// longer held what it missed) it watches again from a new initial state,
// and replaces its copy once that is complete.
//
// Mirror returns once the watch is accepted; it fails as Watch does. The
// mirror runs until ctx ends or Close; Err then says why it stopped.
// Types among opts must include EventPut, and FromEventID has no effect.
func (c *Client) Mirror(ctx context.Context, pattern string, opts ...WatchOption) (*Mirror, error) {
	ctx, cancel := context.WithCancel(ctx)
	m := &Mirror{c: c, pattern: pattern, opts: append(append([]WatchOption(nil), opts...), Initial(), FromEventID(0)),
		cancel: cancel, done: make(chan struct{}), entries: map[string]MirrorEntry{}, synced: make(chan struct{}),
		changed: make(chan struct{}, 1)}
	w, err := c.Watch(ctx, pattern, m.opts...)
	if err != nil {
		cancel()
		return nil, err
	}
	go m.run(ctx, w)
	return m, nil
}

// Synced is closed once the copy holds the whole state of the keys.
func (m *Mirror) Synced() <-chan struct{} { return m.synced }

// Changed receives when the copy has changed since the last receive (a
// key set or removed, or the copy replaced by a new state): any number of
// changes leave one token, so a worker that waits on it and then reads
// Get or Snapshot misses none.
func (m *Mirror) Changed() <-chan struct{} { return m.changed }

// changedLocked leaves the token Changed delivers.
func (m *Mirror) changedLocked() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// Get returns the copy of key, and whether the key exists.
func (m *Mirror) Get(key string) (MirrorEntry, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e, ok := m.entries[key]
	return e, ok
}

// Snapshot returns a copy of every mirrored key.
func (m *Mirror) Snapshot() map[string]MirrorEntry {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return maps.Clone(m.entries)
}

// Err says why the mirror stopped: nil while it runs and after Close.
func (m *Mirror) Err() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.err
}

// Close stops the mirror; its copy stays readable, as it was.
func (m *Mirror) Close() {
	m.cancel()
	<-m.done
	m.mu.Lock()
	if errors.Is(m.err, context.Canceled) {
		m.err = nil
	}
	m.mu.Unlock()
}

// run applies the events of w, and watches again after a reset.
func (m *Mirror) run(ctx context.Context, w *Watch) {
	defer close(m.done)
	for {
		reset := m.follow(ctx, w)
		w.Close()
		if !reset {
			m.stop(ctx, w.Err())
			return
		}
		var err error
		if w, err = m.rewatch(ctx); err != nil {
			m.stop(ctx, err)
			return
		}
	}
}

// rewatch opens a new watch after a reset. A failure a retry may cure
// (the server unreachable or unavailable for a while) is tried again after
// a pause that doubles up to DefaultWatchRetryMax; one it cannot (a 4xx,
// a stream that is not one) ends the mirror, as it ends a Watch.
func (m *Mirror) rewatch(ctx context.Context) (*Watch, error) {
	for pause := mirrorRetry; ; pause = min(2*pause, DefaultWatchRetryMax) {
		if !sleep(ctx, jitter(pause)) {
			return nil, ctx.Err()
		}
		w, err := m.c.Watch(ctx, m.pattern, m.opts...)
		if err == nil || ctx.Err() != nil || incurable(err) {
			return w, err
		}
	}
}

// stop records why the mirror stopped: err, or ctx's end.
func (m *Mirror) stop(ctx context.Context, err error) {
	if err == nil {
		err = ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

// follow reads one watch: its initial state into a fresh copy, which
// replaces the mirror's at synced, then its changes. It returns true on a
// reset, false when the watch ended.
func (m *Mirror) follow(ctx context.Context, w *Watch) (reset bool) {
	var fresh map[string]MirrorEntry // the initial state, until synced
	for ev := range w.Events() {
		switch ev.Type {
		case EventReset:
			return true
		case EventSynced:
			m.mu.Lock()
			if fresh == nil {
				fresh = map[string]MirrorEntry{}
			}
			m.entries, fresh = fresh, nil
			m.changedLocked()
			m.mu.Unlock()
			m.once.Do(func() { close(m.synced) })
		case EventPut:
			e, ok := m.entryOf(ctx, ev)
			switch {
			case ev.Initial && !ok:
			case ev.Initial:
				if fresh == nil {
					fresh = map[string]MirrorEntry{}
				}
				fresh[ev.Key] = e
			default:
				m.set(ev.Key, e, ok)
			}
		case EventDelete, EventExpire:
			m.set(ev.Key, MirrorEntry{}, false)
		}
	}
	return false
}

func (m *Mirror) set(key string, e MirrorEntry, exists bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if exists {
		m.entries[key] = e
	} else {
		delete(m.entries, key)
	}
	m.changedLocked()
}

// entryOf is the state a put event gives its key. That is the write's
// value when the write superseded every sibling the copy knew of (its
// version descends from the copy's: the write saw them all, as every
// write since the initial state came as an event). Else the key now holds
// siblings, and it reads the key to have them resolved as a read would;
// so it does for a value too large to ride in the event. False: the key
// is gone since.
func (m *Mirror) entryOf(ctx context.Context, ev Event) (MirrorEntry, bool) {
	e := MirrorEntry{Key: ev.Key, Value: ev.Value, Version: ev.Version, Writer: ev.Writer, Timestamp: ev.Timestamp}
	prev, had := m.Get(ev.Key)
	if ev.Value != nil && (ev.Initial || !had || descends(ev.Version, prev.Version)) {
		return e, true
	}
	got, err := m.c.Get(ctx, ev.Key, Consistent())
	if err != nil {
		// Gone since (a delete event follows), or unreadable: the copy
		// keeps what the event says.
		return e, !errors.Is(err, ErrNotFound)
	}
	return MirrorEntry{Key: got.Key, Value: got.Value, Version: got.Version, Writer: got.Writer, Timestamp: got.Timestamp}, true
}

// descends reports whether clock a has seen everything clock b has.
func descends(a, b map[string]uint64) bool {
	for w, n := range b {
		if a[w] < n {
			return false
		}
	}
	return true
}
