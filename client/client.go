package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults of the options of New.
const (
	// DefaultWorkerID is the worker id sent when WithWorkerID is not given:
	// none, so the server records writes as "anonymous".
	DefaultWorkerID = ""
	// DefaultNamespace is the namespace used when WithNamespace is not
	// given: none, so the server picks its configured one ("task-sentinel").
	DefaultNamespace = ""
	// UserAgent is the User-Agent of every request.
	UserAgent = "memsync-go-client/1"
)

// maxErrorBody caps how much of an error response is read.
const maxErrorBody = 64 << 10

// Client talks to one memsync server (or a load balancer in front of many).
// It is safe for concurrent use.
type Client struct {
	base      *url.URL
	workerID  string
	namespace string
	token     string
	hc        *http.Client
	retries   int
}

// Option configures a Client.
type Option func(*Client)

// WithWorkerID names the worker: it is sent as X-Worker-Id on every request,
// becomes the writer id in vector clocks, the default lock owner, and the id
// that Heartbeat keeps alive. Defaults to DefaultWorkerID (none: the server
// writes as "anonymous", and Heartbeat fails).
func WithWorkerID(id string) Option { return func(c *Client) { c.workerID = id } }

// WithNamespace sends ?ns=ns on every request. Defaults to DefaultNamespace
// (none: the server's configured namespace, "task-sentinel").
func WithNamespace(ns string) Option { return func(c *Client) { c.namespace = ns } }

// WithHTTPClient sets the HTTP client. Defaults to http.DefaultClient, which
// has no timeout of its own: bound every call with its context. A timeout on
// hc must exceed the longest lock wait you ask for. A server that asks for
// client certificates (--tls-client-ca) is reached with one in hc's
// transport:
//
//	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverCAs,
//		Certificates: []tls.Certificate{clientCert}}, ForceAttemptHTTP2: true}
//	c, err := client.New("https://memsync.internal:8443", client.WithHTTPClient(&http.Client{Transport: tr}))
//
// When the server's token file names that certificate (cert:<name>), the
// certificate says which worker the client is and no token is needed.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithRetries makes the client send a request again, up to n more times,
// when it may safely do so: when the server answered 429 (it refused the
// request before doing anything), and, for reads and for writes that carry
// an idempotency key, when the request failed on the way (a broken
// connection, a lost answer) or was answered 503. Such a client gives every
// Put, PutAsync, typed write, Delete, Lock and Batch (an atomic one when it
// has a put or a delete) and Patch an idempotency key of its own when the call names none, so
// that a write is applied once however often it is sent. It waits as
// Retry-After says (at most maxRetryWait), else 50 ms, doubling. Releases,
// refreshes, heartbeats and atomic batches of gets only are never sent
// again. A write with an
// idempotency key costs the server a little more than one without (it
// takes the write script's general path, and the key keeps the idempotency
// keys of its latest 8 such writes). Defaults to 0.
func WithRetries(n int) Option { return func(c *Client) { c.retries = max(n, 0) } }

// maxRetryWait caps the wait before a request is sent again.
const maxRetryWait = 2 * time.Second

// WithToken sends "Authorization: Bearer token" on every request. Defaults
// to none.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// New returns a client of the server at baseURL ("http://127.0.0.1:8080";
// a path prefix is kept, for a server behind a proxy). It fails only on a
// baseURL that is not an absolute http or https URL: it does not contact the
// server.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("memsync: base URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("memsync: base URL %q: want http://host[:port] or https://…", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	c := &Client{base: u, workerID: DefaultWorkerID, namespace: DefaultNamespace, hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		c.hc = http.DefaultClient
	}
	return c, nil
}

// WorkerID returns the worker id the client sends ("" for none).
func (c *Client) WorkerID() string { return c.workerID }

// request is one API call.
type request struct {
	method string
	path   string     // already escaped, from pathOf
	query  url.Values // may be nil
	header http.Header
	body   any // JSON-encoded when not nil
}

// do sends req and decodes a 2xx JSON answer into out (when out is not nil).
// Any other status becomes an *APIError.
func (c *Client) do(ctx context.Context, req request, out any) error {
	resp, err := c.send(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody)) // let the connection be reused
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("memsync: %s %s: decode %d response: %w", req.method, req.path, resp.StatusCode, err)
	}
	return nil
}

// send sends req and returns a 2xx response, whose body the caller must
// close. Any other status becomes an *APIError. The Accept header is
// application/json unless req.header sets one (the watch stream's).
func (c *Client) send(ctx context.Context, req request) (*http.Response, error) {
	// Safe to send again when it changes nothing, or names itself.
	safe := req.method == http.MethodGet || req.header.Get("Idempotency-Key") != ""
	wait := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		resp, err := c.sendOnce(ctx, req)
		if err == nil || attempt == c.retries || ctx.Err() != nil {
			return resp, err
		}
		var apiErr *APIError
		switch {
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusTooManyRequests:
		case errors.As(err, &apiErr) && apiErr.Status == http.StatusServiceUnavailable && safe:
		case !errors.As(err, &apiErr) && safe && !errors.Is(err, errEncode):
		default:
			return resp, err
		}
		d := wait
		if apiErr != nil && apiErr.RetryAfter > 0 {
			d = min(apiErr.RetryAfter, maxRetryWait)
		}
		wait = min(wait*2, maxRetryWait)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// errEncode marks a request that could not be built: sending it again
// cannot help.
var errEncode = errors.New("memsync: request not built")

// idempotencyKey returns key, or a new random one when key is empty and the
// client sends requests again (WithRetries).
func (c *Client) idempotencyKey(key string) string {
	if key != "" || c.retries == 0 {
		return key
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "auto." + hex.EncodeToString(b[:])
}

// sendOnce is one attempt of send.
func (c *Client) sendOnce(ctx context.Context, req request) (*http.Response, error) {
	q := req.query
	if c.namespace != "" {
		if q == nil {
			q = url.Values{}
		}
		if q.Get("ns") == "" {
			q.Set("ns", c.namespace)
		}
	}
	target := c.base.String() + req.path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	var body io.Reader
	if req.body != nil {
		b, err := json.Marshal(req.body)
		if err != nil {
			return nil, fmt.Errorf("memsync: %s %s: encode body: %w: %w", req.method, req.path, errEncode, err)
		}
		body = bytes.NewReader(b)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, target, body)
	if err != nil {
		return nil, fmt.Errorf("memsync: %s %s: %w: %w", req.method, req.path, errEncode, err)
	}
	for k, vs := range req.header {
		hr.Header[k] = vs
	}
	if req.body != nil && hr.Header.Get("Content-Type") == "" { // a JSON Patch names its own
		hr.Header.Set("Content-Type", "application/json")
	}
	if hr.Header.Get("Accept") == "" {
		hr.Header.Set("Accept", "application/json")
	}
	hr.Header.Set("User-Agent", UserAgent)
	if c.workerID != "" {
		hr.Header.Set("X-Worker-Id", c.workerID)
	}
	if c.token != "" {
		hr.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("memsync: %s %s: %w", req.method, req.path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, newAPIError(req.method, req.path, resp)
	}
	return resp, nil
}

// pathOf joins escaped path segments; each part may itself hold '/' (a key
// or lock name), whose segments are escaped one by one.
func pathOf(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		for _, seg := range strings.Split(p, "/") {
			b.WriteByte('/')
			b.WriteString(url.PathEscape(seg))
		}
	}
	return b.String()
}

// errEmpty reports an empty name before anything is sent.
func errEmpty(what string) error {
	return fmt.Errorf("memsync: empty %s: %w", what, ErrInvalid)
}

// checkName refuses names that would change the route they are put in.
func checkName(what, name string) error {
	if name == "" {
		return errEmpty(what)
	}
	if strings.Contains(name, "/") {
		return fmt.Errorf("memsync: %s %q contains '/': %w", what, name, ErrInvalid)
	}
	return nil
}
