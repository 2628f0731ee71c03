// Package testserver runs a complete memsync API in process for tests: the
// store, the locker, the expiry sweeper, the change-event hub, the read cache
// and the HTTP handler, on a fresh miniredis or on a given backend.
package testserver

import (
	"bytes"
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/app"
	"github.com/memsync/memsync/internal/async"
	"github.com/memsync/memsync/internal/auth"
	"github.com/memsync/memsync/internal/cache"
	"github.com/memsync/memsync/internal/lock"
	"github.com/redis/go-redis/v9"

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
	// Redis, when set, is the client the server uses instead of Backend's:
	// a cluster or failover client, say.
	Redis redis.UniversalClient
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
	// (http.DefaultWatchPing of internal/http).
	WatchPing time.Duration
	// WatchBuffer is each watcher's buffer (watch.DefaultBuffer).
	WatchBuffer int
	// BatchInterval and BatchSize tune the async write queue
	// (async.DefaultInterval, async.DefaultSize).
	BatchInterval time.Duration
	BatchSize     int
	// Tokens turns authentication on, with per-token limits RateLimit
	// (requests per second) and MaxWatchersPerToken (0: none).
	Tokens              *auth.Tokens
	RateLimit           int
	MaxWatchersPerToken int
	// LimitShareInterval is how often the instance shares its use of
	// tokens with the others (app.DefaultLimitShareInterval).
	LimitShareInterval time.Duration
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
	switch {
	case opts.CacheSize == 0:
		opts.CacheSize = cache.DefaultSize
	case opts.CacheSize < 0:
		opts.CacheSize = 0 // app: 0 disables
	}
	rules, err := store.NewRules(opts.Rules)
	if err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	var rdb redis.UniversalClient = b.Client
	if opts.Redis != nil {
		rdb = opts.Redis
	}
	a, err := app.New(rdb, app.Config{
		Rules: rules, MaxTTL: opts.MaxTTL, HeartbeatTTL: opts.HeartbeatTTL, CacheSize: opts.CacheSize,
		BatchInterval: opts.BatchInterval, BatchSize: opts.BatchSize,
		WatchBuffer: opts.WatchBuffer, WatchPing: opts.WatchPing, SweepInterval: DefaultSweepInterval,
		Tokens: opts.Tokens, RateLimit: opts.RateLimit, MaxWatchersPerToken: opts.MaxWatchersPerToken,
		LimitShareInterval: opts.LimitShareInterval,
	})
	if err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	a.Start()
	// Serve once the cache hears changes, so that tests see it work from
	// their first request.
	if err := a.WaitConnected(5 * time.Second); err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	ts := httptest.NewServer(a.Handler)
	tb.Cleanup(func() {
		// The hub first: it ends the watch streams, which ts.Close would
		// otherwise wait for.
		a.StopStreams()
		ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := a.Close(ctx); err != nil {
			tb.Errorf("testserver: %v", err)
		}
	})
	return &Server{URL: ts.URL, Store: a.Store, Locker: a.Locker, Hub: a.Hub, Cache: a.Cache, Queue: a.Queue, Backend: b}
}

// RunExample runs an example program's run function against a fresh
// server, fails the test if it returns an error or if its output lacks any
// of want, and returns the output for further checks.
func RunExample(t *testing.T, run func(ctx context.Context, baseURL string, out io.Writer) error, want ...string) string {
	t.Helper()
	srv := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, srv.URL, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
	return out.String()
}
