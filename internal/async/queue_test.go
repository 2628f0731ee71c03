package async_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/async"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

const ns = "test"

func newStore(tb testing.TB, b redistest.Backend) *store.Store {
	tb.Helper()
	s, err := store.New(b.Client, store.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func put(key, value string) store.BatchOp {
	return store.BatchOp{Kind: store.OpPut, Namespace: ns, Key: key,
		PutRequest: store.PutRequest{Value: json.RawMessage(value), Writer: "w1"}}
}

func mustEnqueue(tb testing.TB, q *async.Queue, op store.BatchOp) {
	tb.Helper()
	if err := q.Enqueue(op); err != nil {
		tb.Fatalf("Enqueue(%s): %v", op.Key, err)
	}
}

// valueInRedis reads key's only sibling straight from Redis, not through
// the store, so that the test checks what Redis holds.
func valueInRedis(tb testing.TB, b redistest.Backend, key string) string {
	tb.Helper()
	fields, err := b.Client.HGetAll(context.Background(), keys.Redis(ns, key)).Result()
	if err != nil {
		tb.Fatal(err)
	}
	sibs, err := store.StoredSiblings(fields)
	if err != nil {
		tb.Fatal(err)
	}
	if len(sibs) == 0 {
		return ""
	}
	return string(sibs[0].Value)
}

// The design document's batch example: 100 writes, then forceSync, and all
// 100 are in Redis, in one pipeline.
func TestHundredWritesThenFlush(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b)
		var flushes []int
		var mu sync.Mutex
		q := async.New(s, async.Options{Size: 1000, OnFlush: func(n int, err error) {
			mu.Lock()
			flushes = append(flushes, n)
			mu.Unlock()
		}})
		if q.Queued(ns, "batch/key-7") {
			t.Error("an empty queue reports a queued key")
		}
		for i := range 100 {
			mustEnqueue(t, q, put("batch/key-"+strconv.Itoa(i), strconv.Itoa(i)))
		}
		if got := q.Pending(); got != 100 {
			t.Fatalf("pending = %d, want 100", got)
		}
		if !q.Queued(ns, "batch/key-7") || q.Queued(ns, "batch/key-100") {
			t.Error("Queued does not track the queued keys")
		}
		if got := valueInRedis(t, b, "batch/key-0"); got != "" {
			t.Fatalf("batch/key-0 is in Redis before the flush: %s", got)
		}
		n, err := q.Flush(context.Background())
		if err != nil || n != 100 {
			t.Fatalf("Flush = %d, %v; want 100", n, err)
		}
		for i := range 100 {
			if got := valueInRedis(t, b, "batch/key-"+strconv.Itoa(i)); got != strconv.Itoa(i) {
				t.Errorf("batch/key-%d = %q in Redis, want %d", i, got, i)
			}
		}
		if q.Pending() != 0 || q.Queued(ns, "batch/key-7") {
			t.Error("the queue still holds flushed writes")
		}
		if len(flushes) != 1 || flushes[0] != 100 {
			t.Errorf("flushes = %v, want one of 100", flushes)
		}
		if n, err := q.Flush(context.Background()); n != 0 || err != nil {
			t.Errorf("second Flush = %d, %v; want 0, nil", n, err)
		}
	})
}

func TestWritesToOneKeyKeepTheirOrder(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b)
		q := async.New(s, async.Options{})
		for i := range 1100 { // more than one pipeline (store.MaxBatchOps)
			mustEnqueue(t, q, put("order/k", strconv.Itoa(i)))
		}
		if n, err := q.Flush(context.Background()); n != 1100 || err != nil {
			t.Fatalf("Flush = %d, %v", n, err)
		}
		e, err := s.Get(context.Background(), ns, "order/k", store.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(e.Value) != "1099" || e.Version.String() != "w1=1100" || len(e.Siblings) != 1 {
			t.Errorf("order/k = %s version %s with %d siblings; want 1099, w1=1100, 1", e.Value, e.Version, len(e.Siblings))
		}
	})
}

func TestRunFlushesOnSizeAndOnInterval(t *testing.T) {
	b := redistest.Mini(t)
	s := newStore(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	bySize := async.New(s, async.Options{Interval: time.Hour, Size: 10})
	go bySize.Run(ctx)
	for i := range 10 {
		mustEnqueue(t, bySize, put("size/k"+strconv.Itoa(i), "1"))
	}
	waitEmpty(t, bySize, 2*time.Second)

	byTime := async.New(s, async.Options{Interval: 20 * time.Millisecond, Size: 1000})
	go byTime.Run(ctx)
	mustEnqueue(t, byTime, put("time/k", "1"))
	waitEmpty(t, byTime, 2*time.Second)
	if got := valueInRedis(t, b, "time/k"); got != "1" {
		t.Errorf("time/k = %q, want 1", got)
	}
}

func waitEmpty(tb testing.TB, q *async.Queue, within time.Duration) {
	tb.Helper()
	for deadline := time.Now().Add(within); q.Pending() > 0; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("%d writes still queued after %s", q.Pending(), within)
		}
	}
}

// A flush that fails keeps every write, and the next one delivers them.
func TestFailedFlushKeepsTheWrites(t *testing.T) {
	b := redistest.Real(t)
	s := newStore(t, b)
	q := async.New(s, async.Options{})
	for i := range 5 {
		mustEnqueue(t, q, put("down/k"+strconv.Itoa(i), strconv.Itoa(i)))
	}
	b.Real.Stop(t)
	if n, err := q.Flush(context.Background()); err == nil || !errors.Is(err, store.ErrUnavailable) || n != 0 {
		t.Fatalf("Flush with Redis down = %d, %v; want 0 and ErrUnavailable", n, err)
	}
	if q.Pending() != 5 || !q.Queued(ns, "down/k3") {
		t.Fatalf("pending = %d after a failed flush, want 5", q.Pending())
	}
	mustEnqueue(t, q, put("down/k5", "5")) // still accepting
	b.Real.Restart(t)
	deadline := time.Now().Add(5 * time.Second) // go-redis re-dials in the background
	for {
		n, err := q.Flush(context.Background())
		if err == nil {
			if n != 6 {
				t.Fatalf("Flush after Redis came back = %d, want 6", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Flush still failing 5 s after Redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range 6 {
		if got := valueInRedis(t, b, "down/k"+strconv.Itoa(i)); got != strconv.Itoa(i) {
			t.Errorf("down/k%d = %q, want %d", i, got, i)
		}
	}
}

func TestCloseFlushesAndRefusesMore(t *testing.T) {
	b := redistest.Mini(t)
	s := newStore(t, b)
	q := async.New(s, async.Options{})
	for i := range 3 {
		mustEnqueue(t, q, put("close/k"+strconv.Itoa(i), "1"))
	}
	if n, err := q.Close(context.Background()); n != 3 || err != nil {
		t.Fatalf("Close = %d, %v; want 3, nil", n, err)
	}
	if err := q.Enqueue(put("close/late", "1")); !errors.Is(err, async.ErrClosed) || !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Enqueue after Close: %v, want ErrClosed (a 503)", err)
	}
	if got := valueInRedis(t, b, "close/k2"); got != "1" {
		t.Errorf("close/k2 = %q, want 1", got)
	}
}

func TestCloseGivesUpWhenItsContextEnds(t *testing.T) {
	b := redistest.Real(t)
	s := newStore(t, b)
	q := async.New(s, async.Options{})
	mustEnqueue(t, q, put("lost/k", "1"))
	b.Real.Stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := q.Close(ctx); err == nil {
		t.Fatal("Close succeeded with Redis down")
	}
	if q.Pending() != 1 {
		t.Errorf("pending = %d, want 1 (kept, and reported)", q.Pending())
	}
}

func TestEnqueueRefuses(t *testing.T) {
	s := newStore(t, redistest.Mini(t))
	q := async.New(s, async.Options{MaxPending: 2})
	tests := []struct {
		name string
		op   store.BatchOp
		want error
	}{
		{"bad key", put("a/../b", "1"), store.ErrInvalidKey},
		{"bad JSON", put("a/b", "{"), store.ErrInvalidArgument},
		{"a get", store.BatchOp{Kind: store.OpGet, Namespace: ns, Key: "a/b"}, store.ErrInvalidArgument},
		{"If-Match", func() store.BatchOp { op := put("a/b", "1"); op.IfMatch = "x"; return op }(), store.ErrInvalidArgument},
		{"If-None-Match", func() store.BatchOp { op := put("a/b", "1"); op.IfNoneMatch = true; return op }(), store.ErrInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := q.Enqueue(tt.op); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	mustEnqueue(t, q, put("full/1", "1"))
	mustEnqueue(t, q, put("full/2", "1"))
	if err := q.Enqueue(put("full/3", "1")); !errors.Is(err, async.ErrFull) || !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("third write with MaxPending 2: %v, want ErrFull (a 503)", err)
	}
	if q.Pending() != 2 {
		t.Errorf("pending = %d, want 2", q.Pending())
	}
}

// The timestamp of a queued write is when it was accepted, not flushed:
// last-writer-wins orders it among the synchronous writes of others by
// acceptance.
func TestQueuedWriteKeepsItsAcceptanceTime(t *testing.T) {
	s := newStore(t, redistest.Mini(t))
	accepted := time.UnixMilli(1_700_000_000_000)
	q := async.New(s, async.Options{Now: func() time.Time { return accepted }})
	op := put("ts/k", "1")
	op.TTL = ptr(time.Duration(0))
	mustEnqueue(t, q, op)
	if _, err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	e, err := s.Get(context.Background(), ns, "ts/k", store.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Timestamp != accepted.UnixMilli() {
		t.Errorf("timestamp = %d, want %d", e.Timestamp, accepted.UnixMilli())
	}
}

func ptr[T any](v T) *T { return &v }

// Enqueue, Flush and Run race freely (run with -race): every write lands
// exactly once and in order per key.
func TestConcurrentEnqueueAndFlush(t *testing.T) {
	b := redistest.Mini(t)
	s := newStore(t, b)
	q := async.New(s, async.Options{Interval: time.Millisecond, Size: 7})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { defer close(runDone); q.Run(ctx) }()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				mustEnqueue(t, q, put("conc/w"+strconv.Itoa(w), strconv.Itoa(i)))
				if i%50 == 0 {
					if _, err := q.Flush(context.Background()); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	<-runDone
	if _, err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for w := range 4 {
		e, err := s.Get(context.Background(), ns, "conc/w"+strconv.Itoa(w), store.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(e.Value) != "199" || e.Version.String() != "w1=200" {
			t.Errorf("conc/w%d = %s %s, want 199 w1=200", w, e.Value, e.Version)
		}
	}
}

// TestQueueIsBoundedInBytes: a few large values fill the queue long before
// its count bound; a flush frees the room again.
func TestQueueIsBoundedInBytes(t *testing.T) {
	s := newStore(t, redistest.Mini(t))
	q := async.New(s, async.Options{MaxPendingBytes: 1000})
	big := `"` + strings.Repeat("x", 398) + `"` // 400 bytes
	mustEnqueue(t, q, put("bytes/1", big))
	mustEnqueue(t, q, put("bytes/2", big))
	if err := q.Enqueue(put("bytes/3", big)); !errors.Is(err, async.ErrFull) {
		t.Fatalf("a third 400-byte value with room for 1000 bytes: %v, want ErrFull", err)
	}
	if _, err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	mustEnqueue(t, q, put("bytes/3", big))
}
