package store

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/redistest"
)

// The log is read in every layout it is written in: an older memsync's
// entry (one field "e", the events a line each), an entry of an odd number
// of events (padded with ""), and a call of more than a thousand events,
// which takes an entry per thousand. Every event comes back once, in
// order, and the newest id is the last entry's last event.
func TestEventLogReadsEveryEntryLayout(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s, err := New(b.Client, Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()

		// As an older memsync logged two events.
		old := `{"id":1,"type":"put","namespace":"ns","key":"old/a","timestamp":1}` + "\n" +
			`{"id":2,"type":"delete","namespace":"ns","key":"old/b","timestamp":2}`
		if err := b.Client.XAdd(ctx, &redis.XAddArgs{Stream: eventLogKey, ID: "0-1", Values: []any{"e", old}}).Err(); err != nil {
			t.Fatal(err)
		}
		b.Client.Set(ctx, eventSeqKey, 2, 0)

		var evs []*Event
		for i := range 1004 { // three events: padded; 1001: two entries
			evs = append(evs, &Event{Type: EventDelete, Namespace: "ns", Key: fmt.Sprintf("k%d", i), Timestamp: 3})
		}
		if err := s.publish(ctx, evs[:3]...); err != nil {
			t.Fatal(err)
		}
		if err := s.publish(ctx, evs[3:]...); err != nil {
			t.Fatal(err)
		}
		if n := b.Client.XLen(ctx, eventLogKey).Val(); n != 4 {
			t.Errorf("log entries = %d, want 4 (old, 3 events, 1000, 1)", n)
		}
		last, err := s.LastEventID(ctx)
		if err != nil || last != 1006 {
			t.Fatalf("LastEventID = %d, %v; want 1006", last, err)
		}
		got, complete, err := s.EventsAfter(ctx, 0, 2000)
		if err != nil || !complete || len(got) != 1006 {
			t.Fatalf("EventsAfter(0) = %d events, %v, %v", len(got), complete, err)
		}
		for i, ev := range got {
			want := fmt.Sprintf("k%d", i-2)
			if i < 2 {
				want = []string{"old/a", "old/b"}[i]
			}
			if ev.ID != uint64(i+1) || ev.Key != want {
				t.Fatalf("event %d = id %d key %q, want id %d key %q", i, ev.ID, ev.Key, i+1, want)
			}
		}
		// A replay from inside each kind of entry.
		for _, after := range []uint64{1, 3, 500, 1005} {
			got, complete, err := s.LoggedAfter(ctx, after, 2000)
			if err != nil || !complete || len(got) != int(1006-after) || got[0].ID != after+1 || len(got[0].Raw) == 0 {
				t.Errorf("LoggedAfter(%d) = %d events from %+v, %v, %v", after, len(got), got[0], complete, err)
			}
		}
	})
}
