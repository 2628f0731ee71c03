// Package spectest checks real HTTP traffic against memsync's OpenAPI document,
// so that a test which talks to the server through it also proves that the
// server does what api/openapi.yaml says.
//
// Wrap a client's transport and use the client as usual:
//
//	v := spectest.New(t, api.Spec)
//	client := &http.Client{Transport: v.Transport(nil)}
//
// Every request must hit a documented route (else "undocumented route"), and
// every response must have a documented status code, documented headers and a
// body matching its schema. A request the spec itself rejects (a bad key, a
// bad body) is still sent, because tests of bad input need to send one; the
// server must then answer it with an error status (4xx or 5xx), and that
// answer must match the spec too. Mismatches are reported with tb.Errorf: the
// test fails but keeps going, and the caller gets the response unchanged.
//
// Path parameters marked "x-multi-segment: true" in the spec span one or more
// path segments (memsync keys contain '/'), which the routers that ship with
// kin-openapi cannot express; spectest therefore routes with its own small
// router over the document's paths. The document's paths are taken relative
// to "/": server URLs are not consulted.
package spectest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
)

// MultiSegment is the parameter extension that lets a path parameter span
// several path segments.
const MultiSegment = "x-multi-segment"

// Validator validates HTTP exchanges against one OpenAPI document. It is safe
// for concurrent use.
type Validator struct {
	tb     testing.TB
	doc    *openapi3.T
	routes []route
	opts   *openapi3filter.Options
	n      atomic.Int64
}

// New loads and validates the OpenAPI document spec; the test fails at once
// (tb.Fatalf) when the document is invalid.
func New(tb testing.TB, spec []byte) *Validator {
	tb.Helper()
	registerDecoders()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(spec)
	if err != nil {
		tb.Fatalf("spectest: load spec: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		tb.Fatalf("spectest: invalid spec: %v", err)
	}
	routes, err := buildRoutes(doc)
	if err != nil {
		tb.Fatalf("spectest: %v", err)
	}
	return &Validator{
		tb:     tb,
		doc:    doc,
		routes: routes,
		opts: &openapi3filter.Options{
			// Authentication is the server's business; the spec only
			// documents it.
			AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
			// Defaults must not be written into the request we send.
			SkipSettingDefaults:   true,
			IncludeResponseStatus: true,
			MultiError:            true,
		},
	}
}

// Transport returns a RoundTripper that validates every exchange it carries
// and then hands the response back unchanged. A nil base means
// http.DefaultTransport.
func (v *Validator) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{v: v, base: base}
}

// Client returns an HTTP client whose transport is v.Transport(nil).
func (v *Validator) Client() *http.Client {
	return &http.Client{Transport: v.Transport(nil)}
}

// Count returns how many responses have been validated, whatever the outcome;
// a test can check it to be sure its traffic went through the validator.
func (v *Validator) Count() int { return int(v.n.Load()) }

type transport struct {
	v    *Validator
	base http.RoundTripper
}

// RoundTrip validates the request, sends it, and validates the response.
// Bodies are read whole (both the validator and the peer need them), except
// text/event-stream responses, which are endless: for those only the status,
// headers and media type are checked.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	v := t.v
	body, err := readBody(req)
	if err != nil {
		return nil, fmt.Errorf("spectest: read request body: %w", err)
	}
	// A RoundTripper must not modify its request, so send a copy.
	out := withBody(req, body)

	route, params, err := v.FindRoute(req)
	if err != nil {
		v.tb.Errorf("spectest: %s %s: undocumented route (%v)", req.Method, req.URL.Path, err)
		return t.base.RoundTrip(out)
	}
	ctx := context.Background()
	in := &openapi3filter.RequestValidationInput{
		Request:    withBody(req, body),
		PathParams: params,
		Route:      route,
		Options:    v.opts,
	}
	reqErr := openapi3filter.ValidateRequest(ctx, in)

	resp, err := t.base.RoundTrip(out)
	if err != nil {
		return resp, err
	}
	v.n.Add(1)
	what := fmt.Sprintf("%s %s → %d", req.Method, req.URL.RequestURI(), resp.StatusCode)
	if reqErr != nil && resp.StatusCode < 400 {
		v.tb.Errorf("spectest: %s: the spec rejects this request but the server accepted it: %v", what, reqErr)
	}

	if isStream(resp.Header) {
		opts := *v.opts
		opts.ExcludeResponseBody = true
		rin := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: in,
			Status:                 resp.StatusCode,
			Header:                 resp.Header,
			Options:                &opts,
		}
		rin.SetBodyBytes(nil)
		if err := openapi3filter.ValidateResponse(ctx, rin); err != nil {
			v.tb.Errorf("spectest: %s: response does not match the spec: %v", what, err)
		} else if !streamDocumented(route.Operation, resp) {
			v.tb.Errorf("spectest: %s: response media type %q is not documented", what, resp.Header.Get("Content-Type"))
		}
		return resp, nil
	}

	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("spectest: read response body: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(data))
	rin := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                v.opts,
	}
	rin.SetBodyBytes(data)
	if err := openapi3filter.ValidateResponse(ctx, rin); err != nil {
		v.tb.Errorf("spectest: %s: response does not match the spec: %v\nbody: %s", what, err, snippet(data))
	} else if unvalidatedStatus(resp.StatusCode) && route.Operation.Responses.Status(resp.StatusCode) == nil {
		v.tb.Errorf("spectest: %s: status %d is not documented", what, resp.StatusCode)
	}
	return resp, nil
}

// unvalidatedStatus reports whether openapi3filter.ValidateResponse passes
// status without looking it up (it skips 304 and the redirects), so that
// the validator checks at least that the operation documents it.
func unvalidatedStatus(status int) bool {
	switch status {
	case http.StatusNotModified, http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// FindRoute matches req with the operation of the document that serves it,
// and returns the path parameters, unescaped. It implements routers.Router.
//
// A path parameter marked x-multi-segment takes one or more segments joined
// by '/'; any other takes exactly one. When several paths match, the one with
// more literal segments wins, then the one with more segments: so with
// /v1/locks/{name} and /v1/locks/{name}/refresh, /v1/locks/a/b/refresh is a
// refresh of lock "a/b".
func (v *Validator) FindRoute(req *http.Request) (*routers.Route, map[string]string, error) {
	p := req.URL.EscapedPath()
	if !strings.HasPrefix(p, "/") {
		return nil, nil, routers.ErrPathNotFound
	}
	segs := strings.Split(p[1:], "/")
	var (
		best       *route
		bestParams map[string]string
		pathFound  bool
	)
	for i := range v.routes {
		r := &v.routes[i]
		params := map[string]string{}
		if !match(r.segs, segs, params) {
			continue
		}
		pathFound = true
		if r.item.GetOperation(req.Method) == nil {
			continue
		}
		if best == nil || r.beats(best) {
			best, bestParams = r, params
		}
	}
	if best == nil {
		if pathFound {
			return nil, nil, routers.ErrMethodNotAllowed
		}
		return nil, nil, routers.ErrPathNotFound
	}
	return &routers.Route{
		Spec:      v.doc,
		Path:      best.path,
		PathItem:  best.item,
		Method:    req.Method,
		Operation: best.item.GetOperation(req.Method),
	}, bestParams, nil
}

var _ routers.Router = (*Validator)(nil)

// route is one path of the document, split into segments.
type route struct {
	path     string
	segs     []segment
	item     *openapi3.PathItem
	literals int
}

// segment is a literal (param == "") or a parameter.
type segment struct {
	literal string
	param   string
	multi   bool
}

func (r *route) beats(o *route) bool {
	if r.literals != o.literals {
		return r.literals > o.literals
	}
	if len(r.segs) != len(o.segs) {
		return len(r.segs) > len(o.segs)
	}
	return r.path < o.path
}

func buildRoutes(doc *openapi3.T) ([]route, error) {
	var routes []route
	for path, item := range doc.Paths.Map() {
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("path %q does not start with '/'", path)
		}
		r := route{path: path, item: item}
		for s := range strings.SplitSeq(path[1:], "/") {
			if !strings.ContainsAny(s, "{}") {
				r.segs = append(r.segs, segment{literal: s})
				r.literals++
				continue
			}
			name, ok := strings.CutPrefix(s, "{")
			name, ok2 := strings.CutSuffix(name, "}")
			if !ok || !ok2 || strings.ContainsAny(name, "{}") {
				return nil, fmt.Errorf("path %q: segment %q: only whole-segment parameters are supported", path, s)
			}
			r.segs = append(r.segs, segment{param: name, multi: isMulti(item, name)})
		}
		routes = append(routes, r)
	}
	// Map order is random; keep FindRoute's result independent of it.
	slices.SortFunc(routes, func(a, b route) int { return strings.Compare(a.path, b.path) })
	return routes, nil
}

// isMulti reports whether any declaration of the path parameter name, on the
// path item or one of its operations, is marked x-multi-segment.
func isMulti(item *openapi3.PathItem, name string) bool {
	lists := []openapi3.Parameters{item.Parameters}
	for _, op := range item.Operations() {
		lists = append(lists, op.Parameters)
	}
	for _, ps := range lists {
		if p := ps.GetByInAndName(openapi3.ParameterInPath, name); p != nil {
			if b, _ := p.Extensions[MultiSegment].(bool); b {
				return true
			}
		}
	}
	return false
}

// match matches the escaped path segments segs with tmpl, filling params. A
// multi-segment parameter tries the shortest span first and backtracks.
func match(tmpl []segment, segs []string, params map[string]string) bool {
	if len(tmpl) == 0 {
		return len(segs) == 0
	}
	if len(segs) == 0 {
		return false
	}
	t := tmpl[0]
	switch {
	case t.param == "":
		return unescape(segs[0]) == t.literal && match(tmpl[1:], segs[1:], params)
	case !t.multi:
		if segs[0] == "" { // a parameter has a value: /v1/tasks//state is not a task's
			return false
		}
		params[t.param] = unescape(segs[0])
		return match(tmpl[1:], segs[1:], params)
	}
	for n := 1; n <= len(segs); n++ {
		parts := make([]string, n)
		for i, s := range segs[:n] {
			parts[i] = unescape(s)
		}
		params[t.param] = strings.Join(parts, "/")
		if match(tmpl[1:], segs[n:], params) {
			return true
		}
	}
	delete(params, t.param)
	return false
}

func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// readBody reads and closes req.Body.
func readBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	return io.ReadAll(req.Body)
}

// withBody returns a copy of req that reads body, the content of req.Body
// read by readBody.
func withBody(req *http.Request, body []byte) *http.Request {
	r := req.Clone(req.Context())
	if req.Body == nil || req.Body == http.NoBody {
		return r
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return r
}

func isStream(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == "text/event-stream"
}

// streamDocumented reports whether op documents resp's media type for resp's
// status; ValidateResponse skips that check when the body is excluded.
func streamDocumented(op *openapi3.Operation, resp *http.Response) bool {
	ref := op.Responses.Status(resp.StatusCode)
	if ref == nil {
		ref = op.Responses.Default()
	}
	return ref != nil && ref.Value != nil && ref.Value.Content.Get(resp.Header.Get("Content-Type")) != nil
}

func snippet(b []byte) string {
	const limit = 2048
	if len(b) > limit {
		return string(b[:limit]) + "…"
	}
	return string(b)
}

var registerOnce sync.Once

// registerDecoders teaches openapi3filter, process-wide, the two media types
// memsync serves that it does not decode as wanted: application/yaml with a
// string schema (GET /openapi.yaml is a document, not data to validate) and
// text/event-stream. Any other schema keeps the YAML decoder.
func registerDecoders() {
	registerOnce.Do(func() {
		for _, ct := range []string{"application/yaml", "application/x-yaml"} {
			yamlDecoder := openapi3filter.RegisteredBodyDecoder(ct)
			if yamlDecoder == nil {
				yamlDecoder = openapi3filter.YamlBodyDecoder
			}
			openapi3filter.RegisterBodyDecoder(ct, func(r io.Reader, h http.Header, s *openapi3.SchemaRef, enc openapi3filter.EncodingFn) (any, error) {
				if s != nil && s.Value != nil && s.Value.Type.Is("string") {
					return openapi3filter.PlainBodyDecoder(r, h, s, enc)
				}
				return yamlDecoder(r, h, s, enc)
			})
		}
		if openapi3filter.RegisteredBodyDecoder("text/event-stream") == nil {
			openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.PlainBodyDecoder)
		}
	})
}

// Recorder is a testing.TB that keeps the validator's reports (Errorf)
// rather than failing its test: for a caller that must fail its test from
// elsewhere (a fuzz function may call only its own t), or that checks
// what was reported.
type Recorder struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

// Helper does nothing: the reports are read later, elsewhere.
func (r *Recorder) Helper() {}

// Errorf keeps a report.
func (r *Recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// Take returns the reports kept since the last Take, and forgets them.
func (r *Recorder) Take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	errs := r.errs
	r.errs = nil
	return errs
}
