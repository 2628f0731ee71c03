package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// BarrierState is what an arrival at a barrier, or a read, finds.
type BarrierState struct {
	Name string `json:"barrier"`
	// Generation: tripped, the generation passed; else the one waited on.
	Generation int64 `json:"generation"`
	Parties    int   `json:"parties"`
	// Tripped reports that the arrival's generation passed: every party
	// arrived.
	Tripped bool `json:"tripped"`
	// Arrived names, sorted, who passed (tripped) or who has arrived.
	Arrived []string `json:"arrived"`
}

// BarrierOptions say how to arrive.
type BarrierOptions struct {
	// Wait is how long the server waits for the other parties (it caps it,
	// 60 s by default); 0 only arrives.
	Wait time.Duration
	// TTL is how long the arrival counts after the wait ends (the
	// server's 30 s for 0).
	TTL time.Duration
	// IdempotencyKey lets the call sent again after its generation passed
	// learn so, rather than arrive at the next generation. A client made
	// WithRetries gives an arrival a key of its own.
	IdempotencyKey string
}

// Arrive counts this client's worker in at barrier name, which waits for
// parties workers, and waits up to opts.Wait for the others: the last to
// arrive trips it, and every party passes together (Tripped). A wait that
// ends first is not an error: Tripped is false, and the arrival counts on
// for opts.TTL, so calling Arrive again waits on. Parties that ask for
// another number are an error matching ErrLimitMismatch.
func (c *Client) Arrive(ctx context.Context, name string, parties int, opts BarrierOptions) (*BarrierState, error) {
	if name == "" {
		return nil, errEmpty("barrier name")
	}
	h := http.Header{}
	if key := c.idempotencyKey(opts.IdempotencyKey); key != "" {
		h.Set("Idempotency-Key", key)
	}
	body := struct {
		Parties int   `json:"parties"`
		WaitMs  int64 `json:"wait_ms,omitempty"`
		TTLMs   int64 `json:"ttl_ms,omitempty"`
	}{Parties: parties, WaitMs: ceilMillis(opts.Wait), TTLMs: ceilMillis(opts.TTL)}
	var st BarrierState
	if err := c.do(ctx, request{method: http.MethodPost, path: pathOf("v1/barriers", name), header: h, body: body}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Barrier reads barrier name: its generation, parties and who has
// arrived; an error matching ErrNotFound when there is none.
func (c *Client) Barrier(ctx context.Context, name string) (*BarrierState, error) {
	if name == "" {
		return nil, errEmpty("barrier name")
	}
	var st BarrierState
	if err := c.do(ctx, request{method: http.MethodGet, path: pathOf("v1/barriers", name)}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Barriers lists the barriers whose names start with prefix ("": all),
// sorted by name, each as Barrier reads it.
func (c *Client) Barriers(ctx context.Context, prefix string) ([]*BarrierState, error) {
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	var out struct {
		Barriers []*BarrierState `json:"barriers"`
	}
	if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/barriers", query: q}, &out); err != nil {
		return nil, err
	}
	return out.Barriers, nil
}

// ResetBarrier breaks barrier name's current generation, as an operator
// unsticks a barrier waiting for a party that will not come: the parties
// waiting at it get an error matching ErrBarrierBroken, and the next
// generation begins. It returns the generation broken. An administrator's.
func (c *Client) ResetBarrier(ctx context.Context, name string) (int64, error) {
	if name == "" {
		return 0, errEmpty("barrier name")
	}
	var out struct {
		Broken int64 `json:"broken_generation"`
	}
	err := c.do(ctx, request{method: http.MethodDelete, path: pathOf("v1/barriers", name)}, &out)
	return out.Broken, err
}
