// Package app assembles one memsync instance from its parts: the store,
// the locker, the read cache, the event hub, the async write queue, the
// metrics and the HTTP handler, plus the background loops that keep them
// going. cmd/server and the test server both build instances here, so
// what is tested is what runs.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/api"
	"github.com/memsync/memsync/internal/async"
	"github.com/memsync/memsync/internal/auth"
	"github.com/memsync/memsync/internal/barrier"
	"github.com/memsync/memsync/internal/cache"
	"github.com/memsync/memsync/internal/counter"
	"github.com/memsync/memsync/internal/ephemeral"
	memhttp "github.com/memsync/memsync/internal/http"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/metrics"
	"github.com/memsync/memsync/internal/queue"
	"github.com/memsync/memsync/internal/quota"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/watch"
)

// Config is everything an instance is built from. Zero fields take each
// part's defaults, except CacheSize: 0 disables the cache.
type Config struct {
	Log          *slog.Logger // nil discards
	Namespace    string
	DefaultTTL   time.Duration
	MaxTTL       time.Duration
	Rules        *store.Rules
	MaxBodyBytes int64
	HeartbeatTTL time.Duration
	MaxLockTTL   time.Duration
	MaxLockWait  time.Duration
	CacheSize    int
	// BatchInterval and BatchSize drive the async write queue.
	BatchInterval time.Duration
	BatchSize     int
	// EventLogLen bounds the replayable event log
	// (store.DefaultEventLogLen).
	EventLogLen int64
	// WatchBuffer is each watcher's buffer; WatchPing the SSE ping period.
	WatchBuffer int
	WatchPing   time.Duration
	// SweepInterval is how often expiries are looked for
	// (store.DefaultSweepInterval).
	SweepInterval time.Duration
	// TidyInterval is how often the listing indexes are rid of what died
	// (store.DefaultTidyInterval).
	TidyInterval time.Duration
	// Tokens, RateLimit and MaxWatchersPerToken are the HTTP layer's
	// authentication and per-token limits (memhttp.Config).
	Tokens              *auth.Tokens
	RateLimit           int
	MaxWatchersPerToken int
	// LimitShareInterval is how often, with tokens, this instance shares
	// its use of each token with the others, so that the per-token limits
	// hold across instances (DefaultLimitShareInterval).
	LimitShareInterval time.Duration
}

// DefaultLimitShareInterval is Config.LimitShareInterval's default: a
// token's limits hold across instances to within about a second.
const DefaultLimitShareInterval = time.Second

// App is one assembled instance.
type App struct {
	Store  *store.Store
	Locker *lock.Locker
	Cache  *cache.Cache
	Hub    *watch.Hub
	Queue  *async.Queue
	// Ephemeral binds keys to heartbeats and reaps them.
	Ephemeral *ephemeral.Binder
	// Queues serves the work queues.
	Queues *queue.Queues
	// Counters serves the counters.
	Counters *counter.Counters
	// Barriers serves the barriers.
	Barriers *barrier.Barriers
	Metrics  *metrics.Metrics
	Handler  http.Handler

	api        *memhttp.Server
	shareEvery time.Duration
	log        *slog.Logger
	sweep      time.Duration
	tidy       time.Duration
	namespace  string
	stopHub    context.CancelFunc
	hubDone    chan struct{}
	stopLoops  context.CancelFunc
	loopsDone  chan struct{}
}

// New assembles an instance on rdb. Start its loops with Start.
func New(rdb redis.UniversalClient, cfg Config) (*App, error) {
	a := &App{log: cfg.Log, sweep: cfg.SweepInterval, tidy: cfg.TidyInterval, namespace: cfg.Namespace}
	if a.namespace == "" {
		a.namespace = memhttp.DefaultNamespace
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	// The metrics hooks fire only once requests flow, after a.Metrics is set.
	var err error
	a.Store, err = store.New(rdb, store.Config{DefaultTTL: cfg.DefaultTTL, MaxTTL: cfg.MaxTTL, Rules: cfg.Rules,
		EventLogLen: cfg.EventLogLen, OnCommit: func(n int) { a.Metrics.ObserveCommit(n) }})
	if err != nil {
		return nil, err
	}
	a.Locker = lock.New(rdb, lock.Options{MaxTTL: cfg.MaxLockTTL, MaxWait: cfg.MaxLockWait,
		OnAcquire: func(took time.Duration, granted bool) { a.Metrics.ObserveLockWait(took, granted) }})
	// The read cache serves GETs; it follows this instance's one
	// subscription to the change events (the hub), which also feeds every
	// watch stream.
	if a.Cache, err = cache.New(a.Store, cache.Options{Size: cfg.CacheSize}); err != nil {
		a.Locker.Close()
		a.Store.Close()
		return nil, err
	}
	a.Hub = watch.New(rdb, a.Store, watch.Options{Buffer: cfg.WatchBuffer, Logger: a.log})
	a.Hub.Listen(a.Cache)
	// Writes sent with ?async=true wait in the queue until a flush, which
	// goes through the cache so that it drops the cached entries it changes.
	a.Queue = async.New(a.Cache, async.Options{Interval: cfg.BatchInterval, Size: cfg.BatchSize, Log: a.log,
		OnFlush: func(n int, _ error) {
			if n > 0 {
				a.Metrics.ObserveCommit(n)
			}
		}})
	// Bound keys are read and deleted through the cache, so that this
	// instance's copies go at once.
	a.Ephemeral = ephemeral.New(rdb, a.Cache)
	a.Queues = queue.New(rdb, queue.Options{MaxWait: cfg.MaxLockWait})
	a.Counters = counter.New(rdb, counter.Options{DefaultTTL: cfg.DefaultTTL, MaxTTL: cfg.MaxTTL})
	a.Barriers = barrier.New(rdb, barrier.Options{MaxWait: cfg.MaxLockWait})
	a.Metrics = metrics.New(a.sources(a.namespace))
	a.shareEvery = cfg.LimitShareInterval
	if a.shareEvery <= 0 {
		a.shareEvery = DefaultLimitShareInterval
	}
	var usage memhttp.UsageSharer
	if cfg.Tokens != nil {
		// A report missed three times over is an instance gone.
		usage = quota.New(rdb, newInstanceID(), 3*a.shareEvery)
	}
	a.api, err = memhttp.NewServer(memhttp.Config{
		Namespace: cfg.Namespace, MaxBodyBytes: cfg.MaxBodyBytes, Spec: api.Spec, HeartbeatTTL: cfg.HeartbeatTTL,
		Metrics: a.Metrics.Handler(), Stats: func() any { return a.Metrics.Snapshot() }, ObserveRequest: a.Metrics.ObserveRequest,
		Queue: a.Queue, Ephemeral: a.Ephemeral, Queues: a.Queues, Counters: a.Counters, Barriers: a.Barriers, Tokens: cfg.Tokens, RateLimit: float64(cfg.RateLimit), MaxWatchersPerToken: cfg.MaxWatchersPerToken,
		Usage: usage,
	}, a.log, a.Cache, a.Locker, memhttp.WithWatch(a.Hub, cfg.WatchPing), memhttp.WithCache(a.Cache))
	if err != nil {
		a.Barriers.Close()
		a.Queues.Close()
		a.Locker.Close()
		a.Store.Close()
		return nil, err
	}
	a.Handler = a.api
	return a, nil
}

// newInstanceID names this process among the instances: random, so that
// no two share one.
func newInstanceID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// sources adapts every part's counters for the metrics.
func (a *App) sources(ns string) metrics.Sources {
	var src metrics.Sources
	src.Store, src.VectorClock, src.ActiveWorkers = metrics.StoreSource(a.Store, ns)
	src.Locks = metrics.LockSource(a.Locker)
	src.Reaped = a.Ephemeral.Reaped
	src.Queues = func() metrics.QueueStats {
		c := a.Queues.Counters()
		return metrics.QueueStats{Enqueued: c.Enqueued, Claimed: c.Claimed, Redelivered: c.Redelivered, Acked: c.Acked,
			Expired: c.Expired, Dead: c.Dead, Redriven: c.Redriven, Replayed: c.Replayed}
	}
	src.Barriers = func() metrics.BarrierStats {
		s := a.Barriers.Stats()
		return metrics.BarrierStats{Arrivals: s.Arrivals, Trips: s.Trips}
	}
	src.Counters = func() metrics.CounterStats {
		s := a.Counters.Stats()
		return metrics.CounterStats{Added: s.Added, Replayed: s.Replayed}
	}
	src.Cache = func() metrics.CacheStats {
		s := a.Cache.Stats()
		return metrics.CacheStats{Hits: s.Hits, Misses: s.Misses, Evictions: s.Evictions,
			Invalidations: s.Invalidations, Entries: s.Entries, MaxEntries: s.MaxEntries}
	}
	src.Watch = func() metrics.WatchStats {
		s := a.Hub.Stats()
		return metrics.WatchStats{Watchers: s.Watchers, EventsDelivered: s.Delivered, Dropped: s.Dropped, SubscriptionUp: s.Connected}
	}
	src.Async = func() metrics.AsyncStats {
		s := a.Queue.Stats()
		return metrics.AsyncStats{Pending: s.Pending, Flushes: s.Flushes}
	}
	return src
}

// Start runs the background loops: the event hub, the expiry sweeper, the
// reaper of bound keys, the async queue's timer and, with tokens, the
// sharing of their use.
func (a *App) Start() {
	hubCtx, stopHub := context.WithCancel(context.Background())
	a.stopHub, a.hubDone = stopHub, make(chan struct{})
	go func() {
		defer close(a.hubDone)
		a.Hub.Run(hubCtx)
	}()
	loopCtx, stopLoops := context.WithCancel(context.Background())
	a.stopLoops, a.loopsDone = stopLoops, make(chan struct{})
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		// Every instance sweeps; the sweep script lets exactly one announce
		// each expiry.
		a.Store.RunSweeper(loopCtx, a.sweep, func(err error) {
			a.log.Warn("expiry sweep failed; retrying", "err", err)
		})
	}()
	tidyDone := make(chan struct{})
	go func() {
		defer close(tidyDone)
		// Every instance tidies too: what one removes, another finds gone.
		// The default namespace is named for indexes written before the
		// namespaces index was.
		a.Store.RunTidier(loopCtx, a.tidy, func(err error) {
			a.log.Warn("tidying the listing indexes failed; retrying", "err", err)
		}, a.namespace)
	}()
	reapDone := make(chan struct{})
	go func() {
		defer close(reapDone)
		// Every instance reaps too: the deletes are conditional, so what
		// one does, another finds done.
		a.Ephemeral.Run(loopCtx, ephemeral.DefaultInterval, func(err error) {
			a.log.Warn("reaping the keys of workers whose heartbeat ended failed; retrying", "err", err)
		})
	}()
	shareDone := make(chan struct{})
	go func() {
		defer close(shareDone)
		a.api.ShareLimits(loopCtx, a.shareEvery)
	}()
	go func() {
		defer close(a.loopsDone)
		a.Queue.Run(loopCtx)
		<-sweepDone
		<-tidyDone
		<-reapDone
		<-shareDone
	}()
}

// WaitConnected waits until the event subscription is up, so that the cache
// serves from the first request.
func (a *App) WaitConnected(timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); !a.Hub.Stats().Connected; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("app: the event subscription did not come up within %s", timeout)
		}
	}
	return nil
}

// StopStreams ends every request that would wait on: it stops the hub,
// which ends the watch streams and blocking reads (their clients reconnect
// elsewhere with Last-Event-ID), and closes the locker and the queues,
// whose waiting lock, permit and claim requests are answered 503 (their
// clients try another instance). Call it as HTTP shutdown begins, or
// Shutdown waits for them. Requests that do not wait still work.
func (a *App) StopStreams() {
	if a.stopHub != nil {
		a.stopHub()
		<-a.hubDone
	}
	a.Locker.Close()
	a.Queues.Close()
	a.Barriers.Close()
}

// Close stops the loops, then flushes every queued async write (bounded by
// ctx) and closes the parts. Call it after the HTTP server stopped taking
// requests, before Redis goes away. It returns how many queued writes were
// flushed, and an error when some could not be.
func (a *App) Close(ctx context.Context) (int, error) {
	a.StopStreams()
	if a.stopLoops != nil {
		a.stopLoops()
		<-a.loopsDone
	}
	n, err := a.Queue.Close(ctx)
	if err != nil {
		err = fmt.Errorf("app: %d queued writes were not flushed: %w", a.Queue.Pending(), err)
	}
	a.Barriers.Close()
	a.Queues.Close()
	a.Locker.Close()
	a.Store.Close()
	return n, err
}
