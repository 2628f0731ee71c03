package http

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
)

// encode writes v as JSON with the given status and content type.
func encode(w http.ResponseWriter, status int, contentType string, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		http.Error(w, `{"code":"internal"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// writeJSON writes v as application/json.
func writeJSON(w http.ResponseWriter, status int, v any) {
	encode(w, status, "application/json", v)
}

// decode reads one JSON document from the request body into v strictly:
// unknown fields, trailing data, nesting deeper than maxDepth and bodies
// larger than maxBytes are errors. The body must already be limited by
// http.MaxBytesReader (see Server.limitBody).
func decode(r *http.Request, maxDepth int, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	return decodeBody(body, maxDepth, v)
}

// readBody reads the whole request body, the errors as decode reports
// them. It allocates once when the client sent a Content-Length, which the
// server has already made the body keep to.
func readBody(r *http.Request) ([]byte, error) {
	size := 512 // io.ReadAll's first guess
	if n := r.ContentLength; n >= 0 && n < maxBodyHint {
		size = int(n) + 1 // room for the read that reports EOF
	}
	b := make([]byte, 0, size)
	for {
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				return nil, fmt.Errorf("%w: the limit is %d bytes", errBodyTooLarge, tooLarge.Limit)
			}
			return nil, fmt.Errorf("%w: reading the body: %v", errInvalidJSON, err)
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow as io.ReadAll does
		}
	}
}

// maxBodyHint bounds the buffer a Content-Length alone can make readBody
// allocate: past it, the buffer grows with what actually arrives.
const maxBodyHint = 64 << 10

// decodeBody is decode of a body already read.
func decodeBody(body []byte, maxDepth int, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return fmt.Errorf("%w: the body is empty", errInvalidJSON)
	}
	if d := depth(body); d > maxDepth {
		return fmt.Errorf("%w: nesting deeper than %d levels", errInvalidJSON, maxDepth)
	}
	// encoding/json takes null for any struct, and leaves it as it was:
	// a body of null would pass for one that sets nothing.
	isStruct := false
	if t := reflect.TypeOf(v); t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct {
		isStruct = true
		if bytes.TrimLeft(body, " \t\r\n")[0] != '{' {
			return fmt.Errorf("%w: the body must be a JSON object", errInvalidJSON)
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errInvalidJSON, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: unexpected data after the JSON document", errInvalidJSON)
	}
	if isStruct {
		if err := exactNames(body, reflect.TypeOf(v).Elem()); err != nil {
			return fmt.Errorf("%w: %v", errInvalidJSON, err)
		}
	}
	return nil
}

// depth returns the deepest nesting of arrays and objects in a JSON text,
// without decoding it (strings are skipped, escapes included). It is only a
// bound: malformed input is left to the decoder.
func depth(b []byte) int {
	d, deepest, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			d++
			deepest = max(deepest, d)
		case ']', '}':
			d--
		}
	}
	return deepest
}
