package http

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"sync"

	"github.com/memsync/memsync/internal/jsontext"
	"github.com/memsync/memsync/internal/store"
)

// appendJSON encodes an entry exactly as encoding/json would (same fields,
// order and omissions, no HTML escaping), without reflection: every GET and
// PUT answers with one, so this is the hottest encoding of the service.
// Values come from the store as valid, compact JSON and are copied as they
// are.
func (e entryResponse) appendJSON(b []byte) []byte {
	b = append(b, `{"key":`...)
	b = jsontext.AppendString(b, e.Key)
	b = append(b, `,"namespace":`...)
	b = jsontext.AppendString(b, e.Namespace)
	if len(e.Value) > 0 {
		b = append(b, `,"value":`...)
		b = append(b, e.Value...)
	}
	b = append(b, `,"version":`...)
	b, _ = e.Version.AppendJSON(b)
	b = append(b, `,"etag":`...)
	b = jsontext.AppendString(b, e.ETag)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, e.Timestamp, 10)
	b = append(b, `,"writer":`...)
	b = jsontext.AppendString(b, e.Writer)
	if e.ExpiresAt != 0 {
		b = append(b, `,"expires_at":`...)
		b = strconv.AppendInt(b, e.ExpiresAt, 10)
	}
	b = append(b, `,"strategy":`...)
	b = jsontext.AppendString(b, string(e.Strategy))
	b = append(b, `,"conflict":`...)
	b = strconv.AppendBool(b, e.Conflict)
	b = append(b, `,"siblings":`...)
	b = strconv.AppendInt(b, int64(e.Siblings), 10)
	if len(e.SiblingList) > 0 {
		b = append(b, `,"sibling_list":[`...)
		for i, s := range e.SiblingList {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"value":`...)
			if len(s.Value) > 0 {
				b = append(b, s.Value...)
			} else {
				b = append(b, "null"...)
			}
			b = append(b, `,"version":`...)
			b, _ = s.Version.AppendJSON(b)
			b = append(b, `,"timestamp":`...)
			b = strconv.AppendInt(b, s.Timestamp, 10)
			b = append(b, `,"writer":`...)
			b = jsontext.AppendString(b, s.Writer)
			b = append(b, `,"discarded":`...)
			b = strconv.AppendBool(b, s.Discarded)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// MarshalJSON lets entries nested in other responses use the same encoding.
func (e entryResponse) MarshalJSON() ([]byte, error) {
	return e.appendJSON(make([]byte, 0, 256+len(e.Value))), nil
}

// bodies recycles response buffers: every GET and PUT needs one.
var bodies = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// maxPooledBody keeps buffers of huge values out of the pool.
const maxPooledBody = 64 << 10

// writeEntryJSON answers 200 with the entry and its ETag.
func writeEntryJSON(w http.ResponseWriter, e entryResponse) {
	bp := bodies.Get().(*[]byte)
	b := e.appendJSON((*bp)[:0])
	b = append(b, '\n') // as json.Encoder ends a document
	h := w.Header()
	h["Etag"] = []string{e.ETag}
	h["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
	if cap(b) <= maxPooledBody {
		*bp = b
		bodies.Put(bp)
	}
}

// jsonContentType is shared by every response: header values are never
// modified after they are set.
var jsonContentType = []string{"application/json"}

// A renderedEntry is the whole 200 answer to a read of an entry without
// ?siblings: the body and the ETag header value. The read cache keeps one
// with each entry it holds (renderingStore), so that a hit is served
// without encoding anything. It is shared by every response that serves
// it and never modified.
type renderedEntry struct {
	body []byte
	etag []string // the header's value slice: len == cap, so an append copies
}

// maxRenderedValue bounds the values whose rendering is kept: beyond it a
// cached entry would hold its value twice, and the copy costs more than
// the encoding saves.
const maxRenderedValue = 16 << 10

// renderEntry renders e for the cache (renderingStore): a *renderedEntry,
// or nil for an entry too large to keep rendered.
func renderEntry(e store.Entry) any {
	n := len(e.Value)
	if !e.Resolved {
		for _, sib := range e.Siblings {
			n += len(sib.Value)
		}
	}
	if n > maxRenderedValue {
		return nil
	}
	resp := newEntryResponse(e, false)
	bp := bodies.Get().(*[]byte)
	b := append(resp.appendJSON((*bp)[:0]), '\n')
	re := &renderedEntry{body: bytes.Clone(b), etag: []string{resp.ETag}}
	*bp = b
	bodies.Put(bp)
	return re
}

// writeRendered answers 200 with a rendered entry.
func writeRendered(w http.ResponseWriter, re *renderedEntry) {
	h := w.Header()
	h["Etag"] = re.etag
	h["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(re.body)
}

// renderingStore is a Store that keeps renderings with the entries it
// caches (internal/cache's GetRendered).
type renderingStore interface {
	GetRendered(ctx context.Context, ns, key string, opt store.GetOptions, render func(store.Entry) any) (store.Entry, any, error)
}

// getRendered reads key and its rendering, from st's cache when it has
// one.
func getRendered(ctx context.Context, st Store, ns, key string, opt store.GetOptions) (*renderedEntry, store.Entry, error) {
	var (
		e   store.Entry
		v   any
		err error
	)
	if rs, ok := st.(renderingStore); ok {
		e, v, err = rs.GetRendered(ctx, ns, key, opt, renderEntry)
	} else if e, err = st.Get(ctx, ns, key, opt); err == nil {
		v = renderEntry(e)
	}
	re, _ := v.(*renderedEntry)
	return re, e, err
}

// GetRendered makes queuedStore a renderingStore when the store it wraps
// is one; it settles the key's queued writes first, as Get does.
func (s queuedStore) GetRendered(ctx context.Context, ns, key string, opt store.GetOptions, render func(store.Entry) any) (store.Entry, any, error) {
	if err := s.settle(ctx, ns, key); err != nil {
		return store.Entry{}, nil, err
	}
	if rs, ok := s.Store.(renderingStore); ok {
		return rs.GetRendered(ctx, ns, key, opt, render)
	}
	e, err := s.Store.Get(ctx, ns, key, opt)
	if err != nil {
		return e, nil, err
	}
	return e, render(e), nil
}
