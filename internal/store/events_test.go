package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
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
		mustBatch(t, s, []store.BatchOp{putOp("log/a", "1"), putOp("log/b", "2"), deleteOp("log/a"), putOp("log/c", "3")})
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

// A batch whose events make a long text is published as a brief: the ids,
// types, namespaces and keys only, a few times shorter; the log holds the
// whole events under the same ids.
func TestBigBatchIsPublishedBrief(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		sub := b.Client.Subscribe(ctx, store.ChangeChannel)
		defer sub.Close()
		if _, err := sub.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		s := newStore(t, b, store.Config{})
		mustPut(t, s, "brief/k1", "w1", `1`, nil) // so that the batch deletes one
		if _, err := sub.ReceiveMessage(ctx); err != nil {
			t.Fatal(err)
		}
		value := json.RawMessage(`"` + strings.Repeat("v", 200) + `"`)
		ops := []store.BatchOp{{Kind: store.OpDelete, Namespace: ns, Key: "brief/k1"}}
		for i := range 50 {
			ops = append(ops, store.BatchOp{Kind: store.OpPut, Namespace: ns, Key: fmt.Sprintf("brief/k%d", i),
				PutRequest: store.PutRequest{Value: value, Writer: "w1"}})
		}
		res, err := s.Batch(ctx, ops, false)
		if err != nil {
			t.Fatal(err)
		}
		m, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		brief, ok, err := store.ParseBrief(m.Payload)
		if !ok || err != nil || len(brief) != 51 || len(m.Payload) > 2<<10 {
			t.Fatalf("published %d bytes: brief %v, err %v, %d events", len(m.Payload), ok, err, len(brief))
		}
		logged, complete, err := s.EventsAfter(ctx, brief[0].ID-1, 100)
		if err != nil || !complete || len(logged) != 51 {
			t.Fatalf("EventsAfter = %d events, %v, %v", len(logged), complete, err)
		}
		for i, ev := range brief {
			full := logged[i]
			if ev.ID != full.ID || ev.Type != full.Type || ev.Namespace != ns || ev.Key != full.Key {
				t.Errorf("brief event %d = %+v, logged %+v", i, ev, full)
			}
		}
		if brief[0].Type != store.EventDelete || res[0].Err != nil || res[50].Entry.Key != "brief/k49" ||
			string(logged[50].Value) != string(value) || logged[50].Version.String() != res[50].Entry.Version.String() {
			t.Errorf("first %+v, last logged %+v, last result %+v", brief[0], logged[50], res[50])
		}
		// Not a brief; briefs gone wrong.
		if _, ok, err := store.ParseBrief(`{"id":1,"type":"put"}`); ok || err != nil {
			t.Errorf("ParseBrief(an event) = %v, %v", ok, err)
		}
		for _, p := range []string{"#x\nput ns k", "#3", "#3\nput ns"} {
			if _, ok, err := store.ParseBrief(p); !ok || err == nil {
				t.Errorf("ParseBrief(%q) = ok %v, err %v; want an error", p, ok, err)
			}
		}
	})
}
