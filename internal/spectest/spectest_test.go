package spectest_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/memsync/memsync/api"
	"github.com/memsync/memsync/internal/spectest"
)

func TestSpecIsValid(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.Spec)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("validate: %v", err)
	}
	for _, path := range []string{"/v1/kv/{key}", "/v1/keys", "/healthz", "/readyz", "/openapi.yaml"} {
		if doc.Paths.Value(path) == nil {
			t.Errorf("path %s is missing", path)
		}
	}
}

const entry = `{"key":"a/b/c","namespace":"task-sentinel","value":{"status":"running"},
"version":{"w1":3,"w2":1},"etag":"\"e1\"","timestamp":1764170000000,"writer":"w1",
"expires_at":1764173600000,"strategy":"lww","conflict":false,"siblings":1}`

const problem404 = `{"type":"about:blank","title":"Not Found","status":404,"detail":"no key a/b","code":"not_found"}`

// reply returns a handler that answers with status, Content-Type ct (if not
// empty), the extra headers kv (name, value, …) and body.
func reply(status int, ct, body string, kv ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			w.Header().Set(kv[i], kv[i+1])
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func TestTransport(t *testing.T) {
	const (
		jsonCT    = "application/json"
		problemCT = "application/problem+json"
	)
	tests := []struct {
		name    string
		method  string
		path    string
		body    string
		header  http.Header
		handler http.HandlerFunc
		wantErr string // substring of the reported error; "" = no error
	}{
		{
			name: "entry with slashes in key", method: "GET", path: "/v1/kv/a/b/c?ns=other&resolve=merge&siblings=true",
			handler: reply(200, jsonCT, entry, "ETag", `"e1"`),
		},
		{
			name: "percent-encoded key", method: "GET", path: "/v1/kv/a%2Fb%2Fc",
			handler: reply(200, jsonCT, entry, "ETag", `"e1"`),
		},
		{
			name: "wrong field type", method: "GET", path: "/v1/kv/a/b/c",
			handler: reply(200, jsonCT, strings.Replace(entry, "1764170000000", `"yesterday"`, 1), "ETag", `"e1"`),
			wantErr: "response does not match",
		},
		{
			name: "missing required field", method: "GET", path: "/v1/kv/a/b/c",
			handler: reply(200, jsonCT, strings.Replace(entry, `"strategy":"lww",`, "", 1), "ETag", `"e1"`),
			wantErr: "strategy",
		},
		{
			name: "missing ETag header", method: "GET", path: "/v1/kv/a/b/c",
			handler: reply(200, jsonCT, entry),
			wantErr: "ETag",
		},
		{
			name: "not found problem", method: "GET", path: "/v1/kv/a/b",
			handler: reply(404, problemCT, problem404),
		},
		{
			name: "problem served as plain JSON", method: "GET", path: "/v1/kv/a/b",
			handler: reply(404, jsonCT, problem404),
			wantErr: "Content-Type",
		},
		{
			name: "unknown problem code", method: "GET", path: "/v1/kv/a/b",
			handler: reply(404, problemCT, strings.Replace(problem404, "not_found", "missing", 1)),
			wantErr: "response does not match",
		},
		{
			name: "undocumented status", method: "GET", path: "/v1/kv/a",
			handler: reply(418, problemCT, problem404),
			wantErr: "status is not supported",
		},
		{
			name: "not modified", method: "GET", path: "/v1/kv/a/b", header: http.Header{"If-None-Match": {`"e1"`}},
			handler: reply(304, "", "", "ETag", `"e1"`),
		},
		{
			// openapi3filter passes a 304 unchecked; the validator does not.
			name: "undocumented not modified", method: "DELETE", path: "/v1/kv/a/b",
			handler: reply(304, "", ""),
			wantErr: "status 304 is not documented",
		},
		{
			name: "undocumented route", method: "GET", path: "/v1/nope",
			handler: reply(404, problemCT, problem404),
			wantErr: "undocumented route",
		},
		{
			name: "undocumented method", method: "POST", path: "/v1/kv/a",
			handler: reply(405, "", ""),
			wantErr: "undocumented route",
		},
		{
			name: "put", method: "PUT", path: "/v1/kv/tasks/T1/state",
			body:   `{"value":{"status":"running"},"context":{"w1":2},"ttl":0}`,
			header: http.Header{"Content-Type": {jsonCT}, "X-Worker-Id": {"w1"}, "If-Match": {`"e0"`}},
			handler: func(w http.ResponseWriter, r *http.Request) {
				// The server must get the body the validator already read.
				b, _ := io.ReadAll(r.Body)
				if want := `{"value":{"status":"running"},"context":{"w1":2},"ttl":0}`; string(b) != want {
					http.Error(w, "body "+string(b), 500)
					return
				}
				reply(200, jsonCT, entry, "ETag", `"e1"`)(w, r)
			},
		},
		{
			name: "put of null", method: "PUT", path: "/v1/kv/k",
			body: `{"value":null}`, header: http.Header{"Content-Type": {jsonCT}},
			handler: reply(200, jsonCT, strings.Replace(entry, `{"status":"running"}`, "null", 1), "ETag", `"e1"`),
		},
		{
			name: "bad request rejected", method: "PUT", path: "/v1/kv/k",
			body: `{"value":1,"bogus":2}`, header: http.Header{"Content-Type": {jsonCT}},
			handler: reply(400, problemCT, `{"type":"about:blank","title":"Bad Request","status":400,"code":"invalid_argument"}`),
		},
		{
			name: "bad request accepted", method: "PUT", path: "/v1/kv/k",
			body: `{"value":1,"bogus":2}`, header: http.Header{"Content-Type": {jsonCT}},
			handler: reply(200, jsonCT, entry, "ETag", `"e1"`),
			wantErr: "the spec rejects this request",
		},
		{
			name: "invalid key rejected", method: "GET", path: "/v1/kv/a%20b/..",
			handler: reply(400, problemCT, `{"type":"about:blank","title":"Bad Request","status":400,"code":"invalid_key"}`),
		},
		{
			name: "delete", method: "DELETE", path: "/v1/kv/a/b",
			handler: reply(204, "", ""),
		},
		{
			name: "keys", method: "GET", path: "/v1/keys?prefix=tasks/&limit=2",
			handler: reply(200, jsonCT, `{"keys":["tasks/T1/state","tasks/T2/state"],"cursor":"xyz"}`),
		},
		{
			name: "keys with out-of-range limit accepted", method: "GET", path: "/v1/keys?limit=0",
			handler: reply(200, jsonCT, `{"keys":[]}`),
			wantErr: "the spec rejects this request",
		},
		{
			name: "healthz", method: "GET", path: "/healthz",
			handler: reply(200, jsonCT, `{"status":"ok"}`),
		},
		{
			name: "readyz down", method: "GET", path: "/readyz",
			handler: reply(503, problemCT, `{"type":"about:blank","title":"Service Unavailable","status":503,"code":"backend_unavailable"}`, "Retry-After", "1"),
		},
		{
			name: "503 without Retry-After", method: "GET", path: "/readyz",
			handler: reply(503, problemCT, `{"type":"about:blank","title":"Service Unavailable","status":503,"code":"backend_unavailable"}`),
			wantErr: "Retry-After",
		},
		{
			name: "openapi.yaml", method: "GET", path: "/openapi.yaml",
			handler: reply(200, "application/yaml", string(api.Spec)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &spectest.Recorder{TB: t}
			v := spectest.New(rec, api.Spec)
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()

			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range tt.header {
				req.Header[k] = vs
			}
			resp, err := v.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			// The caller gets the body the validator read.
			if resp.StatusCode == 200 && len(got) == 0 {
				t.Errorf("response body is empty")
			}

			errs := rec.Take()
			switch {
			case tt.wantErr == "" && len(errs) > 0:
				t.Errorf("unexpected errors:\n%s", strings.Join(errs, "\n"))
			case tt.wantErr != "" && len(errs) == 0:
				t.Errorf("no error reported, want one containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(strings.Join(errs, "\n"), tt.wantErr):
				t.Errorf("errors do not mention %q:\n%s", tt.wantErr, strings.Join(errs, "\n"))
			}
			wantCount := 1
			if strings.Contains(tt.wantErr, "undocumented route") {
				wantCount = 0
			}
			if got := v.Count(); got != wantCount {
				t.Errorf("Count() = %d, want %d", got, wantCount)
			}
		})
	}
}

// routeSpec has the shapes of path that routing must tell apart: a
// multi-segment parameter in the middle of a path and at its end, next to a
// single-segment one, and an event stream.
const routeSpec = `
openapi: 3.0.3
info: {title: t, version: "1"}
paths:
  /v1/locks/{name}:
    parameters:
      - {name: name, in: path, required: true, x-multi-segment: true, schema: {type: string}}
    get:
      responses: {'200': {description: held}}
  /v1/locks/{name}/refresh:
    post:
      parameters:
        - {name: name, in: path, required: true, x-multi-segment: true, schema: {type: string}}
      responses: {'200': {description: refreshed}}
  /v1/tasks/{id}/agents/{agent}:
    parameters:
      - {name: id, in: path, required: true, schema: {type: string}}
      - {name: agent, in: path, required: true, schema: {type: string}}
    get:
      responses: {'200': {description: agent}}
  /v1/watch:
    get:
      responses:
        '200':
          description: events
          content:
            text/event-stream:
              schema: {type: string}
`

func TestFindRoute(t *testing.T) {
	v := spectest.New(t, []byte(routeSpec))
	tests := []struct {
		method, path string
		wantPath     string // "" = no route
		wantParams   map[string]string
	}{
		{"GET", "/v1/locks/a", "/v1/locks/{name}", map[string]string{"name": "a"}},
		{"GET", "/v1/locks/tasks/T1", "/v1/locks/{name}", map[string]string{"name": "tasks/T1"}},
		{"POST", "/v1/locks/tasks/T1/refresh", "/v1/locks/{name}/refresh", map[string]string{"name": "tasks/T1"}},
		{"GET", "/v1/locks/tasks/refresh", "/v1/locks/{name}", map[string]string{"name": "tasks/refresh"}},
		{"POST", "/v1/locks/refresh/refresh", "/v1/locks/{name}/refresh", map[string]string{"name": "refresh"}},
		{"GET", "/v1/locks/a%2Fb", "/v1/locks/{name}", map[string]string{"name": "a/b"}},
		{"GET", "/v1/tasks/T1/agents/A1", "/v1/tasks/{id}/agents/{agent}", map[string]string{"id": "T1", "agent": "A1"}},
		{"GET", "/v1/tasks/T1/x/agents/A1", "", nil},
		{"GET", "/v1/locks", "", nil},
		{"DELETE", "/v1/locks/a", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.path, nil)
			route, params, err := v.FindRoute(req)
			if tt.wantPath == "" {
				if err == nil {
					t.Fatalf("found %s %v, want no route", route.Path, params)
				}
				return
			}
			if err != nil {
				t.Fatalf("FindRoute: %v", err)
			}
			if route.Path != tt.wantPath {
				t.Errorf("path = %s, want %s", route.Path, tt.wantPath)
			}
			if fmt.Sprint(params) != fmt.Sprint(tt.wantParams) {
				t.Errorf("params = %v, want %v", params, tt.wantParams)
			}
		})
	}
}

// TestEventStream checks that an endless text/event-stream response is
// handed over as it arrives rather than buffered.
func TestEventStream(t *testing.T) {
	rec := &spectest.Recorder{TB: t}
	v := spectest.New(rec, []byte(routeSpec))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "event: put\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/v1/watch", nil)
	resp, err := v.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "event: put\n" {
		t.Fatalf("first line = %q, %v", line, err)
	}
	if errs := rec.Take(); len(errs) > 0 {
		t.Errorf("unexpected errors:\n%s", strings.Join(errs, "\n"))
	}
	if v.Count() != 1 {
		t.Errorf("Count() = %d, want 1", v.Count())
	}
}
