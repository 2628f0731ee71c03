package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Counter is a counter's state.
type Counter struct {
	Name  string
	Value int64
	// ExpiresAt is zero for a counter that never expires.
	ExpiresAt time.Time
	// Replayed reports an Increment answered from its idempotency key: an
	// earlier call counted it, and Value is what that call made.
	Replayed bool
}

// counterJSON is a counter on the wire.
type counterJSON struct {
	Counter   string `json:"counter"`
	Value     int64  `json:"value"`
	ExpiresAt int64  `json:"expires_at"`
}

func (j counterJSON) counter() *Counter {
	out := &Counter{Name: j.Counter, Value: j.Value}
	if j.ExpiresAt != 0 {
		out.ExpiresAt = fromMillis(j.ExpiresAt)
	}
	return out
}

// counterOptions reads the options a counter takes: TTL and
// IdempotencyKey (only for Increment).
func counterOptions(opts []PutOption, keyed bool) (putOptions, error) {
	o, err := putOptionsOf(opts)
	switch {
	case err != nil:
		return o, err
	case o.context != nil || o.ifMatch != "" || o.ifNoneMatch || o.ephemeral || !keyed && o.idempotencyKey != "":
		return o, fmt.Errorf("%w: a counter takes TTL and (to add to it) IdempotencyKey only", ErrInvalid)
	}
	return o, nil
}

// Increment adds by (negative subtracts) to counter name atomically,
// creating it at 0 first, and returns its new state. Options: TTL (a new
// counter otherwise gets the server's default TTL, an existing one keeps
// its expiry) and IdempotencyKey, which makes the increment safe to send
// again (the server remembers it 10 minutes); a client made WithRetries
// gives an increment a key of its own. An increment that would take the
// value past ±(2^53−1) is an error matching ErrCounterOverflow.
func (c *Client) Increment(ctx context.Context, name string, by int64, opts ...PutOption) (*Counter, error) {
	if name == "" {
		return nil, errEmpty("counter name")
	}
	o, err := counterOptions(opts, true)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	if key := c.idempotencyKey(o.idempotencyKey); key != "" {
		h.Set("Idempotency-Key", key)
	}
	body := struct {
		By  int64  `json:"by"`
		TTL *int64 `json:"ttl,omitempty"`
	}{By: by, TTL: o.ttl}
	path := pathOf("v1/counters", name)
	resp, err := c.send(ctx, request{method: http.MethodPost, path: path, header: h, body: body})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var j counterJSON
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		return nil, fmt.Errorf("memsync: POST %s: decode %d response: %w", path, resp.StatusCode, err)
	}
	out := j.counter()
	out.Replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	return out, nil
}

// SetCounter sets counter name to value, creating it when missing; TTL
// applies as for Increment.
func (c *Client) SetCounter(ctx context.Context, name string, value int64, opts ...PutOption) (*Counter, error) {
	if name == "" {
		return nil, errEmpty("counter name")
	}
	o, err := counterOptions(opts, false)
	if err != nil {
		return nil, err
	}
	body := struct {
		Value int64  `json:"value"`
		TTL   *int64 `json:"ttl,omitempty"`
	}{Value: value, TTL: o.ttl}
	var j counterJSON
	if err := c.do(ctx, request{method: http.MethodPut, path: pathOf("v1/counters", name), body: body}, &j); err != nil {
		return nil, err
	}
	return j.counter(), nil
}

// Counter reads counter name; an error matching ErrNotFound when there is
// none.
func (c *Client) Counter(ctx context.Context, name string) (*Counter, error) {
	if name == "" {
		return nil, errEmpty("counter name")
	}
	var j counterJSON
	if err := c.do(ctx, request{method: http.MethodGet, path: pathOf("v1/counters", name)}, &j); err != nil {
		return nil, err
	}
	return j.counter(), nil
}

// DeleteCounter deletes counter name; an error matching ErrNotFound when
// there is none.
func (c *Client) DeleteCounter(ctx context.Context, name string) error {
	if name == "" {
		return errEmpty("counter name")
	}
	return c.do(ctx, request{method: http.MethodDelete, path: pathOf("v1/counters", name)}, nil)
}

// Counters lists the namespace's counters whose names start with prefix
// (all for ""), by name.
func (c *Client) Counters(ctx context.Context, prefix string) ([]*Counter, error) {
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	var out struct {
		Counters []counterJSON `json:"counters"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/counters", query: q}, &out); err != nil {
		return nil, err
	}
	cs := make([]*Counter, len(out.Counters))
	for i, j := range out.Counters {
		cs[i] = j.counter()
	}
	return cs, nil
}
