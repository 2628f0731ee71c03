package store_test

import (
	"encoding/json"
	"testing"

	"github.com/memsync/memsync/internal/store"
)

// ParseEventRoute reads the routing fields of any event the way
// encoding/json does: events as the scripts and Publish write them take a
// fast path, and anything else (escapes, other field orders, control
// events) still decodes right.
func TestParseEventRouteMatchesJSON(t *testing.T) {
	for _, data := range []string{
		`{"id":1,"type":"put","namespace":"ns","key":"tasks/a","version":{"w":1},"timestamp":5,"writer":"w","value":{"x":[1,2]}}`,
		`{"id":18446744073709551615,"type":"expire","namespace":"ns","key":"a/b/c","timestamp":5}`,
		`{"id":2,"type":"delete","namespace":"n\u00e9","key":"a\"b","timestamp":5}`,
		`{"id":3,"type":"delete","namespace":"ns","key":"k"}`,
		`{"type":"put","id":4,"key":"k","namespace":"ns"}`,
		`{"id":5,"type":"invalidate","namespace":"ns","key":"","value":{"pattern":"a/*"}}`,
		`{"id":6,"type":"put","namespace":"ns","key":"k" ,"timestamp":1}`,
	} {
		got, err := store.ParseEventRoute(data)
		if err != nil {
			t.Errorf("ParseEventRoute(%s): %v", data, err)
			continue
		}
		var want store.Event
		if err := json.Unmarshal([]byte(data), &want); err != nil {
			t.Fatal(err)
		}
		if got.ID != want.ID || got.Type != want.Type || got.Namespace != want.Namespace || got.Key != want.Key {
			t.Errorf("ParseEventRoute(%s) = %+v, want %+v", data, got, want)
		}
		if want.Type == store.EventInvalidate && string(got.Value) != string(want.Value) {
			t.Errorf("control event value = %s, want %s", got.Value, want.Value)
		}
	}
	for _, bad := range []string{``, `{"id":`, `{"id":1,"type":"put"`, `not json`} {
		if _, err := store.ParseEventRoute(bad); err == nil {
			t.Errorf("ParseEventRoute(%q) = nil error", bad)
		}
	}
}
