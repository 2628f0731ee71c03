package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// The kinds of a BatchOp.
const (
	OpPut    = "put"
	OpGet    = "get"
	OpDelete = "delete"
)

// MaxBatchOps is the most ops the server takes in one Batch; it refuses a
// longer batch with ErrInvalid.
const MaxBatchOps = 1000

// BatchOp is one operation of a Batch, validated and answered like the
// single request it stands for: PUT, GET or DELETE /v1/kv/{Key}.
type BatchOp struct {
	// Op is OpPut, OpGet or OpDelete.
	Op string
	// Key is the key the op reads or writes.
	Key string
	// Value is a put's value, encoded with encoding/json (a json.RawMessage
	// is sent as it is; nil is JSON null). Gets and deletes take none.
	Value any
	// Context is a put's causal context, as WithContext: an Entry.Version
	// you read. Defaults to none.
	Context map[string]uint64
	// TTL is how long a put's key lives, rounded up to whole seconds: nil
	// takes the server's default TTL (3600 s), a pointer to 0 means never
	// (new(10*time.Minute) makes one). A negative TTL fails the op.
	TTL *time.Duration
	// IfMatch makes the op conditional on the key's ETag (an Entry.ETag, or
	// "*" for any existing state), as IfMatch does for Put and Delete; a get
	// whose IfMatch does not hold fails with 412. Defaults to none.
	IfMatch string
}

// BatchResult is the outcome of one op of a Batch.
type BatchResult struct {
	// Status is the status the op's own request would have had: 200 for a
	// put or get, 204 for a delete, 4xx or 5xx when it failed. A 503 means
	// Redis failed in the middle of the batch: the op may or may not have
	// been applied.
	Status int
	// Entry is what a put wrote or a get read; nil for a delete and for a
	// failed op.
	Entry *Entry
	// Err is the op's problem when it failed, nil otherwise. It matches the
	// sentinels (errors.Is(r.Err, ErrNotFound)) and its Op is the op's
	// index. Test it against nil before storing it in an error variable: a
	// nil *APIError in an error is not a nil error.
	Err *APIError
	// Replayed is true for a put of BatchIdempotent applied by an earlier
	// call under the same key: not applied again.
	Replayed bool
}

// batchOpJSON is a BatchOp on the wire.
type batchOpJSON struct {
	Op      string            `json:"op"`
	Key     string            `json:"key"`
	Value   json.RawMessage   `json:"value,omitempty"`
	Context map[string]uint64 `json:"context,omitempty"`
	TTL     *int64            `json:"ttl,omitempty"`
	IfMatch string            `json:"if_match,omitempty"`
}

// Batch runs ops, in order, in one request and one Redis round trip
// (POST /v1/batch). A get sees the writes of the ops before it.
//
// Not atomic, every op stands alone, as if sent by itself: a bad op fails
// in its BatchResult (Err) and the others still run. The error is non-nil
// only when the batch as a whole was refused (more than MaxBatchOps ops:
// ErrInvalid) or never answered.
//
// Atomic, it is all or nothing: every IfMatch is checked, in op order,
// against the state the ops before it leave, then every op applies or none
// does. When none did, Batch returns no results and an *APIError whose Op
// is the index of the op that stopped the batch: ErrPreconditionFailed
// (412) for an IfMatch that did not hold, ErrInvalid (400) for an invalid
// op; ErrUnavailable when its keys kept changing under it. On Redis
// Cluster every key of an atomic batch must be in one subtree (the same
// first two segments, tasks/T1/…).
//
// A batch of no ops returns no results without asking the server.
func (c *Client) Batch(ctx context.Context, ops []BatchOp, atomic bool) ([]BatchResult, error) {
	return c.batch(ctx, ops, atomic, "")
}

// BatchIdempotent runs ops as Batch does, not atomic, under idempotencyKey
// (1-123 characters of [A-Za-z0-9._:@-]), so that the batch is safe to send
// again when it is not known what it applied (an error, a 503 in a result):
// each put and delete is named by the key and its index, and one applied
// by an earlier call under the same key is not applied again; its result
// has Replayed set, a put's with the key's current entry. Gets run again.
func (c *Client) BatchIdempotent(ctx context.Context, idempotencyKey string, ops []BatchOp) ([]BatchResult, error) {
	if idempotencyKey == "" {
		return nil, errEmpty("idempotency key")
	}
	return c.batch(ctx, ops, false, idempotencyKey)
}

// BatchAtomicIdempotent runs ops as Batch does, atomic, under
// idempotencyKey (1-123 characters of [A-Za-z0-9._:@-]), so that the batch
// is safe to send again when it is not known whether it applied: sent
// again after it applied, it is not applied again, nor are its IfMatch
// checked again (its own first run may have made them false), and every
// put and delete result has Replayed set, a put's with the key's current
// entry; gets read the keys now. This holds while any key a put of the
// batch wrote remembers the key (it forgets when deleted, when it expires,
// or after 8 newer keyed writes), or any key a delete of it deleted (for a
// day, and for its 8 latest keyed deletes). The key stands for the whole
// batch: on a batch with any op changed it is ErrInvalid, and so it is on
// a batch of gets only, which has nowhere to remember it.
func (c *Client) BatchAtomicIdempotent(ctx context.Context, idempotencyKey string, ops []BatchOp) ([]BatchResult, error) {
	if idempotencyKey == "" {
		return nil, errEmpty("idempotency key")
	}
	return c.batch(ctx, ops, true, idempotencyKey)
}

func (c *Client) batch(ctx context.Context, ops []BatchOp, atomic bool, idempotencyKey string) ([]BatchResult, error) {
	if len(ops) == 0 {
		return []BatchResult{}, nil
	}
	body := struct {
		Ops    []batchOpJSON `json:"ops"`
		Atomic bool          `json:"atomic,omitempty"`
	}{Ops: make([]batchOpJSON, len(ops)), Atomic: atomic}
	for i, op := range ops {
		w := batchOpJSON{Op: op.Op, Key: op.Key, Context: op.Context, IfMatch: op.IfMatch}
		// A put always carries its value (nil is null); anything else only
		// when the caller gave one, for the server to refuse.
		if op.Op == OpPut || op.Value != nil {
			raw, err := json.Marshal(op.Value)
			if err != nil {
				return nil, fmt.Errorf("memsync: POST /v1/batch: op %d: encode value: %w", i, err)
			}
			w.Value = raw
		}
		if op.TTL != nil {
			secs := int64(-1) // the server refuses a negative TTL (this op alone, unless atomic)
			if *op.TTL >= 0 {
				secs = seconds(*op.TTL)
			}
			w.TTL = &secs
		}
		body.Ops[i] = w
	}
	var out struct {
		Results []struct {
			Status   int          `json:"status"`
			Entry    *Entry       `json:"entry"`
			Error    *problemJSON `json:"error"`
			Replayed bool         `json:"replayed"`
		} `json:"results"`
	}
	if !atomic || slices.ContainsFunc(ops, func(op BatchOp) bool { return op.Op == OpPut || op.Op == OpDelete }) {
		// An atomic batch of gets only has nowhere to keep a key.
		idempotencyKey = c.idempotencyKey(idempotencyKey)
	}
	var h http.Header
	if idempotencyKey != "" {
		h = http.Header{"Idempotency-Key": {idempotencyKey}}
	}
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/batch", header: h, body: body}, &out); err != nil {
		return nil, err
	}
	if len(out.Results) != len(ops) {
		return nil, fmt.Errorf("memsync: POST /v1/batch: %d results for %d ops", len(out.Results), len(ops))
	}
	results := make([]BatchResult, len(ops))
	for i, r := range out.Results {
		results[i] = BatchResult{Status: r.Status, Entry: r.Entry, Replayed: r.Replayed}
		if r.Entry != nil {
			r.Entry.Replayed = r.Replayed
		}
		if r.Error != nil || r.Status >= 300 {
			e := &APIError{Status: r.Status, Title: http.StatusText(r.Status), Op: i,
				Method: http.MethodPost, Path: "/v1/batch"}
			if r.Error != nil {
				r.Error.fill(e)
				e.Op = i
			}
			results[i].Err, results[i].Entry = e, nil
		}
	}
	return results, nil
}

// PutAsync queues a write of value to key (as Put would write it) and
// returns as soon as the server has validated and accepted it (202), before
// it is in Redis: the design document's write(), batched by the server. The
// server flushes its queue to Redis within its batch interval (100 ms by
// default), as soon as its batch size (100) of writes wait, at Sync, and on
// shutdown. Reads through the same server see the write at once; other
// servers behind a load balancer see it once it is flushed.
//
// PutAsync takes WithContext, TTL and IdempotencyKey (a write sent again
// under its key after an error is applied once). A queued write cannot be
// conditional: with IfMatch or IfNoneMatch it fails with ErrInvalid before
// anything is sent. It returns ErrInvalid for a bad key, value or TTL, and
// ErrUnavailable when the server's queue is full (Redis unreachable for
// long). The typed keys are keys like any other: PutAsync(ctx,
// "tasks/T1/state", v) queues what SyncTaskState(ctx, "T1", v) writes.
//
// PutAsync is a call of its own rather than an option of Put because an
// accepted write has no entry yet (no version, no ETag): Put always returns
// one, PutAsync never does.
func (c *Client) PutAsync(ctx context.Context, key string, value any, opts ...PutOption) error {
	if key == "" {
		return errEmpty("key")
	}
	path := pathOf("v1/kv", key)
	o, err := putOptionsOf(opts)
	if err != nil {
		return err
	}
	if o.ifMatch != "" || o.ifNoneMatch || o.ephemeral {
		return fmt.Errorf("memsync: PUT %s: a queued write cannot be conditional (IfMatch, IfNoneMatch) nor ephemeral: %w", path, ErrInvalid)
	}
	body, err := putBody(path, value, o)
	if err != nil {
		return err
	}
	q := url.Values{"async": {"true"}}
	var h http.Header
	if key := c.idempotencyKey(o.idempotencyKey); key != "" {
		h = http.Header{"Idempotency-Key": {key}}
	}
	return c.do(ctx, request{method: http.MethodPut, path: path, query: q, header: h, body: body}, nil)
}

// Sync flushes the writes the server has queued (PutAsync) to Redis, the
// design document's forceSync(): when it returns nil, every write the
// server accepted before the call is in Redis. flushed counts the writes
// this call wrote; a flush already running wrote the others. Queues are
// per server: Sync the server you wrote through (with a load balancer in
// front of several, a write may wait on another one until its own flush,
// 100 ms by default). A failed flush keeps the writes queued and returns
// ErrUnavailable.
func (c *Client) Sync(ctx context.Context) (flushed int, err error) {
	var out struct {
		Flushed int `json:"flushed"`
	}
	if err := c.do(ctx, request{method: http.MethodPost, path: "/v1/sync"}, &out); err != nil {
		return 0, err
	}
	return out.Flushed, nil
}
