package store

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/redistest"
)

// commitScript's fast path (commitHead) must do exactly what the general
// path does with the same write. Each case writes the same history to two
// keys, then the last write to one of them alone in a call (the fast path,
// when the write qualifies) and to the other after a create in the same
// call (which sends every write after it down the general path). The
// results, the stored fields, the TTLs and the events must be the same; the
// log shows which path ran, since the fast path logs an event in six pieces
// and the general path in two.
func TestCommitFastPathMatchesGeneralPath(t *testing.T) {
	big := json.RawMessage(`"` + strings.Repeat("x", maxEventValue) + `"`)
	small := json.RawMessage(`{"status":"running","progress":42}`)
	ttl := func(d time.Duration) *time.Duration { return &d }
	type write struct {
		writer string
		ttl    *time.Duration
		value  json.RawMessage
		after  time.Duration // the clock moves on this much first
		// withContext sends the key's version as the write's context.
		withContext bool
	}
	cases := []struct {
		name    string
		history []write
		last    write
		fast    bool // the last write qualifies for the fast path
	}{
		{"same expiry", []write{{writer: "w", ttl: ttl(time.Minute)}},
			write{writer: "w", ttl: ttl(time.Minute)}, true},
		{"later expiry", []write{{writer: "w", ttl: ttl(time.Minute)}},
			write{writer: "w", ttl: ttl(time.Minute), after: 5 * time.Second}, true},
		{"no expiry", []write{{writer: "w", ttl: ttl(0)}, {writer: "w", ttl: ttl(0)}},
			write{writer: "w", ttl: ttl(0)}, true},
		{"earlier expiry", []write{{writer: "w", ttl: ttl(time.Hour)}},
			write{writer: "w", ttl: ttl(time.Minute)}, false},
		{"expiry dropped", []write{{writer: "w", ttl: ttl(time.Minute)}},
			write{writer: "w", ttl: ttl(0)}, false},
		{"expiry added", []write{{writer: "w", ttl: ttl(0)}},
			write{writer: "w", ttl: ttl(time.Minute)}, false},
		{"another writer's sibling", []write{{writer: "v", ttl: ttl(time.Minute)}},
			write{writer: "w", ttl: ttl(time.Minute)}, false},
		{"clock of two writers", []write{{writer: "v", ttl: ttl(time.Minute)}, {writer: "w", ttl: ttl(time.Minute), withContext: true}},
			write{writer: "w", ttl: ttl(time.Minute)}, false},
		{"with context", []write{{writer: "w", ttl: ttl(time.Minute)}},
			write{writer: "w", ttl: ttl(time.Minute), withContext: true}, false},
		{"value too big for its event", []write{{writer: "w", ttl: ttl(time.Minute)}},
			write{writer: "w", ttl: ttl(time.Minute), value: big}, false},
	}
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		now := time.Now().Truncate(time.Millisecond)
		s := openStore(t, b, Config{Now: func() time.Time { return now }})
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				seg := strings.NewReplacer(" ", "-", "'", "").Replace(tc.name)
				fastKey, slowKey := "fast/"+seg, "slow/"+seg
				op := func(key string, w write) BatchOp {
					req := PutRequest{Value: w.value, Writer: w.writer, TTL: w.ttl}
					if req.Value == nil {
						req.Value = small
					}
					if w.withContext {
						e, err := s.Get(ctx, "ns", key, GetOptions{})
						if err != nil {
							t.Fatal(err)
						}
						req.Context = e.Version
					}
					return BatchOp{Kind: OpPut, Namespace: "ns", Key: key, PutRequest: req}
				}
				run := func(ops ...BatchOp) []BatchResult { return applyBatch(t, s, ops...) }
				for _, w := range tc.history {
					now = now.Add(w.after)
					run(op(fastKey, w))
					run(op(slowKey, w))
				}
				now = now.Add(tc.last.after)
				before, err := s.LastEventID(ctx)
				if err != nil {
					t.Fatal(err)
				}
				fast := run(op(fastKey, tc.last))[0].Entry
				fastID := before + 1
				fastPieces := lastEntryElements(t, b)
				slow := run(op(slowKey+"-first", write{writer: "w"}), op(slowKey, tc.last))[1].Entry
				slowID := fastID + 2

				if f, g := describeEntry(fast), describeEntry(slow); f != g {
					t.Errorf("results differ:\nfast    %s\ngeneral %s", f, g)
				}
				fields := func(key string) map[string]string {
					m := b.Client.HGetAll(ctx, keys.Redis("ns", key)).Val()
					delete(m, "etag") // random
					return m
				}
				if f, g := fields(fastKey), fields(slowKey); !equalMaps(f, g) {
					t.Errorf("stored fields differ:\nfast    %v\ngeneral %v", f, g)
				}
				fastTTL := b.Client.PExpireTime(ctx, keys.Redis("ns", fastKey)).Val()
				slowTTL := b.Client.PExpireTime(ctx, keys.Redis("ns", slowKey)).Val()
				// Within a millisecond: miniredis keeps expiries as durations.
				if d := fastTTL - slowTTL; d > time.Millisecond || d < -time.Millisecond {
					t.Errorf("expiry: fast %v, general %v", fastTTL, slowTTL)
				}
				evs, _, err := s.LoggedAfter(ctx, before, 10)
				if err != nil || len(evs) != 3 {
					t.Fatalf("LoggedAfter = %d events, %v", len(evs), err)
				}
				norm := func(ev Event, id uint64, key string) string {
					if ev.ID != id || ev.Key != key {
						t.Errorf("event %d on %q, want %d on %q", ev.ID, ev.Key, id, key)
					}
					text := strings.Replace(string(ev.Raw), `"key":"`+key+`"`, `"key":"K"`, 1)
					return strings.Replace(text, `{"id":`+strconv.FormatUint(id, 10)+`,`, `{"id":N,`, 1)
				}
				if f, g := norm(evs[0], fastID, fastKey), norm(evs[2], slowID, slowKey); f != g {
					t.Errorf("events differ:\nfast    %s\ngeneral %s", f, g)
				}
				if want := map[bool]int{true: 6, false: 2}[tc.fast]; fastPieces != want {
					t.Errorf("the write logged %d elements, want %d (fast path %v)", fastPieces, want, tc.fast)
				}
			})
		}
	})
}

// lastEntryElements counts the field-value elements of the event log's
// newest entry, padding included.
func lastEntryElements(t *testing.T, b redistest.Backend) int {
	t.Helper()
	reply, err := b.Client.Do(context.Background(), "XREVRANGE", eventLogKey, "+", "-", "COUNT", 1).Slice()
	if err != nil || len(reply) != 1 {
		t.Fatalf("XREVRANGE: %v, %v", reply, err)
	}
	entry, _ := reply[0].([]any)
	fields, _ := entry[1].([]any)
	return len(fields)
}

func describeEntry(e Entry) string {
	e.Key, e.ETag = "", ""
	out, _ := json.Marshal(struct {
		Entry
		Version  string
		Siblings []Envelope
	}{e, e.Version.String(), e.Siblings})
	return string(out)
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
