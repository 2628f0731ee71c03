// Package http serves memsync's HTTP/JSON API. routes.go lists every route
// and mirrors api/openapi.yaml; each handler is a maker that receives only
// what it uses. Every error leaves through writeError as
// application/problem+json.
package http

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/memsync/memsync/internal/auth"
	"github.com/memsync/memsync/internal/store"
)

// Store is what the handlers need from the key-value store.
type Store interface {
	Get(ctx context.Context, ns, key string, opt store.GetOptions) (store.Entry, error)
	Put(ctx context.Context, ns, key string, req store.PutRequest) (store.PutResult, error)
	Delete(ctx context.Context, ns, key string, req store.DeleteRequest) (store.DeleteResult, error)
	GetMany(ctx context.Context, ns string, keys []string, opt store.GetOptions) ([]store.Entry, error)
	List(ctx context.Context, ns, prefix, cursor string, limit int) ([]string, string, error)
	DeletePrefix(ctx context.Context, ns, prefix string) (int, error)
	Batch(ctx context.Context, ops []store.BatchOp, atomic bool) ([]store.BatchResult, error)
	Ping(ctx context.Context) error
}

// Defaults of Config.
const (
	DefaultNamespace    = "task-sentinel"
	DefaultMaxBodyBytes = 1 << 20 // 1 MiB
	DefaultMaxDepth     = 64
)

// Config is the HTTP layer's configuration. Zero fields take the defaults.
type Config struct {
	Namespace    string // namespace of requests without ?ns=
	MaxBodyBytes int64  // larger bodies get 413
	MaxDepth     int    // deeper JSON gets 400
	Spec         []byte // served at /openapi.yaml
	// HeartbeatTTL is the life of a heartbeat that names none
	// (DefaultHeartbeatTTL).
	HeartbeatTTL time.Duration
	// Queue holds the writes of PUT ?async=true (batch.go); nil applies
	// them at once (still answered 202).
	Queue Queue
	// Ephemeral binds the keys of writes with ?ephemeral=true to their
	// writer's heartbeat; nil refuses such writes (400).
	Ephemeral Binder
	// Queues serves /v1/queues; nil answers 503.
	Queues Queues
	// Counters serves /v1/counters; nil answers 503.
	Counters Counters
	// Barriers serves /v1/barriers; nil answers 503.
	Barriers Barriers
	// Metrics serves /metrics, Stats answers /v1/stats, and ObserveRequest
	// hears every finished request (route pattern, method, status, time).
	// Any may be nil: /metrics and /v1/stats then answer 404.
	Metrics        http.Handler
	Stats          func() any
	ObserveRequest func(route, method string, status int, took time.Duration)
	// Tokens, when set, admit only requests with one of its bearer tokens,
	// to what the token's role may use (auth.go); nil serves everyone as
	// an admin. RateLimit is each token's requests per second (0: no
	// limit) with bursts of RateBurst (0: twice the rate), and
	// MaxWatchersPerToken its open watch streams and blocking reads (0: no
	// limit).
	Tokens              *auth.Tokens
	RateLimit           float64
	RateBurst           int
	MaxWatchersPerToken int
	// Usage, when set, shares each token's use with the other instances
	// (Server.ShareLimits), so that the limits above hold across them;
	// nil counts them per instance.
	Usage UsageSharer
}

// Server is the memsync API as an http.Handler.
type Server struct {
	cfg    Config
	log    *slog.Logger
	store  Store
	locker Locker
	router chi.Router
	prop   propagation // watch and cache routes (watch.go)
	gate   *gate       // per-token limits; nil without tokens
}

// NewServer returns the API handler over st and lk. Options add the
// optional dependencies (WithWatch, WithCache).
func NewServer(cfg Config, log *slog.Logger, st Store, lk Locker, opts ...Option) (*Server, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxDepth <= 0 {
		cfg.MaxDepth = DefaultMaxDepth
	}
	if cfg.HeartbeatTTL <= 0 {
		cfg.HeartbeatTTL = DefaultHeartbeatTTL
	}
	if err := validNamespace(cfg.Namespace); err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	st = withQueue(st, cfg.Queue) // reads see this instance's queued writes
	s := &Server{cfg: cfg, log: log, store: st, locker: lk, router: chi.NewRouter()}
	if cfg.Tokens != nil {
		s.gate = newGate(cfg.RateLimit, cfg.RateBurst, cfg.MaxWatchersPerToken)
	}
	for _, o := range opts {
		o(s)
	}
	s.routes()
	return s, nil
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.router.ServeHTTP(w, r)
}

// recoverer turns a panic in a handler into a logged 500 problem instead of
// a dropped connection.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				writeError(w, r, s.log, fmt.Errorf("panic: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// observe reports every finished request to cfg.ObserveRequest, by chi
// route pattern (not path: keys would explode the label set).
func (s *Server) observe(next http.Handler) http.Handler {
	if s.cfg.ObserveRequest == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := statusWriters.Get().(*statusWriter)
		sw.ResponseWriter, sw.status = w, 0
		next.ServeHTTP(sw, r)
		route := ""
		if rc := chi.RouteContext(r.Context()); rc != nil {
			route = rc.RoutePattern()
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		sw.ResponseWriter = nil
		statusWriters.Put(sw)
		s.cfg.ObserveRequest(route, r.Method, status, time.Since(start))
	})
}

// statusWriter remembers the status a handler answered with. It is pooled:
// a handler never keeps its ResponseWriter after it returns. Unwrap lets
// http.ResponseController reach the connection's Flush and deadlines (the
// watch stream needs them).
type statusWriter struct {
	http.ResponseWriter
	status int
}

var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 { // 1xx are interim: the final status comes later
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush makes the writer an http.Flusher, as the one it wraps is.
func (w *statusWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController's Flush calls: it reports a
// failed flush, which ends a watch stream.
func (w *statusWriter) FlushError() error {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// limitBody caps every request body at MaxBodyBytes; decode turns the
// overflow into 413. A request without a body (every GET) has nothing to
// cap, nor has one whose Content-Length is within the limit: the server
// already stops its body there.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody && (r.ContentLength <= 0 || r.ContentLength > s.cfg.MaxBodyBytes) {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		}
		next.ServeHTTP(w, r)
	})
}
