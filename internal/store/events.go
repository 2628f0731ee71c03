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
//
// It carries the hash tag of the event log ({#memsync}, as keys.Global):
// on Redis Cluster go-redis subscribes on the node that owns a channel's
// slot, so every instance listens on the node whose scripts publish, and no
// event crosses the cluster bus on its way. Named "ms:changes", its slot
// was another node's, and the bus's forwarding put 40–47 ms on 1 % of the
// events (two instances on three masters: p99 from A's acknowledgement to
// B serving the write 43–44 ms; with the tag, 1.4–1.7 ms).
const ChangeChannel = "ms:{#memsync}#changes"

// The instance-wide keys: the event counter and log, and the expiry index
// the sweeper walks. Built once: every write names them.
var (
	eventSeqKey = keys.Global("events-seq")
	eventLogKey = keys.Global("events")
	expiryKey   = keys.Global("expiry")
)

// DefaultEventLogLen is how many events the replayable log keeps
// (at least, about: Redis trims the stream in whole entries and nodes).
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

	// Raw is the event's JSON as logged and published, when it was read
	// from there with only its routing fields decoded (ParseEventRoute,
	// LoggedAfter): shared, not to be modified. Nil otherwise.
	Raw json.RawMessage `json:"-"`
}

// publishScript appends events to the log and publishes them, so that the
// log order and the ids are the same thing (logEvents of logLib).
//
// KEYS[1] the event counter; KEYS[2] the event log stream (same slot)
// ARGV[1] the channel; ARGV[2] the log's approximate length, in events
// ARGV[3] the lines of the brief message to publish instead, "" for none
// ARGV[4…] one event each, as JSON after its id: `"type":…}`
//
// Returns the id of the first event; the others follow consecutively.
var publishScript = redis.NewScript(logLib + `
local events = {}
for i = 4, #ARGV do events[#events + 1] = ARGV[i] end
return logEvents(KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2]), events, ARGV[3])
`)

// Publish appends ev to the event log and publishes it to every instance.
// It fills in ev.ID.
func (s *Store) Publish(ctx context.Context, ev *Event) error {
	return s.publish(ctx, ev)
}

// publish logs and publishes events in one script call, in order, and fills
// in their ids.
func (s *Store) publish(ctx context.Context, events ...*Event) error {
	args := make([]any, 3, len(events)+3)
	args[0], args[1] = ChangeChannel, s.cfg.EventLogLen
	size, brief := 0, len(events) > 1
	for _, ev := range events {
		b, err := json.Marshal(struct {
			Event
			ID *struct{} `json:"id,omitempty"` // the script writes the id first
		}{Event: *ev})
		if err != nil {
			return fmt.Errorf("store: publish %s %q: %w", ev.Type, ev.Key, err)
		}
		args = append(args, b[1:])
		size += len(b)
		brief = brief && ev.Type != EventInvalidate
	}
	args[2] = ""
	if brief && size > briefAbove {
		args[2] = briefLines(events)
	}
	first, err := publishScript.Run(ctx, s.rdb, []string{eventSeqKey, eventLogKey}, args...).Uint64()
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

// A message on ChangeChannel holds the events of one script call, a line
// each (as logged), or, when they would make a long text, a brief of them:
//
//	#<id of the first event>
//	<type> <namespace> <key>
//	…
//
// one line per event, the ids consecutive. Redis writes a subscriber at
// most 64 KiB per turn of its event loop, so batches of full events from
// several clients at once would pile up in its output buffer until Redis
// cut the subscriber off; a brief is a few times shorter. The log holds the
// full events (EventsAfter).
const briefMark = "#"

// briefLines is the body of a brief message of events (no header line).
func briefLines(events []*Event) string {
	var b strings.Builder
	for i, ev := range events {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(ev.Type)
		b.WriteByte(' ')
		b.WriteString(ev.Namespace)
		b.WriteByte(' ')
		b.WriteString(ev.Key)
	}
	return b.String()
}

// ParseBrief decodes a brief message (see briefMark): the events' ids,
// types, namespaces and keys. ok is false when payload is not a brief.
func ParseBrief(payload string) (evs []Event, ok bool, err error) {
	rest, ok := strings.CutPrefix(payload, briefMark)
	if !ok {
		return nil, false, nil
	}
	head, rest, _ := strings.Cut(rest, "\n")
	id, err := strconv.ParseUint(head, 10, 64)
	if err != nil || rest == "" {
		return nil, true, fmt.Errorf("store: bad brief message %.100q", payload)
	}
	evs = make([]Event, 0, strings.Count(rest, "\n")+1)
	for line := range strings.SplitSeq(rest, "\n") {
		typ, rest, ok1 := strings.Cut(line, " ")
		ns, key, ok2 := strings.Cut(rest, " ")
		if !ok1 || !ok2 {
			return nil, true, fmt.Errorf("store: bad brief line %q", line)
		}
		evs = append(evs, Event{ID: id, Type: typ, Namespace: ns, Key: key})
		id++
	}
	return evs, true, nil
}

// ParseMessage decodes every event of one message on ChangeChannel; of a
// brief, only the ids, types, namespaces and keys.
func ParseMessage(payload string) ([]Event, error) {
	if evs, ok, err := ParseBrief(payload); ok {
		return evs, err
	}
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
//
// A log entry holds the events of one script call (see logEvents), so the
// read starts at the entry holding event after+1: the newest entry whose
// first id is at most after+1.
func (s *Store) EventsAfter(ctx context.Context, after uint64, limit int64) ([]Event, bool, error) {
	return s.eventsAfter(ctx, after, limit, ParseEvent)
}

// LoggedAfter is EventsAfter decoding only what routing an event takes
// (ParseEventRoute), with each event's JSON in Raw: what a hub needs to
// forward them, at a fraction of the cost of decoding them whole.
func (s *Store) LoggedAfter(ctx context.Context, after uint64, limit int64) ([]Event, bool, error) {
	return s.eventsAfter(ctx, after, limit, func(line string) (Event, error) {
		ev, err := ParseEventRoute(line)
		ev.Raw = json.RawMessage(line)
		return ev, err
	})
}

func (s *Store) eventsAfter(ctx context.Context, after uint64, limit int64, parse func(string) (Event, error)) ([]Event, bool, error) {
	log := eventLogKey
	out := make([]Event, 0, min(limit, 1024))
	// take appends the events of entries after after, up to limit. Ids are
	// consecutive from each entry's, so the events before are not parsed.
	take := func(entries []logEntry) error {
		for _, e := range entries {
			for i, text := range e.events {
				if e.first+uint64(i) <= after {
					continue
				}
				if int64(len(out)) == limit {
					return nil
				}
				ev, err := parse(text)
				if err != nil {
					return err
				}
				if ev.ID > after {
					out = append(out, ev)
				}
			}
		}
		return nil
	}
	// The newest entry whose first id is at most after+1 holds the event
	// after+1, if the log still does.
	start := "-"
	head, err := s.readLog(ctx, "XREVRANGE", log, "0-"+strconv.FormatUint(after+1, 10), "-", "COUNT", 1)
	if err != nil {
		return nil, false, s.wrap("events", "", err)
	}
	perEntry := int64(0) // events per entry in the last read; 0: none yet
	if len(head) == 1 {
		if err := take(head); err != nil {
			return nil, false, err
		}
		start = "0-" + strconv.FormatUint(head[0].first+1, 10)
		perEntry = int64(len(head[0].events))
	}
	// An entry holds the events of one script call: one, or up to 2,000
	// elements' worth (a few hundred to 2,000 events). So
	// how many entries to read next is estimated from the size of the last
	// ones read (neighbours are alike: a stream of batches, or of single
	// writes); reading limit entries could fetch a hundred times the events
	// wanted, and a hub catching up under a stream of batches would fall
	// further behind with every page.
	for int64(len(out)) < limit {
		count := int64(1) // nothing seen yet: one entry shows its size
		if perEntry > 0 {
			count = min((limit-int64(len(out))+perEntry-1)/perEntry, 1000)
		}
		entries, err := s.readLog(ctx, "XRANGE", log, start, "+", "COUNT", count)
		if err != nil {
			return nil, false, s.wrap("events", "", err)
		}
		if err := take(entries); err != nil {
			return nil, false, err
		}
		if int64(len(entries)) < count {
			break // the end of the log
		}
		events := 0
		for _, e := range entries {
			events += len(e.events)
		}
		perEntry = max(1, int64(events/len(entries)))
		start = "0-" + strconv.FormatUint(entries[len(entries)-1].first+1, 10)
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
