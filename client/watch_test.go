package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
)

// sseFake serves /v1/watch: connection n (from 1) runs conns[n-1], or the
// last of conns once they run out.
func sseFake(t *testing.T, conns ...func(w http.ResponseWriter, r *http.Request)) (*fake, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		conns[min(i, len(conns)-1)](w, r)
	})
	return f, &n
}

// send opens the event stream (at the first call) and writes raw to it.
func send(w http.ResponseWriter, raw string) {
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
	}
	_, _ = io.WriteString(w, raw)
	w.(http.Flusher).Flush()
}

// hold keeps a stream open until the client goes away.
func hold(w http.ResponseWriter, r *http.Request) {
	send(w, ": watching\n\n")
	<-r.Context().Done()
}

func putEvent(id string) string {
	return "id: " + id + "\nevent: put\ndata: {\"id\":" + id + ",\"type\":\"put\",\"namespace\":\"ns\",\"key\":\"k\",\"timestamp\":1,\"writer\":\"w1\",\"value\":" + id + "}\n\n"
}

func mustWatch(t *testing.T, c *client.Client, pattern string, opts ...client.WatchOption) *client.Watch {
	t.Helper()
	w, err := c.Watch(context.Background(), pattern, opts...)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	t.Cleanup(w.Close) // before the server's Close, which waits for the stream
	return w
}

func next(t *testing.T, w *client.Watch) client.Event {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatalf("Events closed: %v", w.Err())
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event in 5 s")
	}
	return client.Event{}
}

func nextIDs(t *testing.T, w *client.Watch, n int) []uint64 {
	t.Helper()
	var ids []uint64
	for range n {
		ev := next(t, w)
		if ev.Type == client.EventReset && ev.ID == 0 {
			t.Fatalf("unexpected reset after %v: %+v", ids, ev)
		}
		ids = append(ids, ev.ID)
	}
	return ids
}

func closed(t *testing.T, w *client.Watch) {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if ok {
			t.Fatalf("event %+v, want Events closed", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Events not closed in 5 s")
	}
}

// errorLog collects what OnWatchError reports.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) add(err error) { l.mu.Lock(); l.errs = append(l.errs, err); l.mu.Unlock() }

func (l *errorLog) get() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// TestWatchParsesStream feeds one stream with everything the format allows:
// a byte order mark, comments (pings), CRLF, LF and CR line ends, data split
// over lines, an unknown field, an event without an event field, a reset,
// and a message cut off by nothing after it.
func TestWatchParsesStream(t *testing.T) {
	stream := "\uFEFF: watching\r\n\r\n" +
		"retry: 20\r\n" +
		"id: 17\r\nevent: put\r\ndata: {\"id\":17,\"type\":\"put\",\"namespace\":\"ns\",\"key\":\"tasks/T1/state\",\"version\":{\"w1\":3},\"timestamp\":1764170000000,\"writer\":\"w1\",\"value\":{\"status\":\"done\"}}\r\n\r\n" +
		": ping\n\n" +
		"id: 18\nevent: delete\ndata: {\"id\":18,\ndata:\"type\":\"delete\",\"namespace\":\"ns\",\ndata:  \"key\":\"tasks/T1/state\",\"timestamp\":1764170000120}\nunknown: field\n\n" +
		"\n\n" + // blank lines dispatch nothing
		"id: 19\revent: expire\rdata: {\"id\":19,\"type\":\"expire\",\"namespace\":\"ns\",\"key\":\"workers/w2/heartbeat\",\"timestamp\":1764170001000}\r\r" +
		"id: 20\ndata: {\"id\":20,\"type\":\"put\",\"namespace\":\"ns\",\"key\":\"tasks/T2/state\",\"timestamp\":1764170002000,\"writer\":\"w2\",\"value\":null}\n\n" +
		": ping\n\n" +
		"id: 21\nevent: reset\ndata: {\"reason\":\"fell behind\"}\n\n" +
		"id: 22\nevent: put\ndata: {\"id\":22}\n" // never dispatched: no blank line
	f, _ := sseFake(t, func(w http.ResponseWriter, r *http.Request) {
		send(w, stream)
		<-r.Context().Done()
	})
	c := mustNew(t, f.URL, client.WithNamespace("ns"), client.WithWorkerID("monitor"))
	w := mustWatch(t, c, "tasks/*/state", client.FromEventID(16))

	want := []client.Event{
		{ID: 17, Type: "put", Namespace: "ns", Key: "tasks/T1/state", Version: map[string]uint64{"w1": 3},
			Timestamp: time.UnixMilli(1764170000000), Writer: "w1", Value: json.RawMessage(`{"status":"done"}`)},
		{ID: 18, Type: "delete", Namespace: "ns", Key: "tasks/T1/state", Timestamp: time.UnixMilli(1764170000120)},
		{ID: 19, Type: "expire", Namespace: "ns", Key: "workers/w2/heartbeat", Timestamp: time.UnixMilli(1764170001000)},
		{ID: 20, Type: "put", Namespace: "ns", Key: "tasks/T2/state", Timestamp: time.UnixMilli(1764170002000), Writer: "w2", Value: json.RawMessage(`null`)},
		{ID: 21, Type: "reset", Reason: "fell behind"},
	}
	for i, want := range want {
		if got := next(t, w); !reflect.DeepEqual(got, want) {
			t.Errorf("event %d = %+v\nwant %+v", i, got, want)
		}
	}
	select {
	case ev := <-w.Events():
		t.Errorf("event %+v from a message not ended by a blank line", ev)
	case <-time.After(50 * time.Millisecond):
	}

	req := f.requests()[0]
	if req.Method != http.MethodGet || req.Path != "/v1/watch" || req.Query != "ns=ns&pattern=tasks%2F%2A%2Fstate" {
		t.Errorf("request = %s %s?%s", req.Method, req.Path, req.Query)
	}
	for h, v := range map[string]string{"Accept": "text/event-stream", "Last-Event-ID": "16", "X-Worker-Id": "monitor"} {
		if got := req.Header.Get(h); got != v {
			t.Errorf("%s = %q, want %q", h, got, v)
		}
	}

	var v struct{ Status string }
	if err := want[0].Decode(&v); err != nil || v.Status != "done" {
		t.Errorf("Decode = %+v, %v", v, err)
	}
	if err := want[1].Decode(&v); err == nil {
		t.Error("Decode of a delete: no error")
	}

	w.Close()
	closed(t, w)
	if err := w.Err(); err != nil {
		t.Errorf("Err after Close = %v, want nil", err)
	}
	w.Close() // twice is fine
}

func TestWatchRegex(t *testing.T) {
	f, _ := sseFake(t, hold)
	w := mustWatch(t, mustNew(t, f.URL), "", client.Regex(`^tasks/[^/]+/(state|progress)$`))
	w.Close()
	if got, want := f.requests()[0].Query, "regex=%5Etasks%2F%5B%5E%2F%5D%2B%2F%28state%7Cprogress%29%24"; got != want {
		t.Errorf("query = %q, want %q", got, want)
	}
	if h := f.requests()[0].Header.Get("Last-Event-ID"); h != "" {
		t.Errorf("Last-Event-ID = %q on a fresh watch", h)
	}
}

// A dropped stream is resumed after the last id seen, a server reset's
// included, with nothing lost or repeated.
func TestWatchResumes(t *testing.T) {
	var lastIDs []string
	var mu sync.Mutex
	record := func(r *http.Request) {
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		mu.Unlock()
	}
	f, conns := sseFake(t,
		func(w http.ResponseWriter, r *http.Request) {
			record(r)
			send(w, ": watching\n\n"+putEvent("1")+putEvent("2"))
		},
		func(w http.ResponseWriter, r *http.Request) {
			record(r)
			send(w, ": watching\n\n"+putEvent("3")+"id: 40\nevent: reset\ndata: {\"reason\":\"resumed after events the log no longer holds\"}\n\n")
		},
		func(w http.ResponseWriter, r *http.Request) {
			record(r)
			send(w, ": watching\n\n"+putEvent("41"))
			<-r.Context().Done()
		},
	)
	var errs errorLog
	w := mustWatch(t, mustNew(t, f.URL), "**", client.OnWatchError(errs.add))
	if got, want := nextIDs(t, w, 3), []uint64{1, 2, 3}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ids = %v, want %v", got, want)
	}
	if ev := next(t, w); ev.Type != client.EventReset || ev.ID != 40 {
		t.Fatalf("event = %+v, want the server's reset", ev)
	}
	if ev := next(t, w); ev.ID != 41 || string(ev.Value) != "41" {
		t.Fatalf("event = %+v, want 41", ev)
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}
	mu.Lock()
	if want := []string{"", "2", "40"}; !reflect.DeepEqual(lastIDs, want) {
		t.Errorf("Last-Event-ID headers = %q, want %q", lastIDs, want)
	}
	mu.Unlock()
	errList := errs.get()
	if len(errList) != 2 || !errors.Is(errList[0], io.EOF) {
		t.Errorf("OnWatchError got %v, want two ends of stream", errList)
	}
}

// A stream that drops before any event gave an id cannot be resumed: the
// caller gets a reset of the client's own.
func TestWatchResetWithoutID(t *testing.T) {
	f, _ := sseFake(t,
		func(w http.ResponseWriter, r *http.Request) {
			// An id whose message never ends does not count.
			send(w, ": watching\n\nid: 5\nevent: put\ndata: {\"id\":5}\n")
		},
		func(w http.ResponseWriter, r *http.Request) {
			if h := r.Header.Get("Last-Event-ID"); h != "" {
				problem(w, 400, "invalid_argument", map[string]any{"detail": "Last-Event-ID " + h})
				return
			}
			send(w, putEvent("6"))
			<-r.Context().Done()
		})
	w := mustWatch(t, mustNew(t, f.URL), "")
	if ev := next(t, w); ev.Type != client.EventReset || ev.ID != 0 || ev.Reason == "" {
		t.Fatalf("event = %+v, want the client's reset", ev)
	}
	if ev := next(t, w); ev.ID != 6 {
		t.Fatalf("event = %+v, want 6", ev)
	}
}

func TestWatchRetriesUnavailable(t *testing.T) {
	f, conns := sseFake(t,
		func(w http.ResponseWriter, r *http.Request) { send(w, putEvent("1")) },
		func(w http.ResponseWriter, r *http.Request) { problem(w, 503, "backend_unavailable", nil) },
		func(w http.ResponseWriter, r *http.Request) { http.Error(w, "bad gateway", http.StatusBadGateway) },
		func(w http.ResponseWriter, r *http.Request) {
			send(w, putEvent("2"))
			<-r.Context().Done()
		})
	var errs errorLog
	w := mustWatch(t, mustNew(t, f.URL), "", client.OnWatchError(errs.add))
	if got, want := nextIDs(t, w, 2), []uint64{1, 2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ids = %v, want %v", got, want)
	}
	if n := conns.Load(); n != 4 {
		t.Errorf("%d connections, want 4", n)
	}
	errList := errs.get()
	if len(errList) != 3 || !errors.Is(errList[1], client.ErrUnavailable) {
		t.Errorf("OnWatchError got %v", errList)
	}
}

func TestWatchEnds(t *testing.T) {
	t.Run("refused at once", func(t *testing.T) {
		f, _ := sseFake(t, func(w http.ResponseWriter, r *http.Request) { problem(w, 400, "invalid_argument", nil) })
		w, err := mustNew(t, f.URL).Watch(context.Background(), "tasks/[")
		if w != nil || !errors.Is(err, client.ErrInvalid) {
			t.Fatalf("Watch = %v, %v; want ErrInvalid", w, err)
		}
	})
	t.Run("not an event stream", func(t *testing.T) {
		f, _ := sseFake(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]any{}) })
		w, err := mustNew(t, f.URL).Watch(context.Background(), "")
		if w != nil || err == nil || !strings.Contains(err.Error(), "Content-Type") {
			t.Fatalf("Watch = %v, %v; want an error about the content type", w, err)
		}
	})
	t.Run("reconnect refused", func(t *testing.T) {
		f, conns := sseFake(t,
			func(w http.ResponseWriter, r *http.Request) { send(w, putEvent("1")) },
			func(w http.ResponseWriter, r *http.Request) { problem(w, 403, "forbidden", nil) })
		w := mustWatch(t, mustNew(t, f.URL), "")
		next(t, w)
		closed(t, w)
		if err := w.Err(); !errors.Is(err, client.ErrForbidden) {
			t.Errorf("Err = %v, want ErrForbidden", err)
		}
		if n := conns.Load(); n != 2 {
			t.Errorf("%d connections, want 2: a 4xx is not retried", n)
		}
	})
	t.Run("malformed event", func(t *testing.T) {
		f, conns := sseFake(t, func(w http.ResponseWriter, r *http.Request) {
			send(w, "id: 1\nevent: put\ndata: {not json\n\n")
			<-r.Context().Done()
		})
		w := mustWatch(t, mustNew(t, f.URL), "")
		closed(t, w)
		if err := w.Err(); err == nil || !strings.Contains(err.Error(), "bad event stream") {
			t.Errorf("Err = %v, want a bad stream", err)
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		f, _ := sseFake(t, hold)
		ctx, cancel := context.WithCancel(context.Background())
		w, err := mustNew(t, f.URL).Watch(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		cancel()
		closed(t, w)
		if err := w.Err(); !errors.Is(err, context.Canceled) {
			t.Errorf("Err = %v, want context.Canceled", err)
		}
	})
	t.Run("context ends while reconnecting", func(t *testing.T) {
		f, _ := sseFake(t,
			func(w http.ResponseWriter, r *http.Request) { send(w, putEvent("1")) },
			func(w http.ResponseWriter, r *http.Request) { problem(w, 503, "backend_unavailable", nil) })
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		w, err := mustNew(t, f.URL).Watch(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		next(t, w)
		closed(t, w)
		if err := w.Err(); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Err = %v, want context.DeadlineExceeded", err)
		}
	})
}

// A stream on which nothing arrives, not even a ping, is reconnected; one
// that pings is not.
func TestWatchIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	f, conns := sseFake(t,
		func(w http.ResponseWriter, r *http.Request) {
			send(w, putEvent("1"))
			<-r.Context().Done() // then silence
		},
		func(w http.ResponseWriter, r *http.Request) {
			send(w, putEvent("2"))
			pings(w, r)
		})
	var errs errorLog
	w := mustWatch(t, mustNew(t, f.URL), "", client.WatchIdleTimeout(idle), client.OnWatchError(errs.add))
	if got, want := nextIDs(t, w, 2), []uint64{1, 2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ids = %v, want %v", got, want)
	}
	if errList := errs.get(); len(errList) != 1 || !strings.Contains(errList[0].Error(), "nothing received for 300ms") {
		t.Errorf("OnWatchError got %v", errList)
	}
	time.Sleep(2 * idle) // pings keep the second stream
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// A caller that takes its time over an event is not a silent stream,
// though the pings that come meanwhile wait unread.
func TestWatchSlowReaderIsNotIdle(t *testing.T) {
	const idle = 150 * time.Millisecond
	f, conns := sseFake(t, func(w http.ResponseWriter, r *http.Request) {
		send(w, putEvent("1")+putEvent("2"))
		pings(w, r)
	})
	w := mustWatch(t, mustNew(t, f.URL), "", client.WatchIdleTimeout(idle))
	next(t, w)
	time.Sleep(3 * idle) // event 2 waits for the reader
	if ev := next(t, w); ev.ID != 2 {
		t.Fatalf("event = %+v, want 2", ev)
	}
	time.Sleep(2 * idle) // time for a reconnect, had the stream been dropped
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// pings sends ": ping" every 20 ms until the client goes away.
func pings(w http.ResponseWriter, r *http.Request) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
			send(w, ": ping\n\n")
		}
	}
}
