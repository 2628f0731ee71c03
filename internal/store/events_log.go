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
	msgs, err := s.rdb.XRevRangeN(ctx, eventLogKey, "+", "-", 1).Result()
	if err != nil {
		return 0, wrap("last event", "", err)
	}
	if len(msgs) == 0 {
		return 0, nil
	}
	// Entries are "0-<first id>", holding events a line each (see logEvents).
	_, seq, _ := strings.Cut(msgs[0].ID, "-")
	id, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("store: last event: bad stream id %q", msgs[0].ID)
	}
	data, _ := msgs[0].Values["e"].(string)
	return id + uint64(strings.Count(data, "\n")), nil
}
