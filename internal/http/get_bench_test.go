package http_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/app"
	"github.com/memsync/memsync/internal/cache"
	"github.com/memsync/memsync/internal/redistest"
)

// nullWriter keeps nothing but the header map, so that a benchmark
// measures the handler rather than a recorder.
type nullWriter struct{ h http.Header }

func (w *nullWriter) Header() http.Header         { return w.h }
func (w *nullWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nullWriter) WriteHeader(int)             {}

// benchApp starts a whole instance (metrics, cache, async queue) over
// backend for a handler benchmark.
func benchApp(b *testing.B, backend redistest.Backend) *app.App {
	a, err := app.New(backend.Client, app.Config{CacheSize: cache.DefaultSize})
	if err != nil {
		b.Fatal(err)
	}
	a.Start()
	b.Cleanup(func() { _, _ = a.Close(b.Context()) })
	if err := a.WaitConnected(5 * time.Second); err != nil {
		b.Fatal(err)
	}
	return a
}

// benchGet serves GET path, after one PUT of its key, on a whole instance
// (metrics, cache, async queue) over backend: the handler's own cost per
// read, without the connection's (cmd/bench measures those).
func benchGet(b *testing.B, backend redistest.Backend, path string) {
	a := benchApp(b, backend)
	put := httptest.NewRecorder()
	a.Handler.ServeHTTP(put, httptest.NewRequest("PUT", "/v1/kv/tasks/T1/state",
		strings.NewReader(`{"value":{"status":"running","progress":42}}`)))
	if put.Code != 200 {
		b.Fatalf("PUT: %d %s", put.Code, put.Body)
	}
	req := httptest.NewRequest("GET", path, nil)
	w := &nullWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		a.Handler.ServeHTTP(w, req)
	}
}

func BenchmarkGetCached(b *testing.B) {
	benchGet(b, redistest.Mini(b), "/v1/kv/tasks/T1/state")
}

func BenchmarkGetConsistent(b *testing.B) {
	benchGet(b, redistest.Real(b), "/v1/kv/tasks/T1/state?consistent=true")
}
