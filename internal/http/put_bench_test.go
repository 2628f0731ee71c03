package http_test

import (
	"fmt"
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

// BenchmarkBatch100 serves POST /v1/batch of 100 puts to distinct keys of
// one subtree, the load generator's batch, on a whole instance over a real
// redis-server; as BenchmarkPut, compare allocs/op and the profile.
func BenchmarkBatch100(b *testing.B) {
	a := benchApp(b, redistest.Real(b))
	var sb strings.Builder
	sb.WriteString(`{"ops":[`)
	for j := range 100 {
		if j > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"op":"put","key":"bench/b1/k%d","value":{"status":"running","progress":42}}`, j)
	}
	sb.WriteString(`]}`)
	batchBody := sb.String()
	body := strings.NewReader("")
	w := &nullWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		body.Reset(batchBody)
		req := httptest.NewRequest("POST", "/v1/batch", body)
		a.Handler.ServeHTTP(w, req)
	}
}
