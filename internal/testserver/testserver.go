// Package testserver runs a complete memsync API in process for tests: the
// store, the locker, the expiry sweeper and the HTTP handler, on a fresh
// miniredis or on a given backend.
package testserver

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/memsync/memsync/api"
	memhttp "github.com/memsync/memsync/internal/http"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
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
}

// Server is a running in-process memsync.
type Server struct {
	URL     string // base URL, e.g. http://127.0.0.1:PORT
	Store   *store.Store
	Locker  *lock.Locker
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
	h, err := memhttp.NewServer(memhttp.Config{Spec: api.Spec, HeartbeatTTL: opts.HeartbeatTTL},
		slog.New(slog.DiscardHandler), st, lk)
	if err != nil {
		tb.Fatalf("testserver: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		st.RunSweeper(ctx, DefaultSweepInterval, nil)
	}()
	ts := httptest.NewServer(h)
	tb.Cleanup(func() {
		ts.Close()
		cancel()
		<-swept
		lk.Close()
		st.Close()
	})
	return &Server{URL: ts.URL, Store: st, Locker: lk, Backend: b}
}
