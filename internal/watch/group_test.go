package watch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/watch"
)

// pollSSE takes what w holds now as text/event-stream bytes.
func pollSSE(t *testing.T, w *watch.Watcher) []byte {
	t.Helper()
	b, err := w.PollSSE(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// frames encodes msgs as AppendFrame does.
func frames(msgs []watch.Message) []byte {
	var b []byte
	for _, m := range msgs {
		b = watch.AppendFrame(b, m)
	}
	return b
}

func TestWatchersOfOneFilterShareAGroupAndItsFrames(t *testing.T) {
	r := newRig(t, redistest.Mini(t), rigOptions{buffer: 1 << 10})
	// The same filter compiled three times, and two others.
	same := func() watch.Filter { return watch.Filter{Namespace: "ns", Pattern: mustGlob(t, "tasks/*")} }
	a, b, c := mustWatch(t, r.hub, same(), 0), mustWatch(t, r.hub, same(), 0), mustWatch(t, r.hub, same(), 0)
	other := mustWatch(t, r.hub, watch.Filter{Namespace: "ns", Regexp: regexp.MustCompile(`^tasks/`)}, 0)
	all := mustWatch(t, r.hub, watch.Filter{}, 0)
	if got, _ := watch.GroupsOf(r.hub); got != 3 {
		t.Errorf("%d groups for three filters", got)
	}

	for i := range 10 {
		r.put("ns", fmt.Sprintf("tasks/T%d", i%3), i)
		r.put("ns", "workers/w1", i) // matches only all
	}
	last := r.waitDelivered()

	msgs := collect(t, c, 10) // c as messages, the others as bytes
	sa, sb := pollSSE(t, a), pollSSE(t, b)
	if !bytes.Equal(sa, sb) {
		t.Fatalf("two watchers of one filter got different bytes:\n%s\n---\n%s", sa, sb)
	}
	if want := frames(msgs); !bytes.Equal(sa, want) {
		t.Errorf("PollSSE gave\n%s\nwant the frames of Poll's messages\n%s", sa, want)
	}
	if n := bytes.Count(sa, []byte("\nevent: put\ndata: {")); n != 10 {
		t.Errorf("%d put frames, want 10:\n%s", n, sa)
	}
	for _, m := range msgs {
		var ev store.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil || ev.ID != m.Event.ID || ev.Key != m.Event.Key {
			t.Errorf("message %d carries data %s (%v)", m.Event.ID, m.Data, err)
		}
	}
	if got := ids(collect(t, other, 10)); !slices.Equal(got, ids(msgs)) {
		t.Errorf("the regexp watcher got %v, want %v", got, ids(msgs))
	}
	assertConsecutive(t, ids(collect(t, all, 20)), 1, last)

	// Closing a watcher leaves the others of its group alone; the group
	// goes with the last one.
	a.Close()
	id := r.put("ns", "tasks/T9", 0)
	r.waitDelivered()
	if got := collect(t, b, 1)[0]; got.Event.ID != id {
		t.Errorf("after a closed neighbour: %+v, want event %d", got, id)
	}
	if _, err := a.PollSSE(context.Background(), nil); !errors.Is(err, watch.ErrClosed) {
		t.Errorf("PollSSE on a closed, drained watcher: %v", err)
	}
	b.Close()
	c.Close()
	if got, _ := watch.GroupsOf(r.hub); got != 2 {
		t.Errorf("%d groups once a filter's last watcher closed, want 2", got)
	}
}

func TestGroupLetsGoOfEventsEveryWatcherTook(t *testing.T) {
	const buffer = 64
	r := newRig(t, redistest.Mini(t), rigOptions{buffer: buffer})
	w1 := mustWatch(t, r.hub, watch.Filter{}, 0)
	w2 := mustWatch(t, r.hub, watch.Filter{}, 0)
	for i := range 40 {
		r.put("ns", "k", i)
	}
	r.waitDelivered()
	collect(t, w1, 40)
	if _, held := watch.GroupsOf(r.hub); held == 0 {
		t.Error("the ring let go of events w2 has not taken")
	}
	collect(t, w2, 40)
	if _, held := watch.GroupsOf(r.hub); held != 0 {
		t.Errorf("the ring holds %d events every watcher took", held)
	}
	// A watcher that stalls keeps at most a buffer's worth.
	for range 6 {
		for i := range buffer / 2 {
			r.put("ns", "k", i)
		}
		r.waitDelivered()
		collect(t, w1, buffer/2)
	}
	if _, held := watch.GroupsOf(r.hub); held == 0 || held > buffer {
		t.Errorf("the ring holds %d events for a stalled watcher, want 1..%d", held, buffer)
	}
}

func TestSlowWatcherGetsAResetFrame(t *testing.T) {
	const buffer, writes = 8, 20
	r := newRig(t, redistest.Mini(t), rigOptions{buffer: buffer})
	w := mustWatch(t, r.hub, watch.Filter{}, 0)
	var last uint64
	for i := range writes {
		last = r.put("ns", "k", i)
	}
	r.waitDelivered()
	before := r.hub.Stats()
	got := string(pollSSE(t, w))
	// A reset for the oldest, then the newest buffer-1 events.
	first := last - buffer + 2
	want := fmt.Sprintf("id: %d\nevent: reset\ndata: {\"reason\":\"the watcher fell more than %d events behind\"}\n\n", first-1, buffer)
	if !strings.HasPrefix(got, want) {
		t.Fatalf("stream starts\n%.200s\nwant\n%s", got, want)
	}
	if n := strings.Count(got, "\nevent: put\n"); n != buffer-1 {
		t.Errorf("%d events after the reset, want %d", n, buffer-1)
	}
	if !strings.Contains(got, fmt.Sprintf("id: %d\nevent: put\n", first)) || !strings.HasSuffix(got, "\n\n") {
		t.Errorf("events do not resume right after the reset:\n%s", got)
	}
	after := r.hub.Stats()
	if d, rs := after.Dropped-before.Dropped, after.Resets-before.Resets; d != writes-(buffer-1) || rs != 1 {
		t.Errorf("stats: %d dropped and %d resets, want %d and 1", d, rs, writes-(buffer-1))
	}
}

func TestAppendFrame(t *testing.T) {
	ev := store.Event{ID: 7, Type: store.EventDelete, Namespace: "ns", Key: "a/b", Timestamp: 5}
	for _, tc := range []struct {
		name string
		m    watch.Message
		want string
	}{
		{"as received", watch.Message{Event: ev, Data: []byte(`{"id":7,"raw":true}`)},
			"id: 7\nevent: delete\ndata: {\"id\":7,\"raw\":true}\n\n"},
		{"encoded", watch.Message{Event: ev},
			"id: 7\nevent: delete\ndata: {\"id\":7,\"type\":\"delete\",\"namespace\":\"ns\",\"key\":\"a/b\",\"timestamp\":5}\n\n"},
		{"data with a newline is encoded again", watch.Message{Event: ev, Data: []byte("{\"id\":7,\n\"x\":1}")},
			"id: 7\nevent: delete\ndata: {\"id\":7,\"type\":\"delete\",\"namespace\":\"ns\",\"key\":\"a/b\",\"timestamp\":5}\n\n"},
		{"reset", watch.Message{Event: store.Event{ID: 9}, Reset: `lost "x"`},
			"id: 9\nevent: reset\ndata: {\"reason\":\"lost \\\"x\\\"\"}\n\n"},
		{"reset without an id", watch.Message{Reset: "r"},
			"event: reset\ndata: {\"reason\":\"r\"}\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(watch.AppendFrame([]byte("x"), tc.m)); got != "x"+tc.want {
				t.Errorf("got %q\nwant %q", got, "x"+tc.want)
			}
		})
	}
}

// PollSSEUpTo takes a backlog in bounded rounds, leaving the rest in the
// group's ring: the rounds together are exactly what PollSSE takes at once.
func TestPollSSEUpToTakesABacklogInBoundedRounds(t *testing.T) {
	r := newRig(t, redistest.Mini(t), rigOptions{buffer: 1 << 10})
	f := func() watch.Filter { return watch.Filter{Namespace: "ns", Pattern: mustGlob(t, "tasks/*")} }
	whole, rounds := mustWatch(t, r.hub, f(), 0), mustWatch(t, r.hub, f(), 0)
	const events = 200
	for i := range events {
		r.put("ns", fmt.Sprintf("tasks/T%d", i%7), i)
	}
	r.waitDelivered()

	want := pollSSE(t, whole)
	if n := bytes.Count(want, []byte("\n\n")); n != events {
		t.Fatalf("PollSSE took %d events, want %d", n, events)
	}
	const limit = 1 << 10
	frame := len(want) / events
	var got []byte
	for round := 0; ; round++ {
		if round > events {
			t.Fatal("PollSSEUpTo never said it was done")
		}
		b, more, err := rounds.PollSSEUpTo(context.Background(), nil, limit)
		if err != nil {
			t.Fatal(err)
		}
		// At most one batch of 32 events beyond the limit.
		if len(b) > limit+32*(frame+16) {
			t.Errorf("round %d: %d bytes, limit %d", round, len(b), limit)
		}
		got = append(got, b...)
		if !more {
			break
		}
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the rounds together differ from one PollSSE:\n%s\n---\n%s", got, want)
	}
	// Done: the watcher waits for the next event, and is signalled.
	select {
	case <-rounds.Ready(): // a token from the backlog
	default:
	}
	r.put("ns", "tasks/T0", "next")
	r.waitDelivered()
	select {
	case <-rounds.Ready():
	default:
		t.Error("no signal for the event after the rounds")
	}
	if b, more, err := rounds.PollSSEUpTo(context.Background(), nil, limit); err != nil || more || bytes.Count(b, []byte("\n\n")) != 1 {
		t.Errorf("after the rounds: %q, more %v, %v", b, more, err)
	}
}
