package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Patch changes part of key's value with a JSON merge patch (RFC 7386):
// patch's members replace the value's, objects merge member by member, and
// a nil member removes one (map[string]any{"status": "done", "error": nil}).
// The server applies it to the value the key resolves to and writes the
// result as a compare-and-set with the version it read, so the write
// supersedes the siblings it saw; when the key changes in between it
// applies the patch again, and after 10 tries returns
// ErrPreconditionFailed. A missing key is patched as {} and created.
//
// IfMatch (an etag, or "*" for a key that exists), TTL, Ephemeral and
// IdempotencyKey apply; without TTL the key keeps its expiry. A patch sent
// again under its idempotency key is answered with the key's current entry
// (Entry.Replayed) rather than applied twice, even when its first write
// made its IfMatch or a "test" operation false; WithRetries gives it a key
// of its own, as it does a Put. WithContext and IfNoneMatch do not apply to
// a patch: ErrInvalid.
func (c *Client) Patch(ctx context.Context, key string, patch any, opts ...PutOption) (*Entry, error) {
	return c.patch(ctx, key, patch, "", opts)
}

// PatchOp is one operation of a JSON Patch (RFC 6902): Op is "add",
// "remove", "replace", "move", "copy" or "test"; Path (and From, for move
// and copy) a JSON Pointer into the value ("/pending/-" is past the end of
// array pending); Value the value of add, replace and test.
type PatchOp struct {
	Op    string
	Path  string
	From  string
	Value any
}

// MarshalJSON writes the operation with the members its op takes: Value
// (null too) for add, replace and test, From for move and copy.
func (o PatchOp) MarshalJSON() ([]byte, error) {
	m := map[string]any{"op": o.Op, "path": o.Path}
	switch o.Op {
	case "add", "replace", "test":
		m["value"] = o.Value
	case "move", "copy":
		m["from"] = o.From
	}
	return json.Marshal(m)
}

// PatchOps changes key's value with a JSON Patch (RFC 6902), as Patch does
// with a merge patch: the operations apply in order, all or none. A "test"
// operation that does not hold is ErrPreconditionFailed, and not tried
// again; an operation that does not apply to the value (a remove of a
// member that is not there) is ErrInvalid.
func (c *Client) PatchOps(ctx context.Context, key string, ops []PatchOp, opts ...PutOption) (*Entry, error) {
	return c.patch(ctx, key, ops, "application/json-patch+json", opts)
}

func (c *Client) patch(ctx context.Context, key string, body any, contentType string, opts []PutOption) (*Entry, error) {
	if key == "" {
		return nil, errEmpty("key")
	}
	o, err := putOptionsOf(opts)
	switch {
	case err != nil:
		return nil, err
	case o.context != nil || o.ifNoneMatch:
		return nil, fmt.Errorf("%w: WithContext and IfNoneMatch do not apply to a patch", ErrInvalid)
	}
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	if o.ifMatch != "" {
		h.Set("If-Match", o.ifMatch)
	}
	if key := c.idempotencyKey(o.idempotencyKey); key != "" {
		h.Set("Idempotency-Key", key)
	}
	q := url.Values{}
	if o.ttl != nil {
		q.Set("ttl", strconv.FormatInt(*o.ttl, 10))
	}
	if o.ephemeral {
		q.Set("ephemeral", "true")
	}
	path := pathOf("v1/kv", key)
	resp, err := c.send(ctx, request{method: http.MethodPatch, path: path, query: q, header: h, body: body})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var e Entry
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return nil, fmt.Errorf("memsync: PATCH %s: decode %d response: %w", path, resp.StatusCode, err)
	}
	e.Replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	return &e, nil
}
