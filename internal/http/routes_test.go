package http_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"

	"github.com/memsync/memsync/api"
	memhttp "github.com/memsync/memsync/internal/http"
	"github.com/memsync/memsync/internal/spectest"
)

// routes.go and api/openapi.yaml must list the same API: every route the
// router serves is a documented operation, and every documented operation
// is served.
func TestRoutesMatchTheSpec(t *testing.T) {
	srv, err := memhttp.NewServer(memhttp.Config{Spec: api.Spec}, slog.New(slog.DiscardHandler), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := spectest.New(t, api.Spec)
	served := 0
	err = chi.Walk(srv.Routes(), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		served++
		// A wildcard stands for a key or lock name of several segments.
		path := strings.ReplaceAll(route, "*", "a/b")
		for strings.Contains(path, "{") {
			i, j := strings.IndexByte(path, '{'), strings.IndexByte(path, '}')
			path = path[:i] + "p1" + path[j+1:]
		}
		if _, _, err := v.FindRoute(httptest.NewRequest(method, path, nil)); err != nil {
			t.Errorf("%s %s (served as %s) is not in the spec: %v", method, path, route, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	doc, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		t.Fatal(err)
	}
	documented := 0
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented++
			sample := path
			for strings.Contains(sample, "{") {
				i, j := strings.IndexByte(sample, '{'), strings.IndexByte(sample, '}')
				sample = sample[:i] + "p1" + sample[j+1:]
			}
			if !srv.Routes().Match(chi.NewRouteContext(), method, sample) {
				t.Errorf("%s %s is in the spec but not served", method, path)
			}
		}
	}
	// POST /v1/locks/* and /v1/semaphores/* serve two documented operations
	// each: acquire and refresh.
	if documented != served+2 {
		t.Errorf("%d documented operations, %d served routes (+2 for the refreshes of locks and semaphores)", documented, served)
	}
}
