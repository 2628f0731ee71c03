package http

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/watch"
)

// maxInitialValue is the largest value an initial event carries, as the
// store's put events carry values up to 16 KiB: a client reads a larger
// one with a GET.
const maxInitialValue = 16 << 10

// initialEvent is the data of an initial event: a key's state when the
// watch began, as a put event gives a write, without an id.
type initialEvent struct {
	Type      string          `json:"type"`
	Namespace string          `json:"namespace"`
	Key       string          `json:"key"`
	Version   clock.Vector    `json:"version"`
	Timestamp int64           `json:"timestamp"`
	Writer    string          `json:"writer"`
	Value     json.RawMessage `json:"value,omitempty"`
	Initial   bool            `json:"initial"`
}

// sendInitial writes the current state of every key that f matches, in
// key order, as "put" events marked initial, then a "synced" event with
// the id from: the watcher's events, which follow, come after it (see
// watch.Watcher.From). The state is read after the watcher opened, so
// nothing falls between the two; a key changed meanwhile comes again
// with its change, and the last event of a key is its state.
//
// The initial events carry no id: a client that loses the stream before
// synced has no id to resume from, and starts again with the whole state,
// rather than resuming from the synced id with part of it. It returns
// false when a write to the client failed.
func sendInitial(ctx context.Context, st Store, f watch.Filter, from uint64, send func([]byte) bool) (bool, error) {
	prefix := ""
	if f.Pattern != nil {
		prefix = f.Pattern.Literal() // every key it matches starts so
	}
	buf := make([]byte, 0, 32<<10)
	n := 0 // keys sent
	for cursor := ""; ; {
		page, next, err := st.List(ctx, f.Namespace, prefix, cursor, store.MaxListLimit)
		if err != nil {
			return true, err
		}
		var ks []string
		for _, k := range page {
			if f.Match(store.Event{Type: store.EventPut, Namespace: f.Namespace, Key: k}) {
				ks = append(ks, k)
			}
		}
		var failed error
		sent := true
		err = forEntries(ctx, st, f.Namespace, ks, store.GetOptions{}, func(e store.Entry) bool {
			ev := initialEvent{Type: store.EventPut, Namespace: e.Namespace, Key: e.Key, Version: e.Version,
				Timestamp: e.Timestamp, Writer: e.Writer, Initial: true}
			if e.Resolved && len(e.Value) <= maxInitialValue {
				ev.Value = e.Value
			}
			data, err := json.Marshal(ev)
			if err != nil {
				failed = err
				return false
			}
			buf = append(append(append(buf, "event: put\ndata: "...), data...), "\n\n"...)
			n++
			if len(buf) >= 16<<10 {
				sent = send(buf)
				buf = buf[:0]
			}
			return sent
		})
		if err = errors.Join(err, failed); err != nil || !sent {
			return sent, err
		}
		if next == "" {
			break
		}
		cursor = next
	}
	id := strconv.FormatUint(from, 10)
	buf = append(buf, "id: "+id+"\nevent: synced\ndata: {\"id\":"+id+",\"type\":\"synced\",\"keys\":"+strconv.Itoa(n)+"}\n\n"...)
	return send(buf), nil
}
