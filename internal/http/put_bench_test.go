package http_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
)

// BenchmarkPut serves PUT /v1/kv/tasks/T1/state, the load generator's
// write, on a whole instance over a real redis-server: the store's cost is
// in it, so compare allocs/op and the profile's HTTP part rather than ns/op.
func BenchmarkPut(b *testing.B) {
	a := benchApp(b, redistest.Real(b))
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
