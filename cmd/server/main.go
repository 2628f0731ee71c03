// Command server runs memsync: the HTTP/JSON API over Redis, or over an
// embedded in-memory Redis when none is configured.
//
// main only wires the process to run, which the end-to-end tests call too.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/memsync/memsync/api"
	"github.com/memsync/memsync/internal/async"
	"github.com/memsync/memsync/internal/cache"
	memhttp "github.com/memsync/memsync/internal/http"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/metrics"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/watch"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "memsync:", err)
		os.Exit(1)
	}
}

// shutdownTimeout bounds the graceful shutdown: requests in flight get this
// long to finish.
const shutdownTimeout = 10 * time.Second

// flushTimeout bounds the flush of queued async writes at shutdown,
// retries included (Redis may be failing over).
const flushTimeout = 15 * time.Second

// run starts the service and blocks until ctx is cancelled, then shuts down
// gracefully. Flags come from args, with environment fallbacks from getenv;
// logs go to stdout.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := parseConfig(args, getenv, stdout)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel}))
	cfg.log(log)

	rdb, closeRedis, err := openRedis(cfg.RedisURL, log)
	if err != nil {
		return err
	}
	defer closeRedis()

	rules, err := loadRules(cfg.RulesFile)
	if err != nil {
		return err
	}
	// The metrics hooks below fire only once requests flow, after m is set.
	var m *metrics.Metrics
	st, err := store.New(rdb, store.Config{DefaultTTL: cfg.DefaultTTL, MaxTTL: cfg.MaxTTL, Rules: rules,
		OnCommit: func(n int) { m.ObserveCommit(n) }})
	if err != nil {
		return err
	}
	defer st.Close()
	locker := lock.New(rdb, lock.Options{MaxTTL: cfg.MaxLockTTL, MaxWait: cfg.MaxLockWait,
		OnAcquire: func(took time.Duration, granted bool) { m.ObserveLockWait(took, granted) }})
	defer locker.Close()
	var sources metrics.Sources
	sources.Store, sources.VectorClock, sources.ActiveWorkers = metrics.StoreSource(st, cfg.Namespace)
	sources.Locks = metrics.LockSource(locker)

	// The read cache serves GETs; it follows this instance's one
	// subscription to the change events (the hub), which also feeds every
	// watch stream.
	readCache, err := cache.New(st, cache.Options{Size: cfg.CacheSize}) // 0: disabled
	if err != nil {
		return err
	}
	hub := watch.New(rdb, st, watch.Options{Logger: log})
	defer hub.Listen(readCache)()
	sources.Cache = func() metrics.CacheStats {
		s := readCache.Stats()
		return metrics.CacheStats{Hits: s.Hits, Misses: s.Misses, Evictions: s.Evictions,
			Invalidations: s.Invalidations, Entries: s.Entries, MaxEntries: s.MaxEntries}
	}
	sources.Watch = func() metrics.WatchStats {
		s := hub.Stats()
		return metrics.WatchStats{Watchers: s.Watchers, EventsDelivered: s.Delivered, Dropped: s.Dropped, SubscriptionUp: s.Connected}
	}
	// Writes sent with ?async=true wait here until a flush. The queue must
	// flush through the Store the handlers use (the read cache, when there
	// is one), so that a flush drops the cached entries of its keys.
	queue := async.New(readCache, async.Options{Interval: cfg.BatchInterval, Size: cfg.BatchSize, Log: log,
		OnFlush: func(n int, _ error) {
			if n > 0 {
				m.ObserveCommit(n)
			}
		}})
	sources.Async = func() metrics.AsyncStats {
		s := queue.Stats()
		return metrics.AsyncStats{Pending: s.Pending, Flushes: s.Flushes}
	}
	m = metrics.New(sources)
	handler, err := memhttp.NewServer(memhttp.Config{
		Namespace: cfg.Namespace, MaxBodyBytes: cfg.MaxBodyBytes, Spec: api.Spec,
		HeartbeatTTL: cfg.HeartbeatTTL,
		Metrics:      m.Handler(), Stats: func() any { return m.Snapshot() }, ObserveRequest: m.ObserveRequest,
		Queue: queue,
	}, log, readCache, locker, memhttp.WithWatch(hub, 0), memhttp.WithCache(readCache))
	if err != nil {
		return err
	}

	// The hub runs until the HTTP server starts shutting down: stopping it
	// ends the watch streams, which Shutdown would otherwise wait for
	// (their clients reconnect elsewhere with Last-Event-ID).
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		hub.Run(hubCtx)
	}()
	defer func() { stopHub(); <-hubDone }()

	// Every instance sweeps; the sweep script lets exactly one announce
	// each expiry.
	sweepCtx, stopSweep := context.WithCancel(context.Background())
	sweepDone := make(chan struct{})
	go func() {
		defer close(sweepDone)
		st.RunSweeper(sweepCtx, store.DefaultSweepInterval, func(err error) {
			log.Warn("expiry sweep failed; retrying", "err", err)
		})
	}()
	defer func() { stopSweep(); <-sweepDone }()

	// The queue flushes on its timer until shutdown; then, once the HTTP
	// server has stopped taking requests (this defer runs after Shutdown,
	// and before the store and Redis close), everything still queued is
	// flushed: SIGTERM loses no accepted write unless Redis stays away for
	// all of flushTimeout.
	queueCtx, stopQueue := context.WithCancel(context.Background())
	queueDone := make(chan struct{})
	go func() {
		defer close(queueDone)
		queue.Run(queueCtx)
	}()
	defer func() {
		stopQueue()
		<-queueDone
		fctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
		defer cancel()
		n, err := queue.Close(fctx)
		if err != nil {
			log.Error("queued writes were NOT flushed before exit", "flushed", n, "lost", queue.Pending(), "err", err)
			return
		}
		log.Info("flushed queued writes", "flushed", n)
	}()

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	srv.RegisterOnShutdown(stopHub)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("memsync listening", "addr", ln.Addr().String())

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

func loadRules(path string) (*store.Rules, error) {
	var extra []store.Rule
	if path != "" {
		var err error
		if extra, err = store.LoadRules(path); err != nil {
			return nil, err
		}
	}
	return store.NewRules(extra)
}
