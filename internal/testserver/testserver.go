// Package testserver runs a complete memsync API in process for tests: the
// store, the locker, the expiry sweeper, the change-event hub, the read cache
// and the HTTP handler, on a fresh miniredis or on a given backend.
package testserver

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/memsync/memsync/api"
	"github.com/memsync/memsync/internal/async"
	"github.com/memsync/memsync/internal/cache"
	memhttp "github.com/memsync/memsync/internal/http"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/metrics"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/watch"
)

// Defaults of Options, short so that tests of liveness run quickly.
const (
	DefaultHeartbeatTTL  = 2 * time.Second
	DefaultSweepInterval = 100 * time.Millisecond
)

// Options configure a test server. The zero value is ready to use.
type Options struct {
	// Backend is the Redis to use; nil starts a fresh miniredis.
	Backend *redistest.Backend
	// Rules come before the built-in strategy rules.
	Rules []store.Rule
	// HeartbeatTTL defaults to DefaultHeartbeatTTL (2 s).
	HeartbeatTTL time.Duration
	// MaxTTL of writes; defaults to the store's.
	MaxTTL time.Duration
	// CacheSize is the read cache's size: 0 means cache.DefaultSize, a
	// negative size disables the cache.
	CacheSize int
	// WatchPing is the ping interval of watch streams
	// (memhttp.DefaultWatchPing).
	WatchPing time.Duration
	// WatchBuffer is each watcher's buffer (watch.DefaultBuffer).
	WatchBuffer int
	// BatchInterval and BatchSize tune the async write queue
	// (async.DefaultInterval, async.DefaultSize).
	BatchInterval time.Duration
	BatchSize     int
}

// Server is a running in-process memsync.
type Server struct {
	URL     string // base URL, e.g. http://127.0.0.1:PORT
	Store   *store.Store
	Locker  *lock.Locker
	Hub     *watch.Hub
	Cache   *cache.Cache
	Queue   *async.Queue
	Backend redistest.Backend
}

// Start runs a server on a fresh miniredis, stopped when the test ends.
func Start(tb testing.TB) *Server { return StartWith(tb, Options{}) }

// StartWith runs a server with opts, stopped when the test ends.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	var b redistest.Backend
	if opts.Backend != nil {
		b = *opts.Backend
	} else {
		b = redistest.Mini(tb)
	}
	if opts.HeartbeatTTL == 0 {
		opts.HeartbeatTTL = DefaultHeartbeatTTL
	}
	rules, err := store.NewRules(opts.Rules)
	if err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	st, err := store.New(b.Client, store.Config{Rules: rules, MaxTTL: opts.MaxTTL})
	if err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	lk := lock.New(b.Client, lock.Options{})
	if opts.CacheSize == 0 {
		opts.CacheSize = cache.DefaultSize
	}
	c, err := cache.New(st, cache.Options{Size: opts.CacheSize})
	if err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	// Queued writes flush through the cache, which drops their keys.
	q := async.New(c, async.Options{Interval: opts.BatchInterval, Size: opts.BatchSize})
	hub := watch.New(b.Client, st, watch.Options{Buffer: opts.WatchBuffer})
	unlisten := hub.Listen(c)
	var sources metrics.Sources
	sources.Store, sources.VectorClock, sources.ActiveWorkers = metrics.StoreSource(st, memhttp.DefaultNamespace)
	sources.Locks = metrics.LockSource(lk)
	sources.Cache = func() metrics.CacheStats {
		s := c.Stats()
		return metrics.CacheStats{Hits: s.Hits, Misses: s.Misses, Evictions: s.Evictions,
			Invalidations: s.Invalidations, Entries: s.Entries, MaxEntries: s.MaxEntries}
	}
	sources.Watch = func() metrics.WatchStats {
		s := hub.Stats()
		return metrics.WatchStats{Watchers: s.Watchers, EventsDelivered: s.Delivered, Dropped: s.Dropped, SubscriptionUp: s.Connected}
	}
	sources.Async = func() metrics.AsyncStats {
		s := q.Stats()
		return metrics.AsyncStats{Pending: s.Pending, Flushes: s.Flushes}
	}
	m := metrics.New(sources)
	h, err := memhttp.NewServer(memhttp.Config{Spec: api.Spec, HeartbeatTTL: opts.HeartbeatTTL,
		Metrics: m.Handler(), Stats: func() any { return m.Snapshot() }, ObserveRequest: m.ObserveRequest,
		Queue: q},
		slog.New(slog.DiscardHandler), c, lk, memhttp.WithWatch(hub, opts.WatchPing), memhttp.WithCache(c))
	if err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		hub.Run(hubCtx)
	}()
	// Serve once the cache hears changes, so that tests see it work from
	// their first request.
	for deadline := time.Now().Add(5 * time.Second); !hub.Stats().Connected; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("testserver: the event subscription did not come up within 5 s")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		st.RunSweeper(ctx, DefaultSweepInterval, nil)
	}()
	queueCtx, stopQueue := context.WithCancel(context.Background())
	queueDone := make(chan struct{})
	go func() {
		defer close(queueDone)
		q.Run(queueCtx)
	}()
	ts := httptest.NewServer(h)
	tb.Cleanup(func() {
		// The hub first: it ends the watch streams, which ts.Close would
		// otherwise wait for.
		stopHub()
		<-hubDone
		unlisten()
		ts.Close()
		stopQueue()
		<-queueDone
		closeCtx, cancelClose := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := q.Close(closeCtx); err != nil {
			tb.Errorf("testserver: queued writes lost: %v", err)
		}
		cancelClose()
		cancel()
		<-swept
		lk.Close()
		st.Close()
	})
	return &Server{URL: ts.URL, Store: st, Locker: lk, Hub: hub, Cache: c, Queue: q, Backend: b}
}
