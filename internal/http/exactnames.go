package http

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"sync"
)

// exactNames checks that every member name of body, a JSON object that
// encoding/json has decoded into a value of type t, names a field of t as
// its tag spells it, once. encoding/json also takes "TTL_MS" for ttl_ms,
// where the API's names are exact (api/openapi.yaml refuses other members)
// and so are the hand scanners'; and of a name given twice it keeps the
// last, where a client that sent two means one of them, and which is not
// said. It looks into the members whose field is a struct, or a slice of
// structs, and skips every other value unread: a value's own members (a
// put's "value") are the client's. body being valid JSON, the scan needs
// no error handling of its own.
func exactNames(body []byte, t reflect.Type) error {
	_, err := checkObject(body, skipSpace(body, 0), t)
	return err
}

// checkObject checks the object at b[i] against struct type t and returns
// the index after it.
func checkObject(b []byte, i int, t reflect.Type) (int, error) {
	if b[i] != '{' {
		return valueEnd(b, i), nil // null
	}
	fields := fieldsOf(t)
	var names [8][]byte
	seen := names[:0] // the names met so far, unescaped: a struct has a few fields
	i = skipSpace(b, i+1)
	for b[i] != '}' {
		end := stringEnd(b, i)
		name := b[i+1 : end-1]
		ft, ok := fields[string(name)] // no copy made to look up
		if !ok {
			var unescaped string
			_ = json.Unmarshal(b[i:end], &unescaped)
			if ft, ok = fields[unescaped]; !ok {
				return 0, fmt.Errorf("json: unknown field %q", unescaped)
			}
			name = []byte(unescaped)
		}
		for _, n := range seen {
			if bytes.Equal(n, name) {
				return 0, fmt.Errorf("json: duplicate field %q", name)
			}
		}
		seen = append(seen, name)
		i = skipSpace(b, skipSpace(b, end)+1) // past the ':'
		var err error
		switch {
		case ft.Kind() == reflect.Struct:
			i, err = checkObject(b, i, ft)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && b[i] == '[':
			i = skipSpace(b, i+1)
			for err == nil && b[i] != ']' {
				if i, err = checkObject(b, i, ft.Elem()); err == nil {
					if i = skipSpace(b, i); b[i] == ',' {
						i = skipSpace(b, i+1)
					}
				}
			}
			i++
		default:
			i = valueEnd(b, i)
		}
		if err != nil {
			return 0, err
		}
		if i = skipSpace(b, i); b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	return i + 1, nil
}

// structFields caches fieldsOf.
var structFields sync.Map // reflect.Type → map[string]reflect.Type

// fieldsOf maps the JSON names of struct type t's fields to their types,
// pointers taken off; a type that decodes itself (json.Unmarshaler) maps
// to an interface type, which checkObject does not look into.
func fieldsOf(t reflect.Type) map[string]reflect.Type {
	if m, ok := structFields.Load(t); ok {
		return m.(map[string]reflect.Type)
	}
	m := make(map[string]reflect.Type)
	unmarshaler := reflect.TypeFor[json.Unmarshaler]()
	opaque := reflect.TypeFor[any]()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" && f.Type.Kind() == reflect.Struct {
			maps.Copy(m, fieldsOf(f.Type)) // promoted, as encoding/json does
			continue
		}
		if !f.IsExported() {
			continue
		}
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if reflect.PointerTo(ft).Implements(unmarshaler) { // by value or by pointer
			ft = opaque
		}
		m[name] = ft
	}
	structFields.Store(t, m)
	return m
}
