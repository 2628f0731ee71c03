package store

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// EventInvalidate is a control event, published with Publish like any other:
// it changes no key, but asks every instance's read cache to drop the keys
// of Namespace that match the glob pattern in Value ({"pattern": "…"}).
// Watchers never see it.
const EventInvalidate = "invalidate"

// LastEventID returns the id of the newest logged event, 0 when the log is
// empty. It returns ErrUnavailable when Redis cannot be reached.
func (s *Store) LastEventID(ctx context.Context) (uint64, error) {
	entries, err := s.readLog(ctx, "XREVRANGE", eventLogKey, "+", "-", "COUNT", 1)
	if err != nil {
		return 0, s.wrap("last event", "", err)
	}
	if len(entries) == 0 {
		return 0, nil
	}
	e := entries[0]
	return e.first + uint64(len(e.events)) - 1, nil
}

// logEntry is one entry of the event log: the id of its first event and
// the events' JSON texts, in order (ids consecutive).
type logEntry struct {
	first  uint64
	events []string
}

// readLog runs XRANGE or XREVRANGE (args: the command and its arguments) on
// the event log and decodes the entries. An entry is "0-<first id>" and its
// field-value list is the events' texts in order, padded with "" to an
// even count (see appendLog): an element starting with "{" starts an event,
// and one starting otherwise continues the event before it (a put's
// envelope tail, which the script passes on as it is, or a piece of an
// event that commitScript's fast path logs in pieces). go-redis's XMessage
// keeps fields in a map, so the reply is read raw. An entry written by an
// older memsync has one field "e" whose value holds the events a line
// each: both are read.
func (s *Store) readLog(ctx context.Context, args ...any) ([]logEntry, error) {
	reply, err := s.rdb.Do(ctx, args...).Slice()
	if err != nil {
		return nil, err
	}
	entries := make([]logEntry, 0, len(reply))
	for _, item := range reply {
		e, _ := item.([]any)
		var fields []any
		var id string
		if len(e) == 2 {
			id, _ = e[0].(string)
			fields, _ = e[1].([]any)
		}
		_, seq, _ := strings.Cut(id, "-")
		first, err := strconv.ParseUint(seq, 10, 64)
		if err != nil || fields == nil {
			return nil, fmt.Errorf("store: bad event log entry %.200v", item)
		}
		entry := logEntry{first: first, events: make([]string, 0, len(fields))}
		for _, f := range fields {
			text, _ := f.(string)
			switch {
			case text == "" || text == "e":
			case text[0] != '{':
				n := len(entry.events)
				if n == 0 {
					return nil, fmt.Errorf("store: event log entry %q starts inside an event", id)
				}
				entry.events[n-1] += text
			case strings.IndexByte(text, '\n') < 0:
				entry.events = append(entry.events, text)
			default:
				for line := range strings.SplitSeq(text, "\n") {
					entry.events = append(entry.events, line)
				}
			}
		}
		if len(entry.events) == 0 {
			return nil, fmt.Errorf("store: empty event log entry %q", id)
		}
		entries = append(entries, entry)
	}
	return entries, nil
}
