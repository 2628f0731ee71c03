package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
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

// The events of one script call share a log entry; a replay may start
// in the middle of one, and the newest id is the entry's last event.
func TestEventLogEntriesHoldBatches(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		res, err := s.Batch(ctx, []store.BatchOp{putOp("log/a", "1"), putOp("log/b", "2"), deleteOp("log/a"), putOp("log/c", "3")}, false)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil {
				t.Fatalf("op %d: %v", i, r.Err)
			}
		}
		last, err := s.LastEventID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		evs, complete, err := s.EventsAfter(ctx, last-3, 100)
		if err != nil || !complete {
			t.Fatalf("EventsAfter = %v, %v", complete, err)
		}
		var got []string
		for _, ev := range evs {
			got = append(got, fmt.Sprintf("%d %s %s", last-ev.ID, ev.Type, ev.Key))
		}
		want := []string{"2 put log/b", "1 delete log/a", "0 put log/c"}
		if !slices.Equal(got, want) {
			t.Errorf("events after the first of the batch = %q, want %q", got, want)
		}
		if evs, _, _ := s.EventsAfter(ctx, last-3, 2); len(evs) != 2 || evs[1].Type != store.EventDelete {
			t.Errorf("EventsAfter with limit 2 = %+v", evs)
		}
		if evs, complete, _ := s.EventsAfter(ctx, last, 100); len(evs) != 0 || !complete {
			t.Errorf("EventsAfter(last) = %+v, %v", evs, complete)
		}
	})
}
