package http

import (
	"encoding/json"
	"net/http"

	"github.com/memsync/memsync/internal/clock"
)

// batchOpBody is one operation of a batch: CONTRACT §7.
type batchOpBody struct {
	Op      string          `json:"op"`
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
	Context *clock.Vector   `json:"context"`
	TTL     *int64          `json:"ttl"`
	IfMatch string          `json:"if_match"`
}

// batchRequest is the body of POST /v1/batch.
type batchRequest struct {
	Ops    []batchOpBody `json:"ops"`
	Atomic bool          `json:"atomic"`
}

// decodeBatch reads a batch's body into req exactly as decode would, as
// decodePut does for a write: the usual body is scanned by hand (decoding
// a batch of puts through encoding/json cost about a sixth of the server's
// time per key written), and anything else goes through encoding/json,
// which has the last word.
func decodeBatch(r *http.Request, maxDepth int, req *batchRequest) error {
	return decodeScanned(r, maxDepth, req, scanBatchBody)
}

// scanBatchBody fills req from body and reports true when body is a JSON
// object that encoding/json would decode into a batchRequest without
// error, and decodes as it would: values are their text as sent (sharing
// body's memory), a null leaves its field as it was. It reports false
// whenever it is not sure (escapes or non-ASCII bytes in a name or string,
// a duplicate or unknown name, a null op, …), leaving req partly filled.
func scanBatchBody(body []byte, maxDepth int, req *batchRequest) bool {
	if depth(body) > maxDepth || !json.Valid(body) {
		return false
	}
	// body is one valid JSON value from here on: the scan only has to find
	// where things end, not to check them.
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return false
	}
	const seenOps, seenAtomic = 1, 2
	var seen fieldSet
	return scanMembers(body, i, func(name string, v []byte) bool {
		switch name {
		case "ops":
			switch {
			case string(v) == "null":
				req.Ops = nil
			case v[0] == '[':
				ops, ok := scanOps(v)
				if !ok {
					return false
				}
				req.Ops = ops
			default:
				return false
			}
			return seen.first(seenOps)
		case "atomic":
			switch string(v) {
			case "true":
				req.Atomic = true
			case "false":
				req.Atomic = false
			case "null":
			default:
				return false
			}
			return seen.first(seenAtomic)
		}
		return false
	})
}

// scanOps decodes the valid JSON array v of operations.
func scanOps(v []byte) ([]batchOpBody, bool) {
	ops := make([]batchOpBody, 0, 16)
	i := skipSpace(v, 1)
	if v[i] == ']' {
		return ops, true
	}
	for {
		if v[i] != '{' {
			return nil, false // null or not an object: left to encoding/json
		}
		end := valueEnd(v, i)
		ops = append(ops, batchOpBody{})
		if !scanOp(v[i:end], &ops[len(ops)-1]) {
			return nil, false
		}
		i = skipSpace(v, end)
		if v[i] == ']' {
			return ops, true
		}
		i = skipSpace(v, i+1) // past the ','
	}
}

// scanOp decodes the valid JSON object obj into op.
func scanOp(obj []byte, op *batchOpBody) bool {
	const seenOp, seenKey, seenValue, seenContext, seenTTL, seenIfMatch = 1, 2, 4, 8, 16, 32
	var seen fieldSet
	return scanMembers(obj, 0, func(name string, v []byte) bool {
		switch name {
		case "op":
			return scanString(v, &op.Op) && seen.first(seenOp)
		case "key":
			return scanString(v, &op.Key) && seen.first(seenKey)
		case "if_match":
			return scanString(v, &op.IfMatch) && seen.first(seenIfMatch)
		case "value":
			op.Value = v
			return seen.first(seenValue)
		case "context":
			if string(v) != "null" {
				c := new(clock.Vector)
				if err := c.UnmarshalJSON(v); err != nil {
					return false
				}
				op.Context = c
			}
			return seen.first(seenContext)
		case "ttl":
			if string(v) != "null" {
				n, ok := parseInt64(v)
				if !ok {
					return false
				}
				op.TTL = &n
			}
			return seen.first(seenTTL)
		}
		return false
	})
}

// scanMembers calls member for each name and value of the valid JSON
// object starting at b[i], in order, and reports true when every call
// did. A name with an escape is left to encoding/json (false): it matches
// names case-insensitively, which the callers' exact names do not.
func scanMembers(b []byte, i int, member func(name string, v []byte) bool) bool {
	i = skipSpace(b, i+1)
	if b[i] == '}' {
		return true
	}
	for {
		start := i + 1
		end := start
		for b[end] != '"' {
			if b[end] == '\\' {
				return false
			}
			end++
		}
		i = skipSpace(b, end+1) // at the ':'
		i = skipSpace(b, i+1)
		vEnd := valueEnd(b, i)
		if !member(string(b[start:end]), b[i:vEnd:vEnd]) {
			return false
		}
		i = skipSpace(b, vEnd)
		if b[i] == '}' {
			return true
		}
		i = skipSpace(b, i+1) // past the ','
	}
}

// scanString stores the valid JSON value v in *dst as encoding/json would
// for a string field, when v is a string of printable ASCII without
// escapes, or null (which leaves *dst alone). Else it reports false.
func scanString(v []byte, dst *string) bool {
	if string(v) == "null" {
		return true
	}
	if v[0] != '"' {
		return false
	}
	s := v[1 : len(v)-1]
	for _, c := range s {
		if c == '\\' || c >= 0x80 {
			return false // escapes, and invalid UTF-8 that encoding/json replaces
		}
	}
	switch string(s) { // the ops' names, without a copy each
	case "put":
		*dst = "put"
	case "get":
		*dst = "get"
	case "delete":
		*dst = "delete"
	default:
		*dst = string(s)
	}
	return true
}
