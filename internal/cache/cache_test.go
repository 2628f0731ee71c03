package cache_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/cache"
	"github.com/memsync/memsync/internal/glob"
	"github.com/memsync/memsync/internal/store"
)

// backend is a fake store: a map of entries, a count of reads, and a hook
// that runs inside Get after the value was read and before it is returned,
// which is where a real read waits for Redis's reply.
type backend struct {
	mu        sync.Mutex
	entries   map[string]store.Entry
	gets      int
	hook      func(ns, key string)
	published []store.Event
}

func newBackend() *backend { return &backend{entries: map[string]store.Entry{}} }

func (b *backend) set(ns, key string, v any) {
	raw, _ := json.Marshal(v)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entries[ns+"/"+key] = store.Entry{Namespace: ns, Key: key, Value: raw, ETag: string(raw), Resolved: true}
}

func (b *backend) reads() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gets
}

func (b *backend) Get(_ context.Context, ns, key string, _ store.GetOptions) (store.Entry, error) {
	b.mu.Lock()
	b.gets++
	e, ok := b.entries[ns+"/"+key]
	hook := b.hook
	b.mu.Unlock()
	if hook != nil {
		hook(ns, key)
	}
	if !ok {
		return store.Entry{}, store.ErrNotFound
	}
	return e, nil
}

func (b *backend) Put(_ context.Context, ns, key string, req store.PutRequest) (store.PutResult, error) {
	var v any
	_ = json.Unmarshal(req.Value, &v)
	b.set(ns, key, v)
	return store.PutResult{}, nil
}

func (b *backend) Delete(_ context.Context, ns, key string, _ store.DeleteRequest) (store.DeleteResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.entries, ns+"/"+key)
	return store.DeleteResult{}, nil
}

func (b *backend) GetMany(context.Context, string, []string, store.GetOptions) ([]store.Entry, error) {
	return nil, nil
}

func (b *backend) List(context.Context, string, string, string, int) ([]string, string, error) {
	return nil, "", nil
}

func (b *backend) DeletePrefix(_ context.Context, ns, prefix string) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for k, e := range b.entries {
		if e.Namespace == ns && strings.HasPrefix(e.Key, prefix) {
			delete(b.entries, k)
			n++
		}
	}
	return n, nil
}

func (b *backend) Ping(context.Context) error { return nil }

func (b *backend) Batch(_ context.Context, ops []store.BatchOp, _ bool) ([]store.BatchResult, error) {
	for _, op := range ops {
		if op.Kind == store.OpPut {
			var v any
			_ = json.Unmarshal(op.Value, &v)
			b.set(op.Namespace, op.Key, v)
		}
	}
	return make([]store.BatchResult, len(ops)), nil
}

func (b *backend) CheckOp(store.BatchOp) error { return nil }

func (b *backend) Publish(_ context.Context, ev *store.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.published = append(b.published, *ev)
	return nil
}

// newCache returns a connected cache over b.
func newCache(t *testing.T, b *backend, opts cache.Options) *cache.Cache {
	t.Helper()
	if opts.Size == 0 {
		opts.Size = 100
	}
	c, err := cache.New(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	c.Connected()
	return c
}

func value(t *testing.T, c *cache.Cache, ns, key string) any {
	t.Helper()
	e, err := c.Get(context.Background(), ns, key, store.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	var v any
	_ = json.Unmarshal(e.Value, &v)
	return v
}

func mustGlob(t *testing.T, p string) *glob.Pattern {
	t.Helper()
	g, err := glob.Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestFillRacingAnInvalidationStoresNothing forces the interleaving that
// would leave a stale entry without the generation check: a miss reads v1
// from the backend; before the read returns, the key changes to v2 and the
// invalidation arrives (it finds nothing to drop); then the read returns
// and fills. The next read must not be served v1 from memory.
func TestFillRacingAnInvalidationStoresNothing(t *testing.T) {
	ctx := context.Background()
	invalidations := []struct {
		name string
		do   func(t *testing.T, c *cache.Cache, b *backend)
	}{
		{"none (control: the fill is kept)", nil},
		{"local put", func(t *testing.T, c *cache.Cache, b *backend) {
			if _, err := c.Put(ctx, "ns", "k", store.PutRequest{Value: json.RawMessage(`2`)}); err != nil {
				t.Fatal(err)
			}
		}},
		{"local delete then write elsewhere", func(t *testing.T, c *cache.Cache, b *backend) {
			_, _ = c.Delete(ctx, "ns", "k", store.DeleteRequest{})
			b.set("ns", "k", 2)
		}},
		{"put event from another instance", func(t *testing.T, c *cache.Cache, b *backend) {
			b.set("ns", "k", 2)
			c.Event(store.Event{ID: 7, Type: store.EventPut, Namespace: "ns", Key: "k"})
		}},
		{"expire event", func(t *testing.T, c *cache.Cache, b *backend) {
			b.set("ns", "k", 2)
			c.Event(store.Event{ID: 7, Type: store.EventExpire, Namespace: "ns", Key: "k"})
		}},
		{"invalidate-by-pattern event", func(t *testing.T, c *cache.Cache, b *backend) {
			b.set("ns", "k", 2)
			c.Event(store.Event{ID: 7, Type: store.EventInvalidate, Namespace: "ns", Value: json.RawMessage(`{"pattern":"*"}`)})
		}},
		{"invalidate by pattern here", func(t *testing.T, c *cache.Cache, b *backend) {
			b.set("ns", "k", 2)
			if _, err := c.InvalidatePattern(ctx, "ns", mustGlob(t, "**")); err != nil {
				t.Fatal(err)
			}
		}},
		{"subscription gap and back", func(t *testing.T, c *cache.Cache, b *backend) {
			b.set("ns", "k", 2)
			c.Gap()
			c.Connected()
		}},
		{"batch put", func(t *testing.T, c *cache.Cache, b *backend) {
			if _, err := c.Batch(ctx, []store.BatchOp{{Kind: store.OpPut, Namespace: "ns", Key: "k",
				PutRequest: store.PutRequest{Value: json.RawMessage(`2`)}}}, false); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range invalidations {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend()
			b.set("ns", "k", 1)
			c := newCache(t, b, cache.Options{})

			read, release := make(chan struct{}), make(chan struct{})
			b.hook = func(string, string) { close(read); <-release }
			got := make(chan any)
			go func() {
				e, err := c.Get(ctx, "ns", "k", store.GetOptions{})
				if err != nil {
					t.Error(err)
				}
				var v any
				_ = json.Unmarshal(e.Value, &v)
				got <- v
			}()
			<-read // the miss has read 1 and is waiting for the reply
			b.mu.Lock()
			b.hook = nil
			b.mu.Unlock()
			if tt.do != nil {
				tt.do(t, c, b)
			}
			close(release)
			if v := <-got; v != float64(1) {
				t.Fatalf("racing read = %v, want 1 (it read before the change)", v)
			}

			want, reads := any(float64(2)), 2
			if tt.do == nil {
				want, reads = float64(1), 1 // served from memory
			}
			if v := value(t, c, "ns", "k"); v != want {
				t.Errorf("read after the invalidation = %v, want %v: a stale fill survived", v, want)
			}
			if n := b.reads(); n != reads {
				t.Errorf("backend reads = %d, want %d", n, reads)
			}
		})
	}
}

func TestServesHitsAndBypassesWhenAsked(t *testing.T) {
	ctx := context.Background()
	b := newBackend()
	b.set("ns", "k", 1)
	c := newCache(t, b, cache.Options{})
	value(t, c, "ns", "k")
	value(t, c, "ns", "k")
	if n := b.reads(); n != 1 {
		t.Errorf("two reads went %d times to the backend, want 1", n)
	}
	b.set("ns", "k", 2) // behind the cache's back
	if e, _ := c.Get(ctx, "ns", "k", store.GetOptions{Consistent: true}); string(e.Value) != "2" {
		t.Errorf("consistent read = %s, want 2", e.Value)
	}
	if v := value(t, c, "ns", "k"); v != float64(2) {
		t.Errorf("a consistent read refreshes the cache: got %v", v)
	}
	if _, err := c.Get(ctx, "ns", "k", store.GetOptions{Resolve: store.Union}); err != nil {
		t.Fatal(err)
	}
	if n := b.reads(); n != 3 {
		t.Errorf("backend reads = %d, want 3 (first miss, consistent, resolve override)", n)
	}
	if _, err := c.Get(ctx, "ns", "missing", store.GetOptions{}); err == nil {
		t.Error("a missing key was found")
	}
	st := c.Stats()
	if st.Hits != 2 || st.Misses != 2 || st.Entries != 1 || st.MaxEntries != 100 {
		t.Errorf("stats = %+v, want 2 hits, 2 misses, 1 entry of 100", st)
	}
}

func TestFillsOnlyWhileConnected(t *testing.T) {
	b := newBackend()
	b.set("ns", "k", 1)
	c, err := cache.New(b, cache.Options{Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	value(t, c, "ns", "k")
	value(t, c, "ns", "k")
	if n := b.reads(); n != 2 {
		t.Errorf("before Connected: %d backend reads, want 2 (nothing cached)", n)
	}
	c.Connected()
	value(t, c, "ns", "k")
	value(t, c, "ns", "k")
	if n := b.reads(); n != 3 {
		t.Errorf("connected: %d backend reads, want 3", n)
	}
	c.Gap()
	if st := c.Stats(); st.Entries != 0 || st.Invalidations != 1 {
		t.Errorf("after Gap: %+v, want empty with 1 invalidation", st)
	}
	value(t, c, "ns", "k")
	value(t, c, "ns", "k")
	if n := b.reads(); n != 5 {
		t.Errorf("after Gap: %d backend reads, want 5 (nothing cached until Connected)", n)
	}
}

func TestEntriesDieAtTheirExpiryAndMaxAge(t *testing.T) {
	now := time.UnixMilli(1_764_000_000_000)
	clock := func() time.Time { return now }
	b := newBackend()
	c := newCache(t, b, cache.Options{Now: clock, MaxAge: 10 * time.Second})
	b.mu.Lock()
	b.entries["ns/ttl"] = store.Entry{Namespace: "ns", Key: "ttl", Value: json.RawMessage(`1`), ExpiresAt: now.Add(time.Second).UnixMilli()}
	b.entries["ns/forever"] = store.Entry{Namespace: "ns", Key: "forever", Value: json.RawMessage(`1`)}
	b.mu.Unlock()
	value(t, c, "ns", "ttl")
	value(t, c, "ns", "forever")
	value(t, c, "ns", "ttl")
	value(t, c, "ns", "forever")
	if n := b.reads(); n != 2 {
		t.Fatalf("%d backend reads, want 2", n)
	}
	now = now.Add(time.Second) // ttl's expiry
	value(t, c, "ns", "ttl")
	value(t, c, "ns", "forever")
	if n := b.reads(); n != 3 {
		t.Errorf("at the expiry: %d backend reads, want 3 (the expired key read again)", n)
	}
	now = now.Add(9 * time.Second) // forever's max age
	value(t, c, "ns", "forever")
	if n := b.reads(); n != 4 {
		t.Errorf("at the max age: %d backend reads, want 4", n)
	}
}

func TestInvalidatePatternDropsHereAndBroadcasts(t *testing.T) {
	ctx := context.Background()
	b := newBackend()
	here, there := newCache(t, b, cache.Options{}), newCache(t, b, cache.Options{})
	keys := [][2]string{{"ns", "tasks/T1/state"}, {"ns", "tasks/T2/progress"}, {"ns", "workers/w1/status"}, {"other", "tasks/T1/state"}}
	for _, k := range keys {
		b.set(k[0], k[1], 1)
		value(t, here, k[0], k[1])
		value(t, there, k[0], k[1])
	}
	n, err := here.InvalidatePattern(ctx, "ns", mustGlob(t, "tasks/**"))
	if err != nil || n != 2 {
		t.Fatalf("InvalidatePattern = %d, %v; want 2", n, err)
	}
	if len(b.published) != 1 {
		t.Fatalf("published %v, want one event", b.published)
	}
	ev := b.published[0]
	if ev.Type != store.EventInvalidate || ev.Namespace != "ns" || string(ev.Value) != `{"pattern":"tasks/**"}` {
		t.Errorf("published %+v", ev)
	}
	there.Event(ev) // what the hub of another instance delivers
	for _, c := range []*cache.Cache{here, there} {
		if st := c.Stats(); st.Entries != 2 || st.Invalidations != 2 {
			t.Errorf("after the invalidation: %+v, want 2 entries left, 2 invalidated", st)
		}
	}
	before := b.reads()
	value(t, there, "ns", "workers/w1/status")
	value(t, there, "other", "tasks/T1/state")
	value(t, there, "ns", "tasks/T1/state")
	if n := b.reads() - before; n != 1 {
		t.Errorf("%d backend reads, want 1 (only the invalidated key)", n)
	}
	// An invalidate event this version cannot read drops everything.
	there.Event(store.Event{Type: store.EventInvalidate, Namespace: "ns", Value: json.RawMessage(`{"pattern":"a//b"}`)})
	if st := there.Stats(); st.Entries != 0 {
		t.Errorf("after a malformed invalidation: %d entries", st.Entries)
	}
}

// A prefix delete through the cache drops the cached keys under the
// prefix, and only those, at once (the events would, a little later).
func TestDeletePrefixDropsTheKeysUnderIt(t *testing.T) {
	b := newBackend()
	c := newCache(t, b, cache.Options{})
	keys := [][2]string{{"ns", "tasks/T1/state"}, {"ns", "tasks/T1/agents/a1"}, {"ns", "tasks/T10/state"}, {"other", "tasks/T1/state"}}
	for _, k := range keys {
		b.set(k[0], k[1], 1)
		value(t, c, k[0], k[1])
	}
	if n, err := c.DeletePrefix(context.Background(), "ns", "tasks/T1/"); err != nil || n != 2 {
		t.Fatalf("DeletePrefix = %d, %v; want 2", n, err)
	}
	for _, k := range keys[:2] {
		if _, err := c.Get(context.Background(), k[0], k[1], store.GetOptions{}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s after the prefix delete: %v, want ErrNotFound (not the cached entry)", k[1], err)
		}
	}
	if st := c.Stats(); st.Entries != 2 {
		t.Errorf("entries after the prefix delete: %d, want the 2 others", st.Entries)
	}
}

func TestEvictionsAndDisabledCache(t *testing.T) {
	b := newBackend()
	c := newCache(t, b, cache.Options{Size: 2})
	for i := range 3 {
		b.set("ns", fmt.Sprint(i), i)
		value(t, c, "ns", fmt.Sprint(i))
	}
	if st := c.Stats(); st.Evictions != 1 || st.Entries != 2 {
		t.Errorf("stats = %+v, want 1 eviction, 2 entries", st)
	}

	off, err := cache.New(b, cache.Options{Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	off.Connected()
	before := b.reads()
	value(t, off, "ns", "0")
	value(t, off, "ns", "0")
	off.Invalidate("ns", "0")
	off.Gap()
	if n := b.reads() - before; n != 2 {
		t.Errorf("a disabled cache read the backend %d times for 2 reads", n)
	}
}

// TestConcurrentUseIsCoherent hammers one key with writes, event
// invalidations, gaps and reads (half of them rendered); once everything
// settles, the cache must agree with the backend.
func TestConcurrentUseIsCoherent(t *testing.T) {
	ctx := context.Background()
	b := newBackend()
	c := newCache(t, b, cache.Options{Size: 8})
	render := func(e store.Entry) any { return "rendered " + string(e.Value) }
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 300 {
				key := fmt.Sprint(i % 5)
				switch (i + w) % 4 {
				case 0:
					_, _ = c.Put(ctx, "ns", key, store.PutRequest{Value: json.RawMessage(fmt.Sprint(w*1000 + i))})
				case 1:
					b.set("ns", key, w*1000+i)                                            // another instance's write...
					c.Event(store.Event{Type: store.EventPut, Namespace: "ns", Key: key}) // ...and its event
				case 2:
					_, _ = c.Get(ctx, "ns", key, store.GetOptions{})
				default:
					e, v, err := c.GetRendered(ctx, "ns", key, store.GetOptions{}, render)
					if err == nil && v != "rendered "+string(e.Value) {
						t.Errorf("key %s: rendering %v served with %s", key, v, e.Value)
					}
				}
				if i%97 == 0 {
					c.Gap()
					c.Connected()
				}
			}
		})
	}
	wg.Wait()
	for i := range 5 {
		key := fmt.Sprint(i)
		cached, _ := c.Get(ctx, "ns", key, store.GetOptions{})
		fresh, _ := c.Get(ctx, "ns", key, store.GetOptions{Consistent: true})
		if string(cached.Value) != string(fresh.Value) {
			t.Errorf("key %s: cache serves %s, backend has %s", key, cached.Value, fresh.Value)
		}
		if _, v, _ := c.GetRendered(ctx, "ns", key, store.GetOptions{}, render); v != "rendered "+string(fresh.Value) {
			t.Errorf("key %s: cache serves rendering %v, backend has %s", key, v, fresh.Value)
		}
	}
}
