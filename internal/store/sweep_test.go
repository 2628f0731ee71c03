package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

// collect subscribes to the change channel and returns a function that
// waits until n events of the given types have arrived (or the timeout
// passes) and returns them; other events are skipped.
func collect(t *testing.T, b redistest.Backend, types ...string) func(n int, timeout time.Duration) []store.Event {
	t.Helper()
	sub := b.Client.Subscribe(context.Background(), store.ChangeChannel)
	if _, err := sub.Receive(context.Background()); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	ch := sub.Channel()
	return func(n int, timeout time.Duration) []store.Event {
		var got []store.Event
		deadline := time.After(timeout)
		for len(got) < n {
			select {
			case m := <-ch:
				evs, err := store.ParseMessage(m.Payload)
				if err != nil {
					t.Fatal(err)
				}
				for _, ev := range evs {
					if slices.Contains(types, ev.Type) {
						got = append(got, ev)
					}
				}
			case <-deadline:
				return got
			}
		}
		return got
	}
}

func TestSweepAnnouncesEachExpiryOnceAcrossInstances(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		wait := collect(t, b, store.EventExpire)
		const n = 40
		writer := newStore(t, b, store.Config{})
		start := time.Now()
		for i := range n {
			if _, err := writer.Put(context.Background(), ns, fmt.Sprintf("workers/w%d/heartbeat", i),
				store.PutRequest{Value: json.RawMessage(`{}`), TTL: ttl(time.Second)}); err != nil {
				t.Fatal(err)
			}
		}
		mustPut(t, writer, "workers/keep/heartbeat", "w", `{}`, nil) // default TTL: not due
		// Three instances sweep concurrently, as three servers would.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var wg sync.WaitGroup
		for range 3 {
			s := newStore(t, b, store.Config{})
			wg.Go(func() { s.RunSweeper(ctx, 50*time.Millisecond, func(err error) { t.Error(err) }) })
		}
		got := wait(n, 5*time.Second)
		elapsed := time.Since(start)
		extra := wait(1, 500*time.Millisecond) // nothing announced twice
		cancel()
		wg.Wait()
		seen := map[string]int{}
		for _, ev := range append(got, extra...) {
			if ev.Type != store.EventExpire || ev.Namespace != ns {
				t.Errorf("unexpected event %+v", ev)
			}
			seen[ev.Key]++
		}
		for i := range n {
			if k := fmt.Sprintf("workers/w%d/heartbeat", i); seen[k] != 1 {
				t.Errorf("%s announced %d times, want once", k, seen[k])
			}
		}
		if len(seen) != n {
			t.Errorf("announced %d keys, want %d: %v", len(seen), n, seen)
		}
		if elapsed > 2*time.Second+500*time.Millisecond {
			t.Errorf("all expiries announced after %s; want within TTL + 1 s", elapsed)
		}
		t.Logf("%d expiries announced %s after the writes (TTL 1 s)", len(got), elapsed.Round(time.Millisecond))
	})
}

func TestRewriteOfAnExpiredKeyAnnouncesItOnce(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		wait := collect(t, b, store.EventExpire)
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		if _, err := s.Put(ctx, ns, "k", store.PutRequest{Value: json.RawMessage(`1`), TTL: ttl(time.Second)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1200 * time.Millisecond) // expired in Redis, not swept
		res, err := s.Put(ctx, ns, "k", store.PutRequest{Value: json.RawMessage(`2`), TTL: ttl(0)})
		if err != nil {
			t.Fatal(err)
		}
		got := wait(1, time.Second)
		if len(got) != 1 || got[0].Type != store.EventExpire || got[0].Key != "k" || got[0].Namespace != ns {
			t.Fatalf("events after rewriting an expired key = %+v, want one expire", got)
		}
		if got[0].Timestamp != res.Timestamp || got[0].ID != res.EventID-1 {
			t.Errorf("expire event %+v: want the rewrite's timestamp %d and the id before its put event's %d",
				got[0], res.Timestamp, res.EventID)
		}
		if evs, err := s.Sweep(ctx); err != nil || len(evs) != 0 {
			t.Errorf("sweep after the rewrite published %v (err %v), want nothing", evs, err)
		}
		// A TTL extended before expiry is never announced.
		if _, err := s.Put(ctx, ns, "k2", store.PutRequest{Value: json.RawMessage(`1`), TTL: ttl(time.Second)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, ns, "k2", store.PutRequest{Value: json.RawMessage(`1`), TTL: ttl(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1200 * time.Millisecond)
		if evs, err := s.Sweep(ctx); err != nil || len(evs) != 0 {
			t.Errorf("sweep after extending the TTL published %v (err %v), want nothing", evs, err)
		}
	})
}

func TestEventLogReplayAndGaps(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{EventLogLen: 10})
		ctx := context.Background()
		var ids []uint64
		for i := range 300 {
			ev := store.Event{Type: store.EventExpire, Namespace: ns, Key: fmt.Sprintf("k%d", i)}
			if err := s.Publish(ctx, &ev); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, ev.ID)
		}
		if !sort.SliceIsSorted(ids, func(i, j int) bool { return ids[i] < ids[j] }) || ids[len(ids)-1]-ids[0] != 299 {
			t.Fatalf("ids are not consecutive: first %d last %d", ids[0], ids[len(ids)-1])
		}
		last := ids[len(ids)-1]
		evs, complete, err := s.EventsAfter(ctx, last-3, 100)
		if err != nil || !complete || len(evs) != 3 || evs[0].ID != last-2 || evs[2].Key != "k299" {
			t.Errorf("EventsAfter(last-3) = %+v, complete %v, err %v", evs, complete, err)
		}
		if _, complete, err := s.EventsAfter(ctx, ids[0], 100); err != nil || complete {
			t.Errorf("EventsAfter(first) complete = %v (err %v); the log holds ~10, so events were trimmed", complete, err)
		}
	})
}

func TestWritesAndDeletesPublishEvents(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		wait := collect(t, b, store.EventPut, store.EventDelete)
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		res := mustPut(t, s, "ev/k", "w1", `{"a":1}`, nil)
		big := `"` + strings.Repeat("x", 20<<10) + `"`
		mustPut(t, s, "ev/big", "w1", big, nil)
		if _, err := s.Delete(ctx, ns, "ev/k", store.DeleteRequest{}); err != nil {
			t.Fatal(err)
		}
		got := wait(3, 2*time.Second)
		if len(got) != 3 {
			t.Fatalf("events = %+v, want put, put, delete", got)
		}
		put, bigPut, del := got[0], got[1], got[2]
		if put.Type != store.EventPut || put.Key != "ev/k" || put.Writer != "w1" || string(put.Value) != `{"a":1}` ||
			put.Version.String() != "w1=1" || put.ID != res.EventID {
			t.Errorf("put event = %+v (put returned event id %d)", put, res.EventID)
		}
		if bigPut.Writer != "w1" || bigPut.Timestamp == 0 || bigPut.Version.String() != "w1=1" {
			t.Errorf("big put event = %+v, want its version, timestamp and writer", bigPut)
		}
		if bigPut.Value != nil {
			t.Errorf("a 20 KiB value rode in its event (%d bytes); events carry values up to 16 KiB", len(bigPut.Value))
		}
		if del.Type != store.EventDelete || del.Key != "ev/k" || del.Namespace != ns || del.Timestamp < put.Timestamp ||
			del.ID != bigPut.ID+1 || bigPut.ID != put.ID+1 {
			t.Errorf("delete event = %+v after ids %d, %d", del, put.ID, bigPut.ID)
		}
		// The log replays what was published.
		logged, complete, err := s.EventsAfter(ctx, put.ID-1, 10)
		if err != nil || !complete || len(logged) != 3 || logged[2].Type != store.EventDelete {
			t.Errorf("EventsAfter = %+v, %v, %v", logged, complete, err)
		}
	})
}

// TestGroupCommitUnderConcurrency writes from many goroutines at once, so
// the committer batches them, and checks that every write is answered with
// its own result, in Redis, with its own event.
func TestGroupCommitUnderConcurrency(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{Committers: 2, MaxCommitBatch: 16})
		ctx := context.Background()
		const n = 400
		var wg sync.WaitGroup
		results := make([]store.PutResult, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				results[i], errs[i] = s.Put(ctx, ns, fmt.Sprintf("gc/k%d", i%50), store.PutRequest{
					Value: json.RawMessage(fmt.Sprintf(`%d`, i)), Writer: fmt.Sprintf("w%d", i)})
			})
		}
		wg.Wait()
		ids := map[uint64]bool{}
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("write %d: %v", i, errs[i])
			}
			if got := string(results[i].Written.Value); got != fmt.Sprint(i) {
				t.Errorf("write %d was answered with write %s's result", i, got)
			}
			if ids[results[i].EventID] {
				t.Errorf("event id %d given twice", results[i].EventID)
			}
			ids[results[i].EventID] = true
		}
		// Every write is a sibling of its key: 8 writers per key, none with context.
		total := 0
		for k := range 50 {
			total += len(mustGet(t, s, fmt.Sprintf("gc/k%d", k), store.GetOptions{}).Siblings)
		}
		if total != n {
			t.Errorf("%d siblings stored, want %d", total, n)
		}
	})
}

// A write that extends a key's TTL leaves its index scores at the earlier
// expiry (a lower bound), on a single Redis. When that earlier expiry passes the key must still
// be listed, the sweeper must not announce it, and after the sweep the
// subtree index says the new expiry. A key that does expire is announced
// and unlisted as before.
func TestExtendedTTLStaysListedAndUnannounced(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		wait := collect(t, b, store.EventExpire)
		s := newStore(t, b, store.Config{})
		extended := []string{"solo", "tasks/T1/state", "tasks/T1/agents/a1"}
		var firstExpiry int64
		for _, k := range extended {
			firstExpiry = max(firstExpiry, mustPutTTL(t, s, k, 300*time.Millisecond).ExpiresAt)
		}
		mustPutTTL(t, s, "tasks/T2/state", 300*time.Millisecond) // left to expire
		for _, k := range extended {
			res := mustPutTTL(t, s, k, 10*time.Second)
			score, err := b.Client.ZScore(ctx, keys.SubtreeIndex(ns, k), k).Result()
			if err != nil {
				t.Fatal(err)
			}
			// One script per write (Cluster) keeps the index exact.
			if lazy := !perKeyScripts; lazy && score >= float64(res.ExpiresAt) || !lazy && score != float64(res.ExpiresAt) {
				t.Fatalf("%s: index score %v for expiry %d (lower bound: %v)", k, score, res.ExpiresAt, lazy)
			}
		}
		time.Sleep(time.Until(time.UnixMilli(firstExpiry).Add(300 * time.Millisecond)))

		for prefix, want := range map[string]string{
			"":          "[solo tasks/T1/agents/a1 tasks/T1/state]",
			"tasks/":    "[tasks/T1/agents/a1 tasks/T1/state]",
			"tasks/T1/": "[tasks/T1/agents/a1 tasks/T1/state]",
			"so":        "[solo]",
		} {
			if ks, _, err := s.List(ctx, ns, prefix, "", 10); err != nil || fmt.Sprint(ks) != want {
				t.Errorf("List(%q) before the sweep = %v, %v; want %s", prefix, ks, err, want)
			}
		}
		evs, err := s.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Key != "tasks/T2/state" {
			t.Errorf("sweep announced %v, want only tasks/T2/state", evs)
		}
		for _, k := range extended {
			e := mustGet(t, s, k, store.GetOptions{})
			score, err := b.Client.ZScore(ctx, keys.SubtreeIndex(ns, k), k).Result()
			if err != nil || score != float64(e.ExpiresAt) {
				t.Errorf("%s after the sweep: index score %v, %v; want %d", k, score, err, e.ExpiresAt)
			}
		}
		if ks, _, err := s.List(ctx, ns, "tasks/", "", 10); err != nil || fmt.Sprint(ks) != "[tasks/T1/agents/a1 tasks/T1/state]" {
			t.Errorf("List after the sweep = %v, %v", ks, err)
		}
		if extra := wait(2, 300*time.Millisecond); len(extra) != 1 || extra[0].Key != "tasks/T2/state" {
			t.Errorf("expire events published: %v, want one for tasks/T2/state", extra)
		}
	})
}

func mustPutTTL(tb testing.TB, s *store.Store, key string, d time.Duration) store.PutResult {
	tb.Helper()
	res, err := s.Put(context.Background(), ns, key, store.PutRequest{Value: json.RawMessage(`1`), TTL: ttl(d)})
	if err != nil {
		tb.Fatalf("put %s: %v", key, err)
	}
	return res
}
