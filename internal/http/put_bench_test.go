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
	benchWrite(b, "PUT", "/v1/kv/tasks/T1/state", `{"value":{"status":"running","progress":42}}`)
}

// BenchmarkBatch100 serves POST /v1/batch of 100 puts to distinct keys of
// one subtree, the load generator's batch, on a whole instance over a real
// redis-server; as BenchmarkPut, compare allocs/op and the profile.
func BenchmarkBatch100(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"ops":[`)
	for j := range 100 {
		if j > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"op":"put","key":"bench/b1/k%d","value":{"status":"running","progress":42}}`, j)
	}
	sb.WriteString(`]}`)
	benchWrite(b, "POST", "/v1/batch", sb.String())
}

// benchWrite serves method path with body over and over.
func benchWrite(b *testing.B, method, path, payload string) {
	a := benchApp(b, redistest.Real(b))
	body := strings.NewReader("")
	w := &nullWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		body.Reset(payload)
		a.Handler.ServeHTTP(w, httptest.NewRequest(method, path, body))
	}
}
