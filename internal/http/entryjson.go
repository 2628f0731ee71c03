package http

import (
	"net/http"
	"strconv"
	"sync"

	"github.com/memsync/memsync/internal/jsontext"
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
