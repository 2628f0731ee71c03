package counter_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/counter"
	"github.com/memsync/memsync/internal/redistest"
)

const ns = "test"

func ttl(d time.Duration) *time.Duration { return &d }

func add(t *testing.T, c *counter.Counters, name string, req counter.AddRequest) counter.Counter {
	t.Helper()
	got, _, err := c.Add(context.Background(), ns, name, req)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestCounterAddGetSetDelete(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		c := counter.New(b.Client, counter.Options{DefaultTTL: time.Hour, MaxTTL: 24 * time.Hour})
		ctx := context.Background()
		if _, err := c.Get(ctx, ns, "jobs/done"); !errors.Is(err, counter.ErrNotFound) {
			t.Fatalf("Get of a missing counter: %v, want ErrNotFound", err)
		}
		got := add(t, c, "jobs/done", counter.AddRequest{By: 1})
		if got.Value != 1 || time.Until(got.ExpiresAt) < 59*time.Minute || time.Until(got.ExpiresAt) > time.Hour {
			t.Fatalf("first Add = %+v, want 1 with the default TTL", got)
		}
		for _, tt := range []struct {
			by, want int64
		}{{5, 6}, {-10, -4}, {0, -4}} {
			if got := add(t, c, "jobs/done", counter.AddRequest{By: tt.by}); got.Value != tt.want {
				t.Fatalf("Add %d = %d, want %d", tt.by, got.Value, tt.want)
			}
		}
		if got, err := c.Get(ctx, ns, "jobs/done"); err != nil || got.Value != -4 || got.Name != "jobs/done" || got.ExpiresAt.IsZero() {
			t.Fatalf("Get = %+v, %v", got, err)
		}
		// A TTL given replaces the expiry; 0 never expires, and an Add
		// without one keeps that.
		if got := add(t, c, "jobs/done", counter.AddRequest{By: 1, TTL: ttl(0)}); !got.ExpiresAt.IsZero() {
			t.Fatalf("Add with TTL 0 = %+v, want no expiry", got)
		}
		if got := add(t, c, "jobs/done", counter.AddRequest{By: 1}); got.Value != -2 || !got.ExpiresAt.IsZero() {
			t.Fatalf("Add without TTL = %+v, want -2, still no expiry", got)
		}
		if got, err := c.Get(ctx, ns, "jobs/done"); err != nil || !got.ExpiresAt.IsZero() {
			t.Fatalf("Get of a persisting counter = %+v, %v", got, err)
		}
		got, err := c.Set(ctx, ns, "jobs/done", 100, ttl(time.Minute))
		if err != nil || got.Value != 100 || time.Until(got.ExpiresAt) > time.Minute || time.Until(got.ExpiresAt) < 50*time.Second {
			t.Fatalf("Set = %+v, %v", got, err)
		}
		if err := c.Delete(ctx, ns, "jobs/done"); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, ns, "jobs/done"); !errors.Is(err, counter.ErrNotFound) {
			t.Fatalf("second Delete: %v, want ErrNotFound", err)
		}
		// A short TTL ends the counter.
		add(t, c, "jobs/brief", counter.AddRequest{By: 1, TTL: ttl(50 * time.Millisecond)})
		time.Sleep(150 * time.Millisecond) // both backends run TTLs in real time
		if _, err := c.Get(ctx, ns, "jobs/brief"); !errors.Is(err, counter.ErrNotFound) {
			t.Fatalf("Get after the TTL: %v, want ErrNotFound", err)
		}
	})
}

// Values hold every integer within ±(2^53−1) exactly; an Add past it is
// refused and changes nothing.
func TestCounterBounds(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		c := counter.New(b.Client, counter.Options{})
		ctx := context.Background()
		if _, err := c.Set(ctx, ns, "big", counter.MaxValue-5, nil); err != nil {
			t.Fatal(err)
		}
		if got := add(t, c, "big", counter.AddRequest{By: 3}); got.Value != counter.MaxValue-2 || !got.ExpiresAt.IsZero() {
			t.Fatalf("Add near the bound = %+v, want %d exactly, no expiry (no default TTL)", got, int64(counter.MaxValue-2))
		}
		if _, _, err := c.Add(ctx, ns, "big", counter.AddRequest{By: 3}); !errors.Is(err, counter.ErrOverflow) {
			t.Fatalf("Add past the bound: %v, want ErrOverflow", err)
		}
		if got, _ := c.Get(ctx, ns, "big"); got.Value != counter.MaxValue-2 {
			t.Fatalf("after the refused Add: %d", got.Value)
		}
		if got := add(t, c, "big", counter.AddRequest{By: -counter.MaxValue}); got.Value != -2 {
			t.Fatalf("Add -MaxValue = %d, want -2", got.Value)
		}
		for _, tt := range []struct {
			name string
			err  error
		}{
			{"by too large", func() error {
				_, _, err := c.Add(ctx, ns, "big", counter.AddRequest{By: counter.MaxValue + 1})
				return err
			}()},
			{"value too small", func() error { _, err := c.Set(ctx, ns, "big", -counter.MaxValue-1, nil); return err }()},
			{"bad name", func() error { _, _, err := c.Add(ctx, ns, "a//b", counter.AddRequest{By: 1}); return err }()},
			{"bad namespace", func() error { _, err := c.Get(ctx, "a/b", "big"); return err }()},
			{"negative ttl", func() error {
				_, _, err := c.Add(ctx, ns, "big", counter.AddRequest{TTL: ttl(-time.Second)})
				return err
			}()},
			{"bad key", func() error {
				_, _, err := c.Add(ctx, ns, "big", counter.AddRequest{By: 1, IdempotencyKey: "a;b"})
				return err
			}()},
		} {
			if !errors.Is(tt.err, counter.ErrInvalidArgument) {
				t.Errorf("%s: %v, want ErrInvalidArgument", tt.name, tt.err)
			}
		}
		if got, _ := c.Get(ctx, ns, "big"); got.Value != -2 {
			t.Fatalf("refused calls changed the counter to %d", got.Value)
		}
	})
}

// A keyed increment sent again is answered with the value it made, and not
// applied twice, even after other increments; the same key with another
// increment is refused.
func TestCounterIdempotency(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		c := counter.New(b.Client, counter.Options{})
		ctx := context.Background()
		first, replayed, err := c.Add(ctx, ns, "done", counter.AddRequest{By: 2, IdempotencyKey: "k0"})
		if err != nil || replayed || first.Value != 2 {
			t.Fatalf("first = %+v, %v, %v", first, replayed, err)
		}
		add(t, c, "done", counter.AddRequest{By: 10})
		again, replayed, err := c.Add(ctx, ns, "done", counter.AddRequest{By: 2, IdempotencyKey: "k0"})
		if err != nil || !replayed || again.Value != 2 {
			t.Fatalf("sent again = %+v, replayed %v, %v; want 2, replayed", again, replayed, err)
		}
		if _, _, err := c.Add(ctx, ns, "done", counter.AddRequest{By: 3, IdempotencyKey: "k0"}); !errors.Is(err, counter.ErrInvalidArgument) {
			t.Fatalf("key reused for another increment: %v", err)
		}
		if got, _ := c.Get(ctx, ns, "done"); got.Value != 12 {
			t.Fatalf("value = %d, want 12 (2 + 10, once each)", got.Value)
		}
		if got, _ := c.Get(ctx, ns, "done"); got.Value != 12 {
			t.Fatalf("value = %d", got.Value)
		}
		if s := c.Stats(); s.Added != 2 || s.Replayed != 1 {
			t.Fatalf("Stats = %+v", s)
		}
	})
}

// Workers on two Counters increment one counter concurrently, every keyed
// increment sent twice: the value counts each once.
func TestCounterConcurrentAdds(t *testing.T) {
	b := redistest.Real(t)
	cs := []*counter.Counters{counter.New(b.Client, counter.Options{}), counter.New(b.Client, counter.Options{})}
	ctx := context.Background()
	const workers, each = 8, 40
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				req := counter.AddRequest{By: 1, IdempotencyKey: fmt.Sprintf("w%d-%d", w, i)}
				for try := range 2 {
					if _, _, err := cs[(w+try)%2].Add(ctx, ns, "tasks/done", req); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if got, err := cs[0].Get(ctx, ns, "tasks/done"); err != nil || got.Value != workers*each {
		t.Fatalf("value = %d, %v; want %d", got.Value, err, workers*each)
	}
}

// Keys are forgotten after the window: a lapsed key counts again, and a
// later keyed increment drops the lapsed ones from Redis.
func TestCounterForgetsKeysAfterTheWindow(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		c := counter.New(b.Client, counter.Options{DedupWindow: time.Second})
		ctx := context.Background()
		for _, k := range []string{"a", "b", "c"} {
			add(t, c, "done", counter.AddRequest{By: 1, IdempotencyKey: k})
		}
		time.Sleep(1200 * time.Millisecond) // both backends run TTLs in real time
		got, replayed, err := c.Add(ctx, ns, "done", counter.AddRequest{By: 1, IdempotencyKey: "a"})
		if err != nil || replayed || got.Value != 4 {
			t.Fatalf("a after the window = %+v, replayed %v, %v; want applied again: 4", got, replayed, err)
		}
		add(t, c, "done", counter.AddRequest{By: 1, IdempotencyKey: "d"})
		n, err := b.Client.HLen(ctx, "ms:{test/done}#counter-keys").Result()
		if err != nil || n != 2 {
			t.Fatalf("%d keys remembered, %v; want a and d", n, err)
		}
		if err := c.Delete(ctx, ns, "done"); err != nil {
			t.Fatal(err)
		}
		if n, _ := b.Client.Exists(ctx, "ms:{test/done}#counter-keys", "ms:{test/done}#counter-keys-at").Result(); n != 0 {
			t.Fatalf("%d key sets left after Delete", n)
		}
	})
}

// A counter remembers at most MaxRemembered keys: the oldest go first.
func TestCounterRemembersAtMostMaxKeys(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		c := counter.New(b.Client, counter.Options{MaxRemembered: 3})
		ctx := context.Background()
		for i := range 5 {
			add(t, c, "done", counter.AddRequest{By: 1, IdempotencyKey: fmt.Sprint("k", i)})
		}
		if n, _ := b.Client.ZCard(ctx, "ms:{test/done}#counter-keys-at").Result(); n != 3 {
			t.Fatalf("%d keys remembered, want 3", n)
		}
		for _, tt := range []struct {
			key      string
			replayed bool
		}{{"k4", true}, {"k2", true}, {"k1", false}} {
			if _, replayed, err := c.Add(ctx, ns, "done", counter.AddRequest{By: 1, IdempotencyKey: tt.key}); err != nil || replayed != tt.replayed {
				t.Errorf("%s: replayed %v, %v; want %v", tt.key, replayed, err, tt.replayed)
			}
		}
	})
}

// List names the namespace's counters by prefix, with their values, and
// drops from its index those gone.
func TestCounterList(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		c := counter.New(b.Client, counter.Options{})
		ctx := context.Background()
		if got, err := c.List(ctx, ns, ""); err != nil || len(got) != 0 {
			t.Fatalf("List of a new namespace = %+v, %v", got, err)
		}
		add(t, c, "jobs/done", counter.AddRequest{By: 3})
		add(t, c, "jobs/failed", counter.AddRequest{By: 1, TTL: ttl(time.Hour)})
		add(t, c, "mail/sent", counter.AddRequest{By: 7})
		add(t, c, "jobs/brief", counter.AddRequest{By: 1, TTL: ttl(50 * time.Millisecond)})
		if _, err := c.Set(ctx, ns, "jobs/reset", 10, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, ns, "mail/sent"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond) // jobs/brief expires: both backends run TTLs in real time
		got, err := c.List(ctx, ns, "jobs/")
		var names []string
		for _, x := range got {
			names = append(names, fmt.Sprint(x.Name, "=", x.Value))
		}
		if err != nil || fmt.Sprint(names) != "[jobs/done=3 jobs/failed=1 jobs/reset=10]" || got[1].ExpiresAt.IsZero() || !got[0].ExpiresAt.IsZero() {
			t.Fatalf("List jobs/ = %v (%+v), %v", names, got, err)
		}
		if all, _ := c.List(ctx, ns, ""); len(all) != 3 {
			t.Fatalf("List = %+v, want the three jobs counters", all)
		}
		// The expired counter's entry went from the index; the deleted
		// one's went with its Delete.
		if n, err := b.Client.ZCard(ctx, "ms:{test}#counters").Result(); err != nil || n != 3 {
			t.Fatalf("index holds %d names, %v; want 3", n, err)
		}
		if other, _ := c.List(ctx, "elsewhere", ""); len(other) != 0 {
			t.Fatalf("another namespace lists %+v", other)
		}
	})
}

// On a Redis Cluster of three masters the counters, their remembered keys
// and their index (in another slot) work as on one Redis.
func TestCounterOnCluster(t *testing.T) {
	rdb := redistest.ClusterClient(t, redistest.StartCluster(t, 3))
	c := counter.New(rdb, counter.Options{})
	ctx := context.Background()
	for _, name := range []string{"jobs/done", "mail/sent", "x"} {
		for range 2 {
			if _, _, err := c.Add(ctx, ns, name, counter.AddRequest{By: 2, IdempotencyKey: "k"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := c.List(ctx, ns, "")
	var names []string
	for _, x := range got {
		names = append(names, fmt.Sprint(x.Name, "=", x.Value))
	}
	if err != nil || fmt.Sprint(names) != "[jobs/done=2 mail/sent=2 x=2]" {
		t.Fatalf("List = %v, %v", names, err)
	}
}
