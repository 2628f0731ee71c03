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
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if scanPutBody(body, maxDepth, req) {
		return nil
	}
	*req = putBody{}
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
	// body is one valid JSON value from here on: the scan below only has
	// to find where things end, not to check them.
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		return false
	}
	i = skipSpace(body, i+1)
	if body[i] == '}' {
		return true // {}: no value, which the handler reports
	}
	const seenValue, seenTTL, seenContext = 1, 2, 4
	seen := 0
	for {
		// A name without escapes: encoding/json matches names case-
		// insensitively and keeps the last of duplicates, which is left
		// to it.
		if body[i] != '"' {
			return false
		}
		start := i + 1
		end := start
		for body[end] != '"' {
			if body[end] == '\\' {
				return false
			}
			end++
		}
		name := body[start:end]
		i = skipSpace(body, end+1) // at the ':'
		i = skipSpace(body, i+1)
		vEnd := valueEnd(body, i)
		v := body[i:vEnd:vEnd]
		var bit int
		switch string(name) {
		case "value":
			bit = seenValue
			req.Value = v
		case "ttl":
			bit = seenTTL
			if string(v) != "null" {
				n, ok := parseInt64(v)
				if !ok {
					return false
				}
				req.ttl, req.TTL = n, &req.ttl
			}
		case "context":
			bit = seenContext
			if string(v) != "null" {
				if err := req.ctx.UnmarshalJSON(v); err != nil {
					return false
				}
				req.Context = &req.ctx
			}
		default:
			return false // unknown: an error, worded by encoding/json
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		i = skipSpace(body, vEnd)
		if body[i] == '}' {
			return true // json.Valid: nothing but space follows
		}
		i = skipSpace(body, i+1) // past the ','
	}
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
