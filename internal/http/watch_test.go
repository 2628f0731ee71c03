package http_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/api"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/spectest"
	"github.com/memsync/memsync/internal/testserver"
)

// newServerHarness is newHarness with the test server's options chosen by
// the caller.
func newServerHarness(t *testing.T, opts testserver.Options) *harness {
	t.Helper()
	srv := testserver.StartWith(t, opts)
	v := spectest.New(t, api.Spec)
	return &harness{t: t, url: srv.URL, client: v.Client(), backend: srv.Backend, srv: srv}
}

// settle waits until the server's hub has delivered every logged event.
func (h *harness) settle() {
	h.t.Helper()
	last, err := h.srv.Store.LastEventID(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); h.srv.Hub.Stats().LastID < last; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			h.t.Fatalf("event %d not delivered within 5 s", last)
		}
	}
}

// sseEvent is one message of a text/event-stream, or one comment.
type sseEvent struct {
	id      string
	event   string
	data    string
	comment string
}

// stream is an open GET /v1/watch.
type stream struct {
	t      *testing.T
	events chan sseEvent
	cancel func()
}

// watch opens path (a /v1/watch URL) and parses its events in the
// background; the stream is closed when the test ends.
func (h *harness) watch(path string, headers ...string) *stream {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", h.url+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := h.client.Do(req)
	if err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		h.t.Fatalf("GET %s = %d %s", path, res.StatusCode, res.Header.Get("Content-Type"))
	}
	s := &stream{t: h.t, events: make(chan sseEvent, 1024), cancel: cancel}
	go func() {
		defer close(s.events)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev != (sseEvent{}) {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.comment = strings.TrimSpace(line[1:])
			default:
				field, value, _ := strings.Cut(line, ": ")
				switch field {
				case "id":
					ev.id = value
				case "event":
					ev.event = value
				case "data":
					ev.data = value
				default:
					h.t.Errorf("unexpected stream line %q", line)
				}
			}
		}
	}()
	h.t.Cleanup(cancel)
	if first := s.next(); first.comment != "watching" {
		h.t.Fatalf("stream opened with %+v, want the comment \"watching\"", first)
	}
	return s
}

// next returns the next event or comment, failing after 5 s.
func (s *stream) next() sseEvent {
	s.t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			s.t.Fatal("stream ended")
		}
		return ev
	case <-time.After(5 * time.Second):
		s.t.Fatal("no event within 5 s")
	}
	return sseEvent{}
}

// nextEvent skips comments.
func (s *stream) nextEvent() sseEvent {
	s.t.Helper()
	for {
		if ev := s.next(); ev.comment == "" {
			return ev
		}
	}
}

// change is the data of a change event.
type change struct {
	ID        uint64          `json:"id"`
	Type      string          `json:"type"`
	Namespace string          `json:"namespace"`
	Key       string          `json:"key"`
	Version   map[string]int  `json:"version"`
	Timestamp int64           `json:"timestamp"`
	Writer    string          `json:"writer"`
	Value     json.RawMessage `json:"value"`
}

// nextChange reads the next event, checks that it is a well-formed change
// and returns it.
func (s *stream) nextChange() change {
	s.t.Helper()
	return s.parseChange(s.nextEvent())
}

// parseChange checks that ev is a well-formed change and returns it.
func (s *stream) parseChange(ev sseEvent) change {
	s.t.Helper()
	var c change
	if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
		s.t.Fatalf("event %+v: data is not JSON: %v", ev, err)
	}
	if ev.id != strconv.FormatUint(c.ID, 10) || ev.event != c.Type || c.Timestamp == 0 {
		s.t.Fatalf("event %+v: id and event lines disagree with the data", ev)
	}
	return c
}

func TestWatchStreamsMatchingChanges(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		h := newServerHarness(t, testserver.Options{Backend: &b})
		states := h.watch("/v1/watch?pattern=tasks/*/state")
		workers := h.watch("/v1/watch?regex=" + "%5Eworkers%2F.%2B%2Fstatus%24") // ^workers/.+/status$
		other := h.watch("/v1/watch?pattern=**&ns=other")

		h.must(200, "PUT", "/v1/kv/tasks/T1/progress", `{"value":{"progress":1}}`)
		h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":{"status":"running"}}`, "X-Worker-Id", "w1")
		h.must(200, "PUT", "/v1/workers/w1/status", `{"value":"idle"}`)
		h.must(204, "DELETE", "/v1/kv/tasks/T1/state", "")
		h.must(200, "PUT", "/v1/kv/tasks/T9/state?ns=other", `{"value":1}`)

		put := states.nextChange()
		if put.Type != "put" || put.Key != "tasks/T1/state" || put.Namespace != "task-sentinel" ||
			string(put.Value) != `{"status":"running"}` || put.Writer != "w1" || put.Version["w1"] != 1 {
			t.Errorf("put event = %+v", put)
		}
		del := states.nextChange()
		if del.Type != "delete" || del.Key != "tasks/T1/state" || del.ID != put.ID+2 {
			t.Errorf("delete event = %+v, want id %d", del, put.ID+2)
		}
		if w := workers.nextChange(); w.Key != "workers/w1/status" || w.ID != put.ID+1 {
			t.Errorf("regex watcher got %+v", w)
		}
		if o := other.nextChange(); o.Namespace != "other" || o.Key != "tasks/T9/state" {
			t.Errorf("namespace watcher got %+v", o)
		}
	})
}

// ?types= streams those kinds of change alone, live and resumed; the ids
// skip the others.
func TestWatchStreamsTheTypesAsked(t *testing.T) {
	h := newServerHarness(t, testserver.Options{})
	gone := h.watch("/v1/watch?pattern=workers/*/status&types=delete,expire")
	puts := h.watch("/v1/watch?pattern=workers/*/status&types=put")
	h.must(200, "PUT", "/v1/workers/w1/status", `{"value":"idle"}`)
	h.must(200, "PUT", "/v1/workers/w2/status", `{"value":"busy"}`)
	h.must(204, "DELETE", "/v1/kv/workers/w1/status", "")
	h.must(200, "PUT", "/v1/workers/w3/status", `{"value":"idle"}`)
	h.must(204, "DELETE", "/v1/kv/workers/w3/status", "")

	first := puts.nextChange()
	for i, want := range []struct {
		s       *stream
		typ     string
		key     string
		afterBy uint64 // its id after first's
	}{
		{puts, "put", "workers/w2/status", 1},
		{puts, "put", "workers/w3/status", 3},
		{gone, "delete", "workers/w1/status", 2},
		{gone, "delete", "workers/w3/status", 4},
	} {
		if c := want.s.nextChange(); c.Type != want.typ || c.Key != want.key || c.ID != first.ID+want.afterBy {
			t.Errorf("event %d: %+v, want %s of %s, id %d", i, c, want.typ, want.key, first.ID+want.afterBy)
		}
	}
	if first.Key != "workers/w1/status" {
		t.Errorf("first put: %+v", first)
	}
	resumed := h.watch("/v1/watch?pattern=workers/**&types=delete", "Last-Event-ID", strconv.FormatUint(first.ID, 10))
	if c := resumed.nextChange(); c.Type != "delete" || c.ID != first.ID+2 {
		t.Errorf("resumed: %+v, want the delete of id %d", c, first.ID+2)
	}
	if c := resumed.nextChange(); c.Type != "delete" || c.ID != first.ID+4 {
		t.Errorf("resumed: %+v, want the delete of id %d", c, first.ID+4)
	}
}

func TestWatchResumesWithLastEventID(t *testing.T) {
	h := newServerHarness(t, testserver.Options{})
	s := h.watch("/v1/watch?pattern=tasks/**")
	h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":0}`)
	seen := s.nextChange()
	s.cancel() // the client goes away...

	for i := 1; i <= 5; i++ { // ...and misses these
		h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":`+strconv.Itoa(i)+`}`)
		h.must(200, "PUT", "/v1/kv/other/x", `{"value":0}`)
	}
	for _, resume := range []*stream{
		h.watch("/v1/watch?pattern=tasks/**", "Last-Event-ID", strconv.FormatUint(seen.ID, 10)),
		h.watch("/v1/watch?pattern=tasks/**&last_event_id=" + strconv.FormatUint(seen.ID, 10)),
	} {
		for i := 1; i <= 5; i++ {
			c := resume.nextChange()
			if want := seen.ID + uint64(2*i-1); c.ID != want || string(c.Value) != strconv.Itoa(i) {
				t.Fatalf("resumed event %d = %+v, want id %d value %d", i, c, want, i)
			}
		}
		h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":"live"}`)
		if c := resume.nextChange(); string(c.Value) != `"live"` {
			t.Errorf("after the replay: %+v, want the live write", c)
		}
	}
}

func TestWatchPingsAndResets(t *testing.T) {
	h := newServerHarness(t, testserver.Options{WatchPing: 20 * time.Millisecond})
	s := h.watch("/v1/watch")
	if ev := s.next(); ev.comment != "ping" {
		t.Errorf("idle stream got %+v, want a ping comment", ev)
	}
	// An id the log never reached: the client must re-read its state.
	r := h.watch("/v1/watch", "Last-Event-ID", "999999")
	ev := r.nextEvent()
	var data map[string]string
	if err := json.Unmarshal([]byte(ev.data), &data); err != nil || ev.event != "reset" || data["reason"] == "" {
		t.Fatalf("got %+v, want event: reset with a reason", ev)
	}
	h.must(200, "PUT", "/v1/kv/k", `{"value":1}`)
	if c := r.nextChange(); c.Key != "k" {
		t.Errorf("after the reset: %+v", c)
	}
}

func TestWatchRejectsBadInput(t *testing.T) {
	h := newServerHarness(t, testserver.Options{})
	for _, tt := range []struct {
		path, header, code string
	}{
		{"/v1/watch?pattern=a//b", "", "invalid_argument"},
		{"/v1/watch?pattern=a**", "", "invalid_argument"},
		{"/v1/watch?regex=%28", "", "invalid_argument"},
		{"/v1/watch?regex=a&pattern=b", "", "invalid_argument"},
		{"/v1/watch?regex=" + strings.Repeat("a", 1025), "", "invalid_argument"},
		{"/v1/watch?last_event_id=x", "", "invalid_argument"},
		{"/v1/watch?types=put,touch", "", "invalid_argument"},
		{"/v1/watch?types=put,", "", "invalid_argument"},
		{"/v1/watch?types=PUT", "", "invalid_argument"},
		{"/v1/watch", "soon", "invalid_argument"},
		{"/v1/watch?ns=a/b", "", "invalid_key"},
	} {
		var headers []string
		if tt.header != "" {
			headers = []string{"Last-Event-ID", tt.header}
		}
		r := h.must(400, "GET", tt.path, "", headers...)
		if got := r.json(t)["code"]; got != tt.code {
			t.Errorf("GET %s: code %v, want %s", tt.path, got, tt.code)
		}
	}
}

func TestCacheServesReadsAndInvalidatesByPattern(t *testing.T) {
	h := newServerHarness(t, testserver.Options{})
	c := h.srv.Cache
	for _, k := range []string{"tasks/T1/state", "tasks/T2/state", "workers/w1/status"} {
		h.must(200, "PUT", "/v1/kv/"+k, `{"value":1}`)
		h.settle() // else the write's own event may drop the entry read next
		h.must(200, "GET", "/v1/kv/"+k, "")
		h.must(200, "GET", "/v1/kv/"+k, "")
	}
	st := c.Stats()
	if st.Hits != 3 || st.Misses != 3 || st.Entries != 3 {
		t.Fatalf("cache stats = %+v, want 3 hits, 3 misses, 3 entries", st)
	}
	h.must(200, "GET", "/v1/kv/tasks/T1/state?consistent=true", "")
	if got := c.Stats(); got.Hits != 3 || got.Misses != 3 {
		t.Errorf("a consistent read touched the cache counters: %+v", got)
	}
	// A local write is visible at once on this instance.
	h.must(200, "PUT", "/v1/kv/tasks/T1/state", `{"value":2}`)
	if v := h.must(200, "GET", "/v1/kv/tasks/T1/state", "").json(t)["value"]; v != float64(2) {
		t.Errorf("read after write = %v, want 2", v)
	}

	h.settle()
	h.must(200, "GET", "/v1/kv/tasks/T1/state", "") // cached again
	r := h.must(200, "POST", "/v1/cache/invalidate", `{"pattern":"tasks/**"}`).json(t)
	if r["invalidated"] != float64(2) {
		t.Errorf("invalidate = %v, want 2", r)
	}
	if got := c.Stats().Entries; got != 1 {
		t.Errorf("%d entries left, want 1", got)
	}
	h.must(200, "POST", "/v1/cache/invalidate?ns=other", `{"pattern":"**"}`)
	for body, code := range map[string]string{
		`{"pattern":"a//b"}`: "invalid_argument",
		`{"pattern":""}`:     "invalid_argument",
		`{}`:                 "invalid_argument",
		`{"pattern":1}`:      "invalid_json",
		`{"patern":"**"}`:    "invalid_json",
	} {
		if got := h.must(400, "POST", "/v1/cache/invalidate", body).json(t)["code"]; got != code {
			t.Errorf("POST %s: code %v, want %s", body, got, code)
		}
	}
}

// TestWatchStreamsAreUnchunkedAndIdentical checks the stream's framing on
// the wire: not chunked (it ends with the connection), and byte for byte
// the same for two watchers of one pattern, whose events are encoded once.
func TestWatchStreamsAreUnchunkedAndIdentical(t *testing.T) {
	h := newServerHarness(t, testserver.Options{})
	const writes = 5
	open := func() (*http.Response, *bufio.Reader) {
		t.Helper()
		req, err := http.NewRequest("GET", h.url+"/v1/watch?pattern=tasks/*", nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { res.Body.Close() })
		if len(res.TransferEncoding) != 0 || !res.Close || res.ContentLength != -1 {
			t.Errorf("stream framing: transfer encoding %v, close %v, length %d; want none, true, -1",
				res.TransferEncoding, res.Close, res.ContentLength)
		}
		br := bufio.NewReader(res.Body)
		head := make([]byte, len(": watching\n\n"))
		if _, err := io.ReadFull(br, head); err != nil || string(head) != ": watching\n\n" {
			t.Fatalf("stream opened with %q, %v", head, err)
		}
		return res, br
	}
	_, a := open()
	_, b := open()
	for i := range writes {
		h.must(200, "PUT", "/v1/kv/tasks/T"+strconv.Itoa(i), `{"value":{"n":`+strconv.Itoa(i)+`}}`)
	}
	read := func(br *bufio.Reader) string {
		t.Helper()
		var sb strings.Builder
		for events := 0; events < writes; {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", sb.String(), err)
			}
			sb.WriteString(line)
			if line == "\n" {
				events++
			}
		}
		return sb.String()
	}
	sa, sb := read(a), read(b)
	if sa != sb {
		t.Errorf("two watchers of one pattern got\n%s\nand\n%s", sa, sb)
	}
	if n := strings.Count(sa, "event: put\ndata: {"); n != writes {
		t.Errorf("%d put events in\n%s", n, sa)
	}
}

// A busy stream is written in rounds without waiting for a signal (see
// handleWatch): it must still ping on schedule, deliver every event in
// order, and go back to waiting once the writes stop, so that a later
// event still arrives.
func TestWatchBusyStreamPingsAndGoesQuiet(t *testing.T) {
	h := newServerHarness(t, testserver.Options{WatchPing: 30 * time.Millisecond})
	s := h.watch("/v1/watch?pattern=busy/*")
	const writes = 60
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range writes {
			h.must(200, "PUT", "/v1/kv/busy/k", `{"value":`+strconv.Itoa(i)+`}`)
			time.Sleep(3 * time.Millisecond) // about a write per flush round, or more
		}
	}()
	var pings, next int
	for next < writes {
		ev := s.next()
		if ev.comment == "ping" {
			pings++
			continue
		}
		c := s.parseChange(ev)
		if string(c.Value) != strconv.Itoa(next) {
			t.Fatalf("event %d: value %s, want %d", next, c.Value, next)
		}
		next++
	}
	<-done
	if pings == 0 {
		t.Errorf("no ping in %d events written over more than %d ms, pinging every 30 ms", writes, 3*writes)
	}
	// Quiet now: the stream waits, and wakes for the next event.
	time.Sleep(100 * time.Millisecond)
	h.must(200, "PUT", "/v1/kv/busy/k", `{"value":"late"}`)
	if c := s.nextChange(); string(c.Value) != `"late"` {
		t.Errorf("after a quiet spell: %+v", c)
	}
}
