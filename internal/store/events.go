package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/keys"
)

// Event types.
const (
	EventPut    = "put"
	EventDelete = "delete"
	EventExpire = "expire"
)

// ChangeChannel is the Redis pub/sub channel every change event is
// published on, for every namespace: one subscription per instance hears
// them all. A message holds one or more events, one JSON object per line,
// in id order.
const ChangeChannel = "ms:changes"

// DefaultEventLogLen is how many events the replayable log keeps
// (approximately: Redis trims the stream in whole nodes).
const DefaultEventLogLen = 10000

// Event is one change to a key. ID orders events: consecutive events have
// consecutive ids, so a gap is visible.
type Event struct {
	ID        uint64          `json:"id"`
	Type      string          `json:"type"`
	Namespace string          `json:"namespace"`
	Key       string          `json:"key"`
	Version   clock.Vector    `json:"version,omitempty"`
	Timestamp int64           `json:"timestamp"`
	Writer    string          `json:"writer,omitempty"`
	Value     json.RawMessage `json:"value,omitempty"`
}

// publishScript appends events to the log and publishes them, so that the
// log order and the ids are the same thing.
//
// KEYS[1] the event counter; KEYS[2] the event log stream (same slot)
// ARGV[1] the channel; ARGV[2] the log's approximate maximum length
// ARGV[3…] one event each, as JSON after its id: `"type":…}`
//
// Returns the id of the first event; the others follow consecutively. A
// stream entry's id is "0-<id>" and its field "e" holds the event JSON, id
// included. The events go out in one message, one per line (compact JSON
// has no raw newline): a subscriber hears a batch at the cost of one.
var publishScript = redis.NewScript(`
local count = #ARGV - 2
local last = redis.call("INCRBY", KEYS[1], count)
local first = last - count + 1
local msg = {}
for i = 1, count do
  local id = string.format("%d", first + i - 1)
  local e = '{"id":' .. id .. ',' .. ARGV[i + 2]
  redis.call("XADD", KEYS[2], "MAXLEN", "~", ARGV[2], "0-" .. id, "e", e)
  msg[i] = e
end
redis.call("PUBLISH", ARGV[1], table.concat(msg, "\n"))
return first
`)

// Publish appends ev to the event log and publishes it to every instance.
// It fills in ev.ID.
func (s *Store) Publish(ctx context.Context, ev *Event) error {
	return s.publish(ctx, ev)
}

// publish logs and publishes events in one script call, in order, and fills
// in their ids.
func (s *Store) publish(ctx context.Context, events ...*Event) error {
	args := make([]any, 0, len(events)+2)
	args = append(args, ChangeChannel, s.cfg.EventLogLen)
	for _, ev := range events {
		b, err := json.Marshal(struct {
			Event
			ID *struct{} `json:"id,omitempty"` // the script writes the id first
		}{Event: *ev})
		if err != nil {
			return fmt.Errorf("store: publish %s %q: %w", ev.Type, ev.Key, err)
		}
		args = append(args, b[1:])
	}
	first, err := publishScript.Run(ctx, s.rdb, []string{keys.Global("events-seq"), keys.Global("events")}, args...).Uint64()
	if err != nil {
		return s.wrap("publish", events[0].Key, err)
	}
	s.count.events.Add(uint64(len(events)))
	for i, ev := range events {
		ev.ID = first + uint64(i)
	}
	return nil
}

// ParseEvent decodes an event as published or logged.
func ParseEvent(data string) (Event, error) {
	var ev Event
	if err := json.Unmarshal([]byte(data), &ev); err != nil {
		return Event{}, fmt.Errorf("store: bad event %q: %w", data, err)
	}
	return ev, nil
}

// ParseMessage decodes every event of one message on ChangeChannel.
func ParseMessage(payload string) ([]Event, error) {
	var out []Event
	for line := range strings.SplitSeq(payload, "\n") {
		ev, err := ParseEvent(line)
		if err != nil {
			return nil, err
		}
		out = append(out, ev)
	}
	return out, nil
}

// ParseEventRoute decodes only what routing an event takes: its id, type,
// namespace and key, and the value of control events (EventInvalidate).
// The version, writer, timestamp and a put's value are left out: a hub
// hears every event of every instance and forwards them as the raw JSON,
// so decoding them would be wasted.
func ParseEventRoute(data string) (Event, error) {
	if ev, ok := parseRouteFast(data); ok && ev.Type != EventInvalidate {
		return ev, nil
	}
	var head struct {
		ID        uint64 `json:"id"`
		Type      string `json:"type"`
		Namespace string `json:"namespace"`
		Key       string `json:"key"`
	}
	if err := json.Unmarshal([]byte(data), &head); err != nil {
		return Event{}, fmt.Errorf("store: bad event %q: %w", data, err)
	}
	if head.Type == EventInvalidate {
		return ParseEvent(data)
	}
	return Event{ID: head.ID, Type: head.Type, Namespace: head.Namespace, Key: head.Key}, nil
}

// EventsAfter returns up to limit logged events with ids greater than
// after, oldest first, and whether the log still held every event after
// it (false: some were trimmed, and the caller missed them).
func (s *Store) EventsAfter(ctx context.Context, after uint64, limit int64) ([]Event, bool, error) {
	msgs, err := s.rdb.XRangeN(ctx, keys.Global("events"), "(0-"+strconv.FormatUint(after, 10), "+", limit).Result()
	if err != nil {
		return nil, false, s.wrap("events", "", err)
	}
	out := make([]Event, 0, len(msgs))
	for _, m := range msgs {
		data, _ := m.Values["e"].(string)
		ev, err := ParseEvent(data)
		if err != nil {
			return nil, false, err
		}
		out = append(out, ev)
	}
	complete := len(out) == 0 || out[0].ID == after+1
	return out, complete, nil
}

// parseRouteFast reads the routing fields of an event in the layout the
// scripts write, `{"id":N,"type":"T","namespace":"NS","key":"K"…`, without
// a decoder; ok is false for anything else (escapes included), which then
// takes encoding/json.
func parseRouteFast(data string) (ev Event, ok bool) {
	rest, ok := strings.CutPrefix(data, `{"id":`)
	if !ok {
		return Event{}, false
	}
	n := strings.IndexByte(rest, ',')
	if n < 0 {
		return Event{}, false
	}
	id, err := strconv.ParseUint(rest[:n], 10, 64)
	if err != nil {
		return Event{}, false
	}
	ev.ID = id
	rest = rest[n:]
	for _, f := range []struct {
		tag string
		dst *string
	}{{`,"type":"`, &ev.Type}, {`,"namespace":"`, &ev.Namespace}, {`,"key":"`, &ev.Key}} {
		if rest, ok = strings.CutPrefix(rest, f.tag); !ok {
			return Event{}, false
		}
		end := strings.IndexByte(rest, '"')
		if end < 0 || strings.IndexByte(rest[:end], '\\') >= 0 {
			return Event{}, false
		}
		*f.dst, rest = rest[:end], rest[end+1:]
	}
	if !strings.HasPrefix(rest, ",") && rest != "}" {
		return Event{}, false
	}
	return ev, true
}
