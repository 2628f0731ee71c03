package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// Strategies a read may ask for with Resolve.
const (
	StrategyLWW      = "lww"      // the latest timestamp wins
	StrategyUnion    = "union"    // arrays: their union
	StrategyMerge    = "merge"    // objects: deep merge, later timestamps win
	StrategyMax      = "max"      // the largest number (or field)
	StrategySiblings = "siblings" // no resolution: the client resolves
)

// Entry is a key's state as the server returns it: the value its siblings
// resolve to, and what is needed to write on top of it.
type Entry struct {
	Key       string
	Namespace string
	// Value is the resolved value as JSON; nil when the read asked for
	// Resolve("siblings") and there is more than one sibling (see
	// SiblingList).
	Value json.RawMessage
	// Version is the merge of every sibling's vector clock: pass it to
	// WithContext to supersede what this read saw.
	Version map[string]uint64
	// ETag identifies this state, for IfMatch.
	ETag string
	// Timestamp and Writer are those of the winning (or latest) write.
	Timestamp time.Time
	Writer    string
	// ExpiresAt is when the key expires; zero when it never does.
	ExpiresAt time.Time
	// Strategy resolved the siblings.
	Strategy string
	// Conflict is true when more than one sibling was resolved.
	Conflict bool
	// Siblings counts the siblings the key holds.
	Siblings int
	// SiblingList holds every sibling, with WithSiblings or
	// Resolve("siblings").
	SiblingList []Sibling
	// Replayed is true when Put was answered for a write applied earlier
	// under the same IdempotencyKey: nothing was written this time, and
	// the entry is the key's current state.
	Replayed bool
}

// Sibling is one stored write of a key, concurrent with the others.
type Sibling struct {
	Value     json.RawMessage
	Version   map[string]uint64
	Timestamp time.Time
	Writer    string
	// Discarded is true, in a resolved read, when the strategy did not keep
	// this sibling's value.
	Discarded bool
}

// entryJSON and siblingJSON are the wire forms (times in Unix ms).
type entryJSON struct {
	Key         string            `json:"key"`
	Namespace   string            `json:"namespace"`
	Value       json.RawMessage   `json:"value,omitempty"`
	Version     map[string]uint64 `json:"version"`
	ETag        string            `json:"etag"`
	Timestamp   int64             `json:"timestamp"`
	Writer      string            `json:"writer"`
	ExpiresAt   int64             `json:"expires_at,omitempty"`
	Strategy    string            `json:"strategy"`
	Conflict    bool              `json:"conflict"`
	Siblings    int               `json:"siblings"`
	SiblingList []siblingJSON     `json:"sibling_list,omitempty"`
}

type siblingJSON struct {
	Value     json.RawMessage   `json:"value"`
	Version   map[string]uint64 `json:"version"`
	Timestamp int64             `json:"timestamp"`
	Writer    string            `json:"writer"`
	Discarded bool              `json:"discarded"`
}

// UnmarshalJSON reads the server's entry.
func (e *Entry) UnmarshalJSON(b []byte) error {
	var w entryJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*e = Entry{Key: w.Key, Namespace: w.Namespace, Value: w.Value, Version: w.Version, ETag: w.ETag,
		Timestamp: fromMillis(w.Timestamp), Writer: w.Writer, ExpiresAt: fromMillis(w.ExpiresAt),
		Strategy: w.Strategy, Conflict: w.Conflict, Siblings: w.Siblings}
	for _, s := range w.SiblingList {
		e.SiblingList = append(e.SiblingList, Sibling{Value: s.Value, Version: s.Version,
			Timestamp: fromMillis(s.Timestamp), Writer: s.Writer, Discarded: s.Discarded})
	}
	return nil
}

// MarshalJSON writes the entry as the server does.
func (e Entry) MarshalJSON() ([]byte, error) {
	w := entryJSON{Key: e.Key, Namespace: e.Namespace, Value: e.Value, Version: e.Version, ETag: e.ETag,
		Timestamp: toMillis(e.Timestamp), Writer: e.Writer, ExpiresAt: toMillis(e.ExpiresAt),
		Strategy: e.Strategy, Conflict: e.Conflict, Siblings: e.Siblings}
	for _, s := range e.SiblingList {
		w.SiblingList = append(w.SiblingList, siblingJSON{Value: s.Value, Version: s.Version,
			Timestamp: toMillis(s.Timestamp), Writer: s.Writer, Discarded: s.Discarded})
	}
	return json.Marshal(w)
}

// Decode unmarshals the resolved value into v. It returns an error wrapping
// ErrUnresolved when the entry's siblings were left to the client.
func (e *Entry) Decode(v any) error {
	if e.Value == nil {
		return fmt.Errorf("memsync: %q has %d siblings: %w", e.Key, e.Siblings, ErrUnresolved)
	}
	if err := json.Unmarshal(e.Value, v); err != nil {
		return fmt.Errorf("memsync: decode %q: %w", e.Key, err)
	}
	return nil
}

// Decode unmarshals the sibling's value into v.
func (s Sibling) Decode(v any) error {
	if err := json.Unmarshal(s.Value, v); err != nil {
		return fmt.Errorf("memsync: decode sibling of %q: %w", s.Writer, err)
	}
	return nil
}

// GetOption changes how a read resolves.
type GetOption func(url.Values)

// Resolve overrides the key's strategy for this read: StrategyLWW,
// StrategyUnion, StrategyMerge, StrategyMax, or StrategySiblings (no
// resolution: Entry.Value is nil when there are several siblings, and
// Entry.SiblingList holds them all).
func Resolve(strategy string) GetOption { return func(q url.Values) { q.Set("resolve", strategy) } }

// WithSiblings adds Entry.SiblingList, marking the siblings the strategy
// discarded.
func WithSiblings() GetOption { return func(q url.Values) { q.Set("siblings", "true") } }

// Consistent bypasses the server's read cache.
func Consistent() GetOption { return func(q url.Values) { q.Set("consistent", "true") } }

// WaitForChange makes the read a blocking one: the server holds it up to d
// (at most a minute; whole milliseconds) while nothing changed. With
// GetIfChanged it waits for the key to leave the state etag names (then it
// returns the new entry, or ErrNotFound once the key was deleted or
// expired; after d, changed false); with Get, for a key that does not
// exist to be created (after d, ErrNotFound). Such a read reads Redis, not
// the server's cache, and hears of changes made through any server. A
// worker that waits for a task's result need not hold a Watch.
func WaitForChange(d time.Duration) GetOption {
	return func(q url.Values) { q.Set("wait_ms", strconv.FormatInt(d.Milliseconds(), 10)) }
}

// PutOption changes how a write applies.
type PutOption interface{ applyPut(*putOptions) }

// DeleteOption changes how a delete applies.
type DeleteOption interface{ applyDelete(*deleteOptions) }

type putOptions struct {
	context        map[string]uint64
	ttl            *int64
	ifMatch        string
	ifNoneMatch    bool
	idempotencyKey string
	ephemeral      bool
	err            error
}

type deleteOptions struct{ ifMatch, idempotencyKey string }

type putOptionFunc func(*putOptions)

func (f putOptionFunc) applyPut(o *putOptions) { f(o) }

// WithContext sends clock (an Entry.Version you read) as the write's causal
// context: the write supersedes every sibling that clock has seen. Without
// it a write supersedes only this worker's own earlier writes.
func WithContext(clock map[string]uint64) PutOption {
	clock = maps.Clone(clock)
	return putOptionFunc(func(o *putOptions) { o.context = clock })
}

// TTL sets how long the key lives, rounded up to whole seconds; 0 means it
// never expires. Defaults to the server's default TTL (3600 s). A negative
// d fails the write with ErrInvalid before anything is sent.
func TTL(d time.Duration) PutOption {
	return putOptionFunc(func(o *putOptions) {
		if d < 0 {
			o.err = fmt.Errorf("memsync: negative ttl %v: %w", d, ErrInvalid)
			return
		}
		secs := seconds(d)
		o.ttl = &secs
	})
}

// Ephemeral binds the written key to this client's worker's heartbeat
// (WithWorkerID, StartHeartbeat), as etcd binds a key to a lease: once the
// heartbeat is gone, expired or deleted, the server deletes the key, unless
// a later write changed it. A worker's claims and announcements go with it.
// The write fails with ErrNoHeartbeat, writing nothing, when the worker has
// no live heartbeat. For Put and Patch; PutAsync refuses it.
func Ephemeral() PutOption { return putOptionFunc(func(o *putOptions) { o.ephemeral = true }) }

// IfNoneMatch makes the write create-only: it fails with
// ErrPreconditionFailed when the key exists.
func IfNoneMatch() PutOption { return putOptionFunc(func(o *putOptions) { o.ifNoneMatch = true }) }

// IdempotencyKey names the write (a UUID, say) so that it is safe to send
// again when it is not known whether it was applied, after a timeout or
// ErrUnavailable: the server remembers the idempotency keys of a key's 8
// latest writes that carried one, and answers a write it remembers with the
// key's current entry (Entry.Replayed) instead of applying it again. The
// same idempotency key on another write (value, context, TTL, conditions)
// fails with ErrInvalid. With PutAsync, a write queued twice under one key
// is applied once. With Delete, the key remembers its 8 latest deletes
// that carried one, for 24 hours after the latest, and such a delete sent
// again succeeds without deleting anything, even if the key was written
// since (rather than failing with ErrNotFound), and one that found no key
// fails with ErrNotFound again, even if the key was created since (rather
// than deleting it); with another IfMatch it fails with ErrInvalid.
func IdempotencyKey(key string) Idempotency { return Idempotency{key: key} }

// Idempotency is an idempotency key, for Put and Delete.
type Idempotency struct{ key string }

func (i Idempotency) applyPut(o *putOptions)       { o.idempotencyKey = i.key }
func (i Idempotency) applyDelete(o *deleteOptions) { o.idempotencyKey = i.key }

// Precondition is a compare-and-set condition, for Put and Delete.
type Precondition struct{ etag string }

// IfMatch makes a Put or Delete apply only if the key's ETag is still etag
// (an Entry.ETag); else it fails with ErrPreconditionFailed and nothing
// changes.
func IfMatch(etag string) Precondition { return Precondition{etag: etag} }

func (p Precondition) applyPut(o *putOptions)       { o.ifMatch = p.etag }
func (p Precondition) applyDelete(o *deleteOptions) { o.ifMatch = p.etag }

// Get reads key, its siblings resolved by the key's strategy. It returns
// ErrNotFound when the key does not exist or has expired.
func (c *Client) Get(ctx context.Context, key string, opts ...GetOption) (*Entry, error) {
	if key == "" {
		return nil, errEmpty("key")
	}
	return c.getEntry(ctx, pathOf("v1/kv", key), opts)
}

// GetIfChanged reads key unless it is still in the state etag names (an
// Entry.ETag from an earlier read): then the server answers 304 without
// the entry, and GetIfChanged returns nil and changed false. A cheap poll:
// an unchanged key costs no body. Errors as Get's.
func (c *Client) GetIfChanged(ctx context.Context, key, etag string, opts ...GetOption) (e *Entry, changed bool, err error) {
	if key == "" {
		return nil, false, errEmpty("key")
	}
	if etag == "" {
		return nil, false, errEmpty("etag")
	}
	q := url.Values{}
	for _, o := range opts {
		o(q)
	}
	e = &Entry{}
	err = c.do(ctx, request{method: http.MethodGet, path: pathOf("v1/kv", key), query: q,
		header: http.Header{"If-None-Match": {etag}}}, e)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotModified {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return e, true, nil
}

// Put writes value (encoded with encoding/json; pass a json.RawMessage for
// JSON you already have) to key and returns the new entry. It returns
// ErrPreconditionFailed when IfMatch or IfNoneMatch does not hold, and
// ErrInvalid for a bad key or TTL.
func (c *Client) Put(ctx context.Context, key string, value any, opts ...PutOption) (*Entry, error) {
	if key == "" {
		return nil, errEmpty("key")
	}
	return c.putEntry(ctx, pathOf("v1/kv", key), value, opts)
}

// Delete removes key with all its siblings. It returns ErrNotFound when the
// key is absent, and ErrPreconditionFailed when IfMatch does not hold.
// Options: IfMatch, IdempotencyKey.
func (c *Client) Delete(ctx context.Context, key string, opts ...DeleteOption) error {
	if key == "" {
		return errEmpty("key")
	}
	var o deleteOptions
	for _, opt := range opts {
		opt.applyDelete(&o)
	}
	h := http.Header{}
	if o.ifMatch != "" {
		h.Set("If-Match", o.ifMatch)
	}
	if k := c.idempotencyKey(o.idempotencyKey); k != "" {
		h.Set("Idempotency-Key", k)
	}
	return c.do(ctx, request{method: http.MethodDelete, path: pathOf("v1/kv", key), header: h}, nil)
}

// DeletePrefix deletes every live key starting with prefix (end it with
// "/" for a subtree: "tasks/T1/") and returns how many it deleted: a
// finished task's cleanup. It is not atomic: a key written under the
// prefix meanwhile may stay, and after ErrUnavailable some keys may be
// deleted already (call it again). A worker token may delete under
// tasks/, coordination/ and workers/<its id>/ only (ErrForbidden, and
// nothing deleted); an empty prefix is ErrInvalid.
func (c *Client) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if prefix == "" {
		return 0, errEmpty("prefix")
	}
	var out struct {
		Deleted int `json:"deleted"`
	}
	err := c.do(ctx, request{method: http.MethodDelete, path: "/v1/keys", query: url.Values{"prefix": {prefix}}}, &out)
	return out.Deleted, err
}

// keysPageSize is the page size Keys and Entries ask for: the server's
// maximum.
const keysPageSize = 1000

// keysPage is one page of GET /v1/keys.
type keysPage struct {
	Keys    []string `json:"keys"`
	Entries []*Entry `json:"entries"`
	Cursor  string   `json:"cursor"`
}

// Keys lists every live key starting with prefix ("tasks/T1/"; "" for all),
// sorted, following the server's cursors until the last page.
func (c *Client) Keys(ctx context.Context, prefix string) ([]string, error) {
	all := []string{}
	err := c.listPages(ctx, url.Values{"prefix": {prefix}}, func(p keysPage) { all = append(all, p.Keys...) })
	return all, err
}

// Entries reads every live key starting with prefix ("tasks/T1/"; "" for
// all) with its entry, sorted by key, a page at a time: a task's whole
// state in one call per page. Resolve and WithSiblings apply to every
// entry; the other GetOptions do not apply and are left out. The entries
// are read from Redis, not the server's cache; a key deleted while the
// listing runs is left out.
func (c *Client) Entries(ctx context.Context, prefix string, opts ...GetOption) ([]*Entry, error) {
	asked := url.Values{}
	for _, o := range opts {
		o(asked)
	}
	q := url.Values{"prefix": {prefix}, "entries": {"true"}}
	for _, name := range []string{"resolve", "siblings"} {
		if v := asked.Get(name); v != "" {
			q.Set(name, v)
		}
	}
	all := []*Entry{}
	err := c.listPages(ctx, q, func(p keysPage) { all = append(all, p.Entries...) })
	return all, err
}

// listPages sends GET /v1/keys with q, following the cursors until the
// last page, and hands each page to each.
func (c *Client) listPages(ctx context.Context, q url.Values, each func(keysPage)) error {
	q.Set("limit", strconv.Itoa(keysPageSize))
	cursor := ""
	for {
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page keysPage
		if err := c.do(ctx, request{method: http.MethodGet, path: "/v1/keys", query: q}, &page); err != nil {
			return err
		}
		each(page)
		if page.Cursor == "" || page.Cursor == cursor {
			return nil
		}
		cursor = page.Cursor
	}
}

// DefaultUpdateAttempts is how many read-write cycles Update tries before it
// gives up on a key that keeps changing under it.
const DefaultUpdateAttempts = 10

// Update is a compare-and-set read-modify-write of key. It reads the key
// (bypassing the cache, with its sibling list), calls fn with the entry (nil
// when the key does not exist), and writes fn's result with the entry's
// version as context and its ETag as IfMatch (IfNoneMatch for a new key),
// so the write supersedes exactly what fn saw and fails if anything else
// landed in between. On ErrPreconditionFailed it starts over, up to
// DefaultUpdateAttempts times, after a short random pause.
//
// fn may therefore run more than once and must not have side effects; an
// error from fn stops Update and is returned as is. opts (TTL, say) apply to
// the write; Update's own context and precondition replace any given.
// When every attempt fails, the error wraps ErrPreconditionFailed.
func (c *Client) Update(ctx context.Context, key string, fn func(current *Entry) (any, error), opts ...PutOption) (*Entry, error) {
	var lastErr error
	for attempt := 1; attempt <= DefaultUpdateAttempts; attempt++ {
		if attempt > 1 {
			// Spread the retries of contending updaters apart.
			pause := time.Duration(rand.Int64N(int64(min(attempt*5, 100)) * int64(time.Millisecond)))
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("memsync: update %q: %w", key, ctx.Err())
			case <-t.C:
			}
		}
		cur, err := c.Get(ctx, key, Consistent(), WithSiblings())
		switch {
		case errors.Is(err, ErrNotFound):
			cur = nil
		case err != nil:
			return nil, err
		}
		v, err := fn(cur)
		if err != nil {
			return nil, err
		}
		e, err := c.Put(ctx, key, v, append(slices.Clip(opts), casOn(cur))...)
		if err == nil {
			return e, nil
		}
		if !errors.Is(err, ErrPreconditionFailed) {
			return nil, err
		}
		lastErr = err
	}
	return nil, fmt.Errorf("memsync: update %q: gave up after %d attempts: %w", key, DefaultUpdateAttempts, lastErr)
}

// casOn makes a write supersede exactly cur (create only when cur is nil).
func casOn(cur *Entry) PutOption {
	return putOptionFunc(func(o *putOptions) {
		if cur == nil {
			o.context, o.ifMatch, o.ifNoneMatch = nil, "", true
			return
		}
		o.context, o.ifMatch, o.ifNoneMatch = maps.Clone(cur.Version), cur.ETag, false
	})
}

// getEntry reads the entry at path (a /v1/kv key or a typed endpoint).
func (c *Client) getEntry(ctx context.Context, path string, opts []GetOption) (*Entry, error) {
	q := url.Values{}
	for _, o := range opts {
		o(q)
	}
	var e Entry
	if err := c.do(ctx, request{method: http.MethodGet, path: path, query: q}, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// putEntry writes value at path (a /v1/kv key or a typed endpoint).
func (c *Client) putEntry(ctx context.Context, path string, value any, opts []PutOption) (*Entry, error) {
	o, err := putOptionsOf(opts)
	if err != nil {
		return nil, err
	}
	body, err := putBody(path, value, o)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	if o.ifMatch != "" {
		h.Set("If-Match", o.ifMatch)
	}
	if o.ifNoneMatch {
		h.Set("If-None-Match", "*")
	}
	if key := c.idempotencyKey(o.idempotencyKey); key != "" {
		h.Set("Idempotency-Key", key)
	}
	var q url.Values
	if o.ephemeral {
		q = url.Values{"ephemeral": {"true"}}
	}
	resp, err := c.send(ctx, request{method: http.MethodPut, path: path, query: q, header: h, body: body})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var e Entry
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return nil, fmt.Errorf("memsync: PUT %s: decode %d response: %w", path, resp.StatusCode, err)
	}
	e.Replayed = resp.Header.Get("Idempotent-Replayed") == "true"
	return &e, nil
}

// putOptionsOf applies opts, and returns the error of the first that
// refused its argument.
func putOptionsOf(opts []PutOption) (putOptions, error) {
	var o putOptions
	for _, opt := range opts {
		opt.applyPut(&o)
	}
	return o, o.err
}

// putBody is the body of a PUT of value at path.
func putBody(path string, value any, o putOptions) (any, error) {
	raw, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("memsync: PUT %s: encode value: %w", path, err)
	}
	return struct {
		Value   json.RawMessage   `json:"value"`
		Context map[string]uint64 `json:"context,omitempty"`
		TTL     *int64            `json:"ttl,omitempty"`
	}{Value: raw, Context: o.context, TTL: o.ttl}, nil
}

// seconds rounds a non-negative d up to whole seconds, as the API counts
// TTLs.
func seconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// fromMillis converts Unix ms to a time; 0 is the zero time.
func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// toMillis converts a time to Unix ms; the zero time is 0.
func toMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
