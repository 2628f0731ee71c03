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

// BenchmarkPut serves PUT /v1/kv/tasks/T1/state, the load generator's
// write, on a whole instance over a real redis-server: the store's cost is
// in it, so compare allocs/op and the profile's HTTP part rather than ns/op.
func BenchmarkPut(b *testing.B) {
	a, err := app.New(redistest.Real(b).Client, app.Config{CacheSize: cache.DefaultSize})
	if err != nil {
		b.Fatal(err)
	}
	a.Start()
	b.Cleanup(func() { _, _ = a.Close(b.Context()) })
	if err := a.WaitConnected(5 * time.Second); err != nil {
		b.Fatal(err)
	}
	const putBody = `{"value":{"status":"running","progress":42}}`
	body := strings.NewReader("")
	w := &nullWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		body.Reset(putBody)
		req := httptest.NewRequest("PUT", "/v1/kv/tasks/T1/state", body)
		a.Handler.ServeHTTP(w, req)
	}
}
