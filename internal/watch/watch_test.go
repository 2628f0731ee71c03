package watch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/glob"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/watch"
)

// recorder is a Listener that keeps everything it hears.
type recorder struct {
	mu        sync.Mutex
	events    []store.Event
	gaps      int
	connected int
	up        bool
}

func (r *recorder) Event(ev store.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) Gap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gaps++
	r.up = false
}

func (r *recorder) Connected() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connected++
	r.up = true
}

func (r *recorder) snapshot() (evs []store.Event, gaps, connected int, up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events), r.gaps, r.connected, r.up
}

func (r *recorder) lastID() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return 0
	}
	return r.events[len(r.events)-1].ID
}

// rig is a store and a hub on one backend; the hub's connection goes
// through a proxy the test can cut.
type rig struct {
	t     *testing.T
	b     redistest.Backend
	st    *store.Store
	hub   *watch.Hub
	proxy *proxy
	rec   *recorder
	stop  func()
}

type rigOptions struct {
	buffer  int
	logLen  int64
	noStart bool // the test calls start itself
	health  time.Duration
}

func newRig(t *testing.T, b redistest.Backend, o rigOptions) *rig {
	t.Helper()
	st, err := store.New(b.Client, store.Config{EventLogLen: o.logLen})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	p := startProxy(t, b.Client.Options().Addr)
	c := redis.NewClient(&redis.Options{Addr: p.addr, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	if o.health == 0 {
		o.health = 500 * time.Millisecond
	}
	r := &rig{t: t, b: b, st: st, proxy: p, rec: &recorder{},
		hub: watch.New(c, st, watch.Options{Buffer: o.buffer, HealthCheck: o.health})}
	r.hub.Listen(r.rec)
	if !o.noStart {
		r.start()
	}
	return r
}

// start runs the hub until the test ends and waits until it is connected.
func (r *rig) start() {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.hub.Run(ctx)
	}()
	r.stop = func() { cancel(); <-done }
	r.t.Cleanup(r.stop)
	r.waitUp()
}

func (r *rig) waitUp() {
	r.t.Helper()
	waitFor(r.t, 5*time.Second, "the hub to connect", func() bool { return r.hub.Stats().Connected })
}

var noExpiry = time.Duration(0)

// put writes one value (no TTL, so that no expire events interleave).
func (r *rig) put(ns, key string, v any) uint64 {
	r.t.Helper()
	b, _ := json.Marshal(v)
	res, err := r.st.Put(context.Background(), ns, key, store.PutRequest{Value: b, TTL: &noExpiry, Writer: "w1"})
	if err != nil {
		r.t.Fatalf("put %s: %v", key, err)
	}
	return res.EventID
}

// writeConcurrently runs n writers of each writes until done; key(i, j)
// names the key of writer i's j-th write.
func (r *rig) writeConcurrently(n, each int, key func(i, j int) (ns, key string)) {
	r.t.Helper()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for j := range each {
				ns, k := key(i, j)
				b, _ := json.Marshal(j)
				if _, err := r.st.Put(context.Background(), ns, k, store.PutRequest{Value: b, TTL: &noExpiry, Writer: "w1"}); err != nil {
					r.t.Errorf("put %s: %v", k, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// waitDelivered waits until the recorder heard the newest logged event.
func (r *rig) waitDelivered() uint64 {
	r.t.Helper()
	last, err := r.st.LastEventID(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	waitFor(r.t, 10*time.Second, fmt.Sprintf("event %d to be delivered", last), func() bool { return r.rec.lastID() >= last })
	return last
}

// perBackend picks a size: miniredis under the race detector is slow.
func perBackend(b redistest.Backend, real, mini int) int {
	if b.Mini != nil {
		return mini
	}
	return real
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// collect reads n messages from w, failing the test after a timeout.
func collect(t *testing.T, w *watch.Watcher, n int) []watch.Message {
	t.Helper()
	out, err := collectN(w, n)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func collectN(w *watch.Watcher, n int) ([]watch.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []watch.Message
	for len(out) < n {
		m, err := w.Next(ctx)
		if err != nil {
			return out, fmt.Errorf("after %d of %d messages: %w", len(out), n, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// collectUntil reads messages until one has an id >= last.
func collectUntil(t *testing.T, w *watch.Watcher, last uint64) []watch.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []watch.Message
	for {
		m, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("after %d messages, waiting for id %d: %v", len(out), last, err)
		}
		out = append(out, m)
		if m.Event.ID >= last {
			return out
		}
	}
}

// assertNothingMore checks that w holds no further message.
func assertNothingMore(t *testing.T, w *watch.Watcher) {
	t.Helper()
	time.Sleep(20 * time.Millisecond)
	if more, err := w.Poll(context.Background(), nil); len(more) > 0 || err != nil {
		t.Errorf("unexpected extra messages %v (err %v)", more, err)
	}
}

// assertConsecutive checks that evs are exactly the ids from..to, in order.
func assertConsecutive(t *testing.T, ids []uint64, from, to uint64) {
	t.Helper()
	if uint64(len(ids)) != to-from+1 {
		t.Errorf("got %d events, want ids %d..%d (%d)", len(ids), from, to, to-from+1)
	}
	for i, id := range ids {
		if id != from+uint64(i) {
			t.Fatalf("event #%d has id %d, want %d (duplicate, gap or disorder)", i, id, from+uint64(i))
		}
	}
}

func ids(msgs []watch.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Event.ID
	}
	return out
}

func eventIDs(evs []store.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.ID
	}
	return out
}

func resets(msgs []watch.Message) int {
	n := 0
	for _, m := range msgs {
		if m.Reset != "" {
			n++
		}
	}
	return n
}

func mustGlob(t *testing.T, p string) *glob.Pattern {
	t.Helper()
	g, err := glob.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func mustWatch(t *testing.T, h *watch.Hub, f watch.Filter, last uint64) *watch.Watcher {
	t.Helper()
	w, err := h.Watch(context.Background(), f, last)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w
}

func TestHubDeliversEveryEventOnceInOrderAndFilters(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		r := newRig(t, b, rigOptions{buffer: 1 << 16}) // read at the end
		filters := map[string]watch.Filter{
			"everything in ns": {Namespace: "ns"},
			"task states":      {Namespace: "ns", Pattern: mustGlob(t, "tasks/*/state")},
			"task subtree":     {Namespace: "ns", Pattern: mustGlob(t, "tasks/**")},
			"worker regex":     {Namespace: "ns", Regexp: regexp.MustCompile(`^workers/w[0-3]/status$`)},
			"other namespace":  {Namespace: "other"},
			"all namespaces":   {},
		}
		watchers := map[string]*watch.Watcher{}
		for name, f := range filters {
			watchers[name] = mustWatch(t, r.hub, f, 0)
		}
		r.writeConcurrently(8, 40, func(i, j int) (string, string) {
			ns := "ns"
			if j%10 == 9 {
				ns = "other"
			}
			switch j % 3 {
			case 0:
				return ns, fmt.Sprintf("tasks/T%d/state", j%5)
			case 1:
				return ns, fmt.Sprintf("tasks/T%d/agents/a%d", j%5, i)
			}
			return ns, fmt.Sprintf("workers/w%d/status", i)
		})
		// A control event reaches listeners, never watchers.
		if err := r.st.Publish(context.Background(), &store.Event{Type: store.EventInvalidate, Namespace: "ns", Value: json.RawMessage(`{"pattern":"**"}`)}); err != nil {
			t.Fatal(err)
		}
		last := r.waitDelivered()
		evs, gaps, _, _ := r.rec.snapshot()
		assertConsecutive(t, eventIDs(evs), 1, last)
		if gaps != 0 {
			t.Errorf("%d gaps on a healthy subscription", gaps)
		}
		if evs[len(evs)-1].Type != store.EventInvalidate {
			t.Errorf("the listener did not hear the control event: %+v", evs[len(evs)-1])
		}
		for name, f := range filters {
			var want []uint64
			for _, ev := range evs {
				if f.Match(ev) {
					want = append(want, ev.ID)
				}
			}
			got := ids(collect(t, watchers[name], len(want)))
			if !slices.Equal(got, want) {
				t.Errorf("%s: got ids %v, want %v", name, got, want)
			}
			assertNothingMore(t, watchers[name])
		}
	})
}

func TestHubFillsTheGapAfterTheSubscriptionBreaks(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		r := newRig(t, b, rigOptions{buffer: 1 << 16}) // read at the end
		all := mustWatch(t, r.hub, watch.Filter{}, 0)
		var stop atomic.Bool
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				for j := 0; !stop.Load(); j++ {
					r.put("ns", fmt.Sprintf("k%d/%d", i, j%20), j)
				}
			})
		}
		for i := range 4 {
			time.Sleep(30 * time.Millisecond)
			_, _, before, _ := r.rec.snapshot()
			if i%2 == 1 && b.Real != nil {
				// What an operator (or a failover) does to the instance.
				n, err := b.Client.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Result()
				if err != nil || n == 0 {
					t.Fatalf("CLIENT KILL TYPE pubsub: %d killed, %v", n, err)
				}
			} else {
				r.proxy.cut(true) // and keep it down while writes go on
				time.Sleep(50 * time.Millisecond)
				r.proxy.restore()
			}
			waitFor(t, 5*time.Second, "the hub to reconnect", func() bool {
				_, _, connected, up := r.rec.snapshot()
				return up && connected > before
			})
		}
		stop.Store(true)
		wg.Wait()
		last := r.waitDelivered()
		evs, gaps, connected, _ := r.rec.snapshot()
		assertConsecutive(t, eventIDs(evs), 1, last)
		if gaps < 4 || connected < 5 {
			t.Errorf("gaps %d, connected %d: want every break heard (4) and every reconnection (5)", gaps, connected)
		}
		msgs := collectUntil(t, all, last)
		if n := resets(msgs); n != 0 {
			t.Errorf("%d resets although every missed event was still in the log", n)
		}
		assertConsecutive(t, ids(msgs), 1, last)
		t.Logf("%d events across 4 breaks", last)
	})
}

func TestHubPingsAnIdleSubscriptionAndNoticesADeadOne(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		const health = 100 * time.Millisecond
		r := newRig(t, b, rigOptions{health: health})
		first := r.put("ns", "k", 1)
		time.Sleep(5 * health) // idle: pinged, answered
		if _, gaps, _, up := r.rec.snapshot(); gaps != 0 || !up {
			t.Fatalf("idle subscription: %d gaps, up %v; the pings went unanswered", gaps, up)
		}
		// A partition: the connection stays open but nothing gets through.
		r.proxy.blackhole()
		missed := r.put("ns", "k", 2)
		waitFor(t, 20*health, "the hub to notice the dead subscription", func() bool {
			_, gaps, _, _ := r.rec.snapshot()
			return gaps > 0
		})
		r.waitUp()
		last := r.put("ns", "k", 3)
		r.waitDelivered()
		evs, _, _, _ := r.rec.snapshot()
		assertConsecutive(t, eventIDs(evs), first, last)
		if missed != first+1 {
			t.Errorf("ids %d, %d", first, missed)
		}
	})
}

func TestHubResetsWhenTheLogNoLongerHoldsMissedEvents(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		r := newRig(t, b, rigOptions{logLen: 10})
		w := mustWatch(t, r.hub, watch.Filter{}, 0)
		first := r.put("ns", "a", 0)
		if m := collect(t, w, 1)[0]; m.Event.ID != first {
			t.Fatalf("got %+v, want event %d", m, first)
		}
		r.proxy.cut(true)
		waitFor(t, 5*time.Second, "the hub to notice", func() bool { return !r.hub.Stats().Connected })
		// Redis trims the stream by whole nodes (100 entries by default):
		// write well past that. miniredis trims exactly.
		r.writeConcurrently(8, perBackend(b, 100, 15), func(i, j int) (string, string) { return "ns", fmt.Sprintf("k%d", i) })
		r.proxy.restore()
		r.waitUp()
		after := r.put("ns", "b", 1)
		r.waitDelivered()

		msgs := collectUntil(t, w, after)
		if len(msgs) < 2 || msgs[0].Reset == "" {
			t.Fatalf("got %v, want a reset, then the events the log still held", msgs)
		}
		assertConsecutive(t, ids(msgs[1:]), msgs[0].Event.ID+1, after)
		_, gaps, _, up := r.rec.snapshot()
		if gaps < 2 || !up {
			t.Errorf("listener: %d gaps (want the break and the loss), up %v", gaps, up)
		}
		t.Logf("reset: %q at id %d", msgs[0].Reset, msgs[0].Event.ID)
	})
}

func TestSlowWatcherIsResetWithoutSlowingAnyoneElse(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		const buffer, writers, each = 256, 16, 20 // a buffer well below the writes
		r := newRig(t, b, rigOptions{buffer: buffer})
		slow := mustWatch(t, r.hub, watch.Filter{}, 0) // never read until the end
		fast := mustWatch(t, r.hub, watch.Filter{}, 0)
		got := make(chan []watch.Message, 1)
		go func() {
			msgs, err := collectN(fast, writers*each)
			if err != nil {
				t.Error(err)
			}
			got <- msgs
		}()

		start := time.Now()
		r.writeConcurrently(writers, each, func(i, j int) (string, string) { return "ns", fmt.Sprintf("k%d", i) })
		took := time.Since(start)
		last := r.waitDelivered()

		fastMsgs := <-got
		if n := resets(fastMsgs); n != 0 {
			t.Errorf("the fast watcher got %d resets", n)
		}
		assertConsecutive(t, ids(fastMsgs), 1, last)

		slowMsgs, err := slow.Poll(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(slowMsgs) == 0 || slowMsgs[0].Reset == "" || len(slowMsgs) > buffer {
			t.Fatalf("slow watcher holds %d messages, first %+v: want a reset first, and at most %d", len(slowMsgs), slowMsgs[0], buffer)
		}
		// After the reset, events resume right after its id, in order.
		assertConsecutive(t, ids(slowMsgs[1:]), slowMsgs[0].Event.ID+1, last)
		if st := r.hub.Stats(); st.Resets == 0 {
			t.Errorf("stats: %+v", st)
		}
		t.Logf("%d writes in %s (%.0f/s) with a stalled watcher; it holds a reset at %d and %d events",
			writers*each, took.Round(time.Millisecond), float64(writers*each)/took.Seconds(), slowMsgs[0].Event.ID, len(slowMsgs)-1)
	})
}

func TestResumeReplaysThenJoinsLiveExactlyOnce(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		r := newRig(t, b, rigOptions{buffer: 1 << 16}) // read at the end
		r.writeConcurrently(4, perBackend(b, 150, 100), func(i, j int) (string, string) { return "ns", fmt.Sprintf("tasks/T%d/state", j%7) })
		before := r.waitDelivered()
		// Resume from several points while writes go on, so that replay
		// and live delivery overlap.
		type resumed struct {
			after uint64
			w     *watch.Watcher
		}
		var ws []resumed
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.writeConcurrently(4, perBackend(b, 100, 50), func(i, j int) (string, string) { return "ns", fmt.Sprintf("tasks/T%d/state", j%7) })
		}()
		for _, after := range []uint64{1, before / 2, before - 1, before} {
			ws = append(ws, resumed{after, mustWatch(t, r.hub, watch.Filter{Namespace: "ns", Pattern: mustGlob(t, "tasks/**")}, after)})
			time.Sleep(5 * time.Millisecond)
		}
		states := mustWatch(t, r.hub, watch.Filter{Namespace: "ns", Pattern: mustGlob(t, "tasks/T3/state")}, 10)
		<-done
		last := r.waitDelivered()
		for _, rw := range ws {
			msgs := collectUntil(t, rw.w, last)
			if n := resets(msgs); n != 0 {
				t.Errorf("resume after %d: %d resets", rw.after, n)
			}
			assertConsecutive(t, ids(msgs), rw.after+1, last)
			assertNothingMore(t, rw.w)
		}
		evs, _, _, _ := r.rec.snapshot()
		var want []uint64
		for _, ev := range evs {
			if ev.ID > 10 && ev.Key == "tasks/T3/state" {
				want = append(want, ev.ID)
			}
		}
		if got := ids(collect(t, states, len(want))); !slices.Equal(got, want) {
			t.Errorf("filtered resume: got %v, want %v", got, want)
		}
	})
}

func TestResumeStartsWithResetWhenTheIDIsGone(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		r := newRig(t, b, rigOptions{logLen: 10})
		r.writeConcurrently(8, perBackend(b, 100, 15), func(i, j int) (string, string) { return "ns", fmt.Sprintf("k%d", i) })
		last := r.waitDelivered()
		for name, after := range map[string]uint64{"trimmed": 1, "never reached": last + 1000} {
			t.Run(name, func(t *testing.T) {
				w := mustWatch(t, r.hub, watch.Filter{}, after)
				m := collect(t, w, 1)[0]
				if m.Reset == "" {
					t.Fatalf("first message %+v, want a reset", m)
				}
				next := r.put("ns", "after", name)
				if m2 := collect(t, w, 1)[0]; m2.Event.ID != next || m2.Reset != "" {
					t.Errorf("after the reset: %+v, want event %d", m2, next)
				}
				t.Logf("reset at %d: %s", m.Event.ID, m.Reset)
			})
		}
	})
}

func TestWatchBeforeTheHubStartsMissesNothing(t *testing.T) {
	r := newRig(t, redistest.Mini(t), rigOptions{noStart: true})
	r.put("ns", "before", 0)
	w := mustWatch(t, r.hub, watch.Filter{}, 0)
	first := r.put("ns", "k", 1)
	r.put("ns", "k", 2)
	r.start()
	last := r.put("ns", "k", 3)
	msgs := collectUntil(t, w, last)
	assertConsecutive(t, ids(msgs), first, last)
}

func TestStoppedHubClosesWatchers(t *testing.T) {
	r := newRig(t, redistest.Mini(t), rigOptions{})
	w := mustWatch(t, r.hub, watch.Filter{}, 0)
	id := r.put("ns", "k", 1)
	r.waitDelivered()
	r.stop()
	if m := collect(t, w, 1)[0]; m.Event.ID != id {
		t.Errorf("buffered message %+v, want event %d", m, id)
	}
	if _, err := w.Next(context.Background()); !errors.Is(err, watch.ErrClosed) {
		t.Errorf("Next after stop: %v, want ErrClosed", err)
	}
	if _, err := r.hub.Watch(context.Background(), watch.Filter{}, 0); !errors.Is(err, watch.ErrClosed) {
		t.Errorf("Watch after stop: %v, want ErrClosed", err)
	}
	if _, _, _, up := r.rec.snapshot(); up {
		t.Error("listener still thinks the hub is up")
	}
}

func TestWatcherClosesWithItsContext(t *testing.T) {
	r := newRig(t, redistest.Mini(t), rigOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	w, err := r.hub.Watch(ctx, watch.Filter{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-w.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("watcher still open after its context ended")
	}
	if n := r.hub.Stats().Watchers; n != 0 {
		t.Errorf("%d watchers registered", n)
	}
}

// A big batch is published as a brief message (keys only; the log holds
// the events). Listeners must hear every event of it, and watchers must
// get the events whole, from the log.
func TestBriefMessagesReachListenersAndWholeEventsReachWatchers(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		r := newRig(t, b, rigOptions{buffer: 1 << 12})
		sub := b.Client.Subscribe(context.Background(), store.ChangeChannel)
		defer sub.Close()
		if _, err := sub.Receive(context.Background()); err != nil {
			t.Fatal(err)
		}
		value := json.RawMessage(`"` + strings.Repeat("v", 300) + `"`)
		batch := func(round int) {
			t.Helper()
			ops := make([]store.BatchOp, 60)
			for i := range ops {
				ops[i] = store.BatchOp{Kind: store.OpPut, Namespace: "ns", Key: fmt.Sprintf("big/r%d/k%d", round, i),
					PutRequest: store.PutRequest{Value: value, TTL: &noExpiry, Writer: "w1"}}
			}
			res, err := r.st.Batch(context.Background(), ops, false)
			if err != nil {
				t.Fatal(err)
			}
			for i, x := range res {
				if x.Err != nil {
					t.Fatalf("op %d: %v", i, x.Err)
				}
			}
			m, err := sub.ReceiveMessage(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(m.Payload, "#") || len(m.Payload) > 4<<10 {
				t.Fatalf("a batch of 60 × 300 bytes was published as %d bytes starting %.40q, want a brief", len(m.Payload), m.Payload)
			}
		}

		// No watcher: listeners hear the brief's events at once.
		batch(0)
		last := r.waitDelivered()
		evs, gaps, _, _ := r.rec.snapshot()
		assertConsecutive(t, eventIDs(evs), 1, last)
		if gaps != 0 || len(evs) != 60 || evs[59].Key != "big/r0/k59" || evs[59].Type != store.EventPut || evs[59].Namespace != "ns" {
			t.Fatalf("listener heard %d events (%d gaps), the last %+v", len(evs), gaps, evs[len(evs)-1])
		}

		// A watcher: it gets the 60 events whole, from the log.
		w := mustWatch(t, r.hub, watch.Filter{Namespace: "ns", Pattern: mustGlob(t, "big/**")}, last)
		batch(1)
		msgs := collect(t, w, 60)
		assertConsecutive(t, ids(msgs), last+1, last+60)
		for i, m := range msgs {
			ev, err := store.ParseEvent(string(m.Data)) // what the SSE stream sends
			if err != nil || m.Reset != "" || ev.Key != fmt.Sprintf("big/r1/k%d", i) || ev.ID != m.Event.ID ||
				string(ev.Value) != string(value) || ev.Version.String() != "w1=1" || ev.Writer != "w1" || ev.Timestamp == 0 {
				t.Fatalf("message %d = %+v (%v), want the whole put event", i, m, err)
			}
		}
		assertNothingMore(t, w)

		// Batches back to back: the hub reads on to the end of the log, and
		// skips the briefs it has read ahead of. Still each event once.
		for round := 2; round <= 6; round++ {
			batch(round)
		}
		msgs = collect(t, w, 300)
		assertConsecutive(t, ids(msgs), last+61, last+360)
		assertNothingMore(t, w)
		if evs, gaps, _, _ := r.rec.snapshot(); gaps != 0 || len(evs) != 420 {
			t.Errorf("listener: %d events, %d gaps; want 420, 0", len(evs), gaps)
		}
	})
}

// A watcher that keeps up gets every event of the largest batches, sent
// back to back, with the default buffer: the hub hands a batch's events
// over at once (a page of the log at a time), faster than any watcher
// takes them, so a buffer smaller than a batch would reset watchers that
// are not slow at all.
func TestLargestBatchesReachAWatcherWithTheDefaultBuffer(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		r := newRig(t, b, rigOptions{})
		w := mustWatch(t, r.hub, watch.Filter{Namespace: "ns", Pattern: mustGlob(t, "max/**")}, 0)
		before, err := r.st.LastEventID(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		first := before + 1
		for round := range 2 {
			ops := make([]store.BatchOp, store.MaxBatchOps)
			for i := range ops {
				ops[i] = store.BatchOp{Kind: store.OpPut, Namespace: "ns", Key: fmt.Sprintf("max/r%d/k%d", round, i),
					PutRequest: store.PutRequest{Value: json.RawMessage(`{"n":1}`), TTL: &noExpiry, Writer: "w1"}}
			}
			res, err := r.st.Batch(context.Background(), ops, false)
			if err != nil || res[0].Err != nil {
				t.Fatalf("batch: %v", err)
			}
		}
		msgs, err := collectN(w, 2*store.MaxBatchOps)
		for _, m := range msgs {
			if m.Reset != "" {
				t.Fatalf("reset after %d events: %s", m.Event.ID-first, m.Reset)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		assertConsecutive(t, ids(msgs), first, first+2*store.MaxBatchOps-1)
		assertNothingMore(t, w)
	})
}

// A filter's Types let through only those kinds of change, live and when
// resuming from the log; watchers that differ only in Types do not share
// a group's events.
func TestTypesFilterLiveAndOnResume(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		r := newRig(t, b, rigOptions{buffer: 1 << 10})
		ctx := context.Background()
		gone, _ := watch.TypesOf(store.EventDelete, store.EventExpire)
		puts, _ := watch.TypesOf(store.EventPut)
		if _, ok := watch.TypesOf(store.EventPut, store.EventInvalidate); ok {
			t.Errorf("TypesOf took a control event's type for a kind of change")
		}
		pattern := mustGlob(t, "workers/*/heartbeat")
		filters := map[string]watch.Filter{
			"every kind":        {Namespace: "ns", Pattern: pattern},
			"deletes, expiries": {Namespace: "ns", Pattern: pattern, Types: gone},
			"puts":              {Namespace: "ns", Pattern: pattern, Types: puts},
			"expiries anywhere": {Types: gone &^ typesOf(t, store.EventDelete)},
		}
		live := map[string]*watch.Watcher{}
		for name, f := range filters {
			live[name] = mustWatch(t, r.hub, f, 0)
		}
		first := r.put("ns", "workers/w0/heartbeat", 0)
		for i := range 6 {
			key := fmt.Sprintf("workers/w%d/heartbeat", i%3)
			switch i % 3 {
			case 0, 1:
				r.put("ns", key, i)
			default:
				if _, err := r.st.Delete(ctx, "ns", key, store.DeleteRequest{}); err != nil && !errors.Is(err, store.ErrNotFound) {
					t.Fatal(err)
				}
			}
			// An expiry, as the sweeper announces one.
			if err := r.st.Publish(ctx, &store.Event{Type: store.EventExpire, Namespace: "ns", Key: key, Timestamp: 1}); err != nil {
				t.Fatal(err)
			}
		}
		last := r.waitDelivered()
		evs, _, _, _ := r.rec.snapshot()
		for name, f := range filters {
			var want []uint64 // after first: what a watcher resumed after it gets
			for _, ev := range evs {
				if ev.ID > first && f.Match(ev) {
					want = append(want, ev.ID)
				}
			}
			if len(want) == 0 || len(want) == int(last-first) && f.Types != 0 {
				t.Fatalf("%s: %d of %d events match: the test needs some but not all", name, len(want), last-first)
			}
			wantLive := want
			if i := slices.IndexFunc(evs, func(ev store.Event) bool { return ev.ID == first }); f.Match(evs[i]) {
				wantLive = append([]uint64{first}, want...)
			}
			if got := ids(collect(t, live[name], len(wantLive))); !slices.Equal(got, wantLive) {
				t.Errorf("%s, live: got ids %v, want %v", name, got, wantLive)
			}
			assertNothingMore(t, live[name])
			resumed := mustWatch(t, r.hub, f, first)
			if got := ids(collect(t, resumed, len(want))); !slices.Equal(got, want) {
				t.Errorf("%s, resumed after %d: got ids %v, want %v", name, first, got, want)
			}
			assertNothingMore(t, resumed)
		}
	})
}

func typesOf(t *testing.T, kinds ...string) watch.Types {
	t.Helper()
	ts, ok := watch.TypesOf(kinds...)
	if !ok {
		t.Fatalf("TypesOf(%v) refused", kinds)
	}
	return ts
}
