package http

import (
	"encoding/json"
	"net/http"

	"github.com/memsync/memsync/internal/clock"
)

// putBody is the body of a write to one key: CONTRACT §3.
type putBody struct {
	Value   json.RawMessage `json:"value"`
	Context *clock.Vector   `json:"context"`
	TTL     *int64          `json:"ttl"`

	// What Context and TTL point to when scanPutBody fills them, so that
	// a write allocates no more than its body and its context.
	ctx clock.Vector
	ttl int64
}

// decodePut reads a write's body into req exactly as decode would: the
// same fields, and for any body it does not accept, the same error. Every
// write comes this way, so the usual body ({"value":…} with an optional
// "ttl" and "context") is scanned by hand, and anything else (an error, a
// field spelled in another case, a duplicate, escapes in a name) goes
// through decode's encoding/json path, which has the last word.
func decodePut(r *http.Request, maxDepth int, req *putBody) error {
	return decodeScanned(r, maxDepth, req, scanPutBody)
}

// decodeScanned reads a body into req with scan, a hand scanner that
// reports false whenever it is not sure, and else with decode's
// encoding/json path, from a zero req.
func decodeScanned[T any](r *http.Request, maxDepth int, req *T, scan func([]byte, int, *T) bool) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if scan(body, maxDepth, req) {
		return nil
	}
	var zero T
	*req = zero
	return decodeBody(body, maxDepth, req)
}

// scanPutBody fills req from body and reports true when body is a JSON
// object that encoding/json would decode into a putBody without error, and
// decodes as it would: Value is the value's text as sent (it shares body's
// memory), a null ttl or context leaves its pointer nil. It reports false
// whenever it is not sure, leaving req partly filled.
func scanPutBody(body []byte, maxDepth int, req *putBody) bool {
	if depth(body) > maxDepth || !json.Valid(body) {
		return false
	}
	// body is one valid JSON value from here on: the scan only has to find
	// where things end, not to check them.
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return false
	}
	const seenValue, seenTTL, seenContext = 1, 2, 4
	var seen fieldSet
	return scanMembers(body, i, func(name string, v []byte) bool {
		switch name {
		case "value":
			req.Value = v
			return seen.first(seenValue)
		case "ttl":
			if string(v) != "null" {
				n, ok := parseInt64(v)
				if !ok {
					return false
				}
				req.ttl, req.TTL = n, &req.ttl
			}
			return seen.first(seenTTL)
		case "context":
			if string(v) != "null" {
				if err := req.ctx.UnmarshalJSON(v); err != nil {
					return false
				}
				req.Context = &req.ctx
			}
			return seen.first(seenContext)
		}
		return false // unknown: an error, worded by encoding/json
	})
}

// fieldSet records which fields of an object a scan has met.
type fieldSet int

// first records bit and reports whether it is the first time: a name
// given twice, which decode refuses (exactNames), a scan leaves to it.
func (s *fieldSet) first(bit int) bool {
	if *s&fieldSet(bit) != 0 {
		return false
	}
	*s |= fieldSet(bit)
	return true
}

// skipSpace returns the index of the first byte of b at or after i that is
// not JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// valueEnd returns the index just past the JSON value starting at b[i],
// which must be valid.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		d := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = stringEnd(b, i) - 1
			case '{', '[':
				d++
			case '}', ']':
				if d--; d == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	for i < len(b) { // a number, true, false or null
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string starting at b[i].
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// parseInt64 parses a valid JSON number that encoding/json would store in
// an int64: digits with an optional minus, no fraction, no exponent, in
// range. Anything else is for encoding/json to refuse.
func parseInt64(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 { // 18 digits cannot overflow
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}
