package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/redistest"
)

// applyBatch runs a batch whose every op must succeed.
func applyBatch(t *testing.T, s *Store, ops ...BatchOp) []BatchResult {
	t.Helper()
	res, err := s.Batch(context.Background(), ops, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("op %d: %v", i, r.Err)
		}
	}
	return res
}

// openStore opens a Store on b, closed when the test ends.
func openStore(t *testing.T, b redistest.Backend, cfg Config) *Store {
	t.Helper()
	s, err := New(b.Client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The log is read in every layout it is written in: an older memsync's
// entry (one field "e", the events a line each), an entry of an odd number
// of events (padded with ""), and a call of more than 2,000 elements (here
// events of one element each), which takes an entry per 2,000. Every event comes back once, in
// order, and the newest id is the last entry's last event.
func TestEventLogReadsEveryEntryLayout(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := openStore(t, b, Config{})

		// As an older memsync logged two events.
		old := `{"id":1,"type":"put","namespace":"ns","key":"old/a","timestamp":1}` + "\n" +
			`{"id":2,"type":"delete","namespace":"ns","key":"old/b","timestamp":2}`
		if err := b.Client.XAdd(ctx, &redis.XAddArgs{Stream: eventLogKey, ID: "0-1", Values: []any{"e", old}}).Err(); err != nil {
			t.Fatal(err)
		}
		b.Client.Set(ctx, eventSeqKey, 2, 0)

		var evs []*Event
		for i := range 2004 { // three events: padded; 2,001: two entries
			evs = append(evs, &Event{Type: EventDelete, Namespace: "ns", Key: fmt.Sprintf("k%d", i), Timestamp: 3})
		}
		if err := s.publish(ctx, evs[:3]...); err != nil {
			t.Fatal(err)
		}
		if err := s.publish(ctx, evs[3:]...); err != nil {
			t.Fatal(err)
		}
		if n := b.Client.XLen(ctx, eventLogKey).Val(); n != 4 {
			t.Errorf("log entries = %d, want 4 (old, 3 events, 2000, 1)", n)
		}
		last, err := s.LastEventID(ctx)
		if err != nil || last != 2006 {
			t.Fatalf("LastEventID = %d, %v; want 2006", last, err)
		}
		got, complete, err := s.EventsAfter(ctx, 0, 3000)
		if err != nil || !complete || len(got) != 2006 {
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
		for _, after := range []uint64{1, 3, 500, 2005} {
			got, complete, err := s.LoggedAfter(ctx, after, 3000)
			if err != nil || !complete || len(got) != int(2006-after) || got[0].ID != after+1 || len(got[0].Raw) == 0 {
				t.Errorf("LoggedAfter(%d) = %d events from %+v, %v, %v", after, len(got), got[0], complete, err)
			}
		}
	})
}

// A batch that announces more than a thousand events (here 600 keys found
// expired, each an expire and a put event, and 400 more puts) logs an
// entry per thousand events, each put event as its head and the envelope
// tail the script passed in; every event reads back whole and in order.
func TestBatchEventsSpanLogEntries(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		now := time.Now().Add(-time.Hour)
		s := openStore(t, b, Config{Now: func() time.Time { return now }})
		minute := time.Minute
		value := json.RawMessage(`{"n":[1,2,3]}`)
		var ops []BatchOp
		for i := range 1000 {
			ops = append(ops, BatchOp{Kind: OpPut, Namespace: "ns", Key: fmt.Sprintf("span/k%03d", i),
				PutRequest: PutRequest{Value: value, Writer: "w", TTL: &minute}})
		}
		// An hour ago: gone from Redis at once, still in the subtree index.
		if res, err := s.Batch(ctx, ops[:600], false); err != nil || res[599].Err != nil {
			t.Fatalf("first batch: %v", err)
		}
		before, err := s.LastEventID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		entries := b.Client.XLen(ctx, eventLogKey).Val()
		now = time.Now()
		applyBatch(t, s, ops...)
		if n := b.Client.XLen(ctx, eventLogKey).Val() - entries; n != 2 {
			t.Errorf("the batch logged %d entries, want 2", n)
		}
		last, err := s.LastEventID(ctx)
		if err != nil || last != before+1600 {
			t.Fatalf("LastEventID = %d, %v; want %d", last, err, before+1600)
		}
		evs, complete, err := s.EventsAfter(ctx, before, 2000)
		if err != nil || !complete || len(evs) != 1600 {
			t.Fatalf("EventsAfter = %d events, %v, %v", len(evs), complete, err)
		}
		var want []string
		for i := range 1000 {
			if i < 600 {
				want = append(want, fmt.Sprintf("expire span/k%03d", i))
			}
			want = append(want, fmt.Sprintf("put span/k%03d", i))
		}
		for i, ev := range evs {
			if got := ev.Type + " " + ev.Key; got != want[i] || ev.ID != before+1+uint64(i) {
				t.Fatalf("event %d = %d %s, want %d %s", i, ev.ID, got, before+1+uint64(i), want[i])
			}
			if ev.Type == EventPut && (string(ev.Value) != string(value) || ev.Writer != "w" || ev.Version.String() != "w=1") {
				t.Fatalf("event %d = %+v", i, ev)
			}
		}
	})
}

// logReads is a go-redis hook that counts the log reads and the entries
// they returned.
type logReads struct {
	mu             sync.Mutex
	reads, entries int
}

func (*logReads) DialHook(next redis.DialHook) redis.DialHook { return next }
func (*logReads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (c *logReads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if name := cmd.Name(); name == "xrange" || name == "xrevrange" {
			reply, _ := cmd.(*redis.Cmd).Slice()
			c.mu.Lock()
			c.reads++
			c.entries += len(reply)
			c.mu.Unlock()
		}
		return err
	}
}

func (c *logReads) take() (reads, entries int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	reads, entries = c.reads, c.entries
	c.reads, c.entries = 0, 0
	return reads, entries
}

// A read of the log fetches about the entries that hold the events asked
// for, whatever their size: entries of a hundred events (batches) and of
// one (single writes) alike, and across the two.
func TestLogReadsTakeOnlyTheEntriesNeeded(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		s := openStore(t, b, Config{})
		for range 20 { // events 1-2000, 100 to an entry
			evs := make([]*Event, 100)
			for i := range evs {
				evs[i] = &Event{Type: EventDelete, Namespace: "ns", Key: "batch", Timestamp: 1}
			}
			if err := s.publish(ctx, evs...); err != nil {
				t.Fatal(err)
			}
		}
		for range 300 { // events 2001-2300, one to an entry
			if err := s.publish(ctx, &Event{Type: EventDelete, Namespace: "ns", Key: "single", Timestamp: 1}); err != nil {
				t.Fatal(err)
			}
		}
		hook := &logReads{}
		b.Client.AddHook(hook)
		for _, c := range []struct {
			after                uint64
			limit                int64
			maxReads, maxEntries int
		}{
			{150, 10, 1, 1},     // inside one batch's entry
			{150, 512, 3, 7},    // batches only: the head, then 4 or 5 more
			{1950, 100, 3, 52},  // the end of the batches, then singles
			{2000, 512, 2, 300}, // singles to the end of the log
		} {
			got, complete, err := s.LoggedAfter(ctx, c.after, c.limit)
			want := min(c.limit, int64(2300-c.after))
			if err != nil || !complete || int64(len(got)) != want || got[0].ID != c.after+1 || got[len(got)-1].ID != c.after+uint64(want) {
				t.Fatalf("LoggedAfter(%d, %d) = %d events, %v, %v", c.after, c.limit, len(got), complete, err)
			}
			if reads, entries := hook.take(); reads > c.maxReads || entries > c.maxEntries {
				t.Errorf("LoggedAfter(%d, %d) made %d reads of %d entries, want at most %d and %d",
					c.after, c.limit, reads, entries, c.maxReads, c.maxEntries)
			}
		}
	})
}

// The change channel shares the event log's hash tag, so that on Redis
// Cluster the instances subscribe on the node that publishes (see
// ChangeChannel).
func TestChangeChannelSharesTheLogsHashTag(t *testing.T) {
	tag := func(s string) string {
		_, rest, _ := strings.Cut(s, "{")
		tag, _, _ := strings.Cut(rest, "}")
		return tag
	}
	if got, want := tag(ChangeChannel), tag(eventLogKey); got == "" || got != want {
		t.Errorf("ChangeChannel %q has hash tag %q, the event log %q has %q", ChangeChannel, got, eventLogKey, want)
	}
	if tag(eventSeqKey) != tag(eventLogKey) {
		t.Errorf("the event counter %q and the log %q do not share a hash tag", eventSeqKey, eventLogKey)
	}
}
