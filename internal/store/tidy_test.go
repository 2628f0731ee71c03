package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

// Tidy takes out of the listing indexes what died more than a minute ago
// and nothing else: keys whose expiry passed two hours ago leave their
// children, roots and namespace entries once swept, while live keys, keys
// without expiry and their parents stay listed, and a dead subtree written
// again is listed again.
//
// On a single Redis the sweeper's script takes an expired key's subtree out
// of the indexes itself when it is left empty, as a delete does, so there
// Tidy finds nothing left to remove, and the indexes end the same.
func TestTidyRemovesOnlyDeadIndexEntries(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		t.Run("one-script", func(t *testing.T) { checkTidy(t, b.Client, store.Config{}) })
		t.Run("per-key", func(t *testing.T) {
			if err := b.Client.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			checkTidy(t, b.Client, store.Config{PerKeyScripts: true})
		})
	})
	t.Run("cluster", func(t *testing.T) {
		checkTidy(t, redistest.ClusterClient(t, redistest.StartCluster(t, 3)), store.Config{})
	})
}

// checkTidy is TestTidyRemovesOnlyDeadIndexEntries on c, with cfg's write
// path (a Cluster client takes the per-key path whatever cfg says).
func checkTidy(t *testing.T, c redis.UniversalClient, cfg store.Config) {
	ctx := context.Background()
	_, cluster := c.(*redis.ClusterClient)
	sweeperDrops := !cfg.PerKeyScripts && !cluster
	pastCfg := cfg
	pastCfg.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	past := newStoreOn(t, c, pastCfg)
	live := newStoreOn(t, c, cfg)
	put := func(s *store.Store, namespace, key string, ttl time.Duration) {
		t.Helper()
		if _, err := s.Put(ctx, namespace, key, store.PutRequest{Value: json.RawMessage(`1`), TTL: &ttl}); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"old/a/k", "old/b/k", "old/b/deeper/k", "mixed/dead/k", "lone"} {
		put(past, ns, k, time.Minute)
	}
	put(past, "gone", "x/y/z", time.Minute)
	put(live, ns, "mixed/live/k", time.Hour)
	put(live, ns, "forever/a/k", 0)
	put(live, ns, "solo", 0)

	// Expired but not yet swept: the subtree indexes still list the
	// keys, so nothing goes.
	if res, err := live.Tidy(ctx); err != nil || res != (store.TidyResult{}) {
		t.Fatalf("Tidy before the sweep = %+v, %v; want nothing removed", res, err)
	}
	if _, err := live.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	tidied := live.Stats().Tidied
	res, err := live.Tidy(ctx)
	// Children old/a, old/b, mixed/dead and gone's x/y; roots old, lone
	// and gone's x; the namespace gone: by Tidy, unless the sweep did.
	want, wantTidied := store.TidyResult{Namespaces: 1, Roots: 3, Children: 4}, uint64(8)
	if sweeperDrops {
		want, wantTidied = store.TidyResult{}, 0
	}
	if got := live.Stats().Tidied - tidied; got != wantTidied {
		t.Errorf("Stats().Tidied rose by %d, want %d", got, wantTidied)
	}
	if err != nil || res != want {
		t.Errorf("Tidy = %+v, %v; want %+v", res, err, want)
	}
	members := func(key string) string { return sortedMembers(t, c, key) }
	for _, tt := range []struct{ key, want string }{
		{keys.Global("namespaces"), "[test]"},
		{keys.Namespace(ns, "roots"), "[forever mixed solo]"},
		{keys.Namespace(ns, "names"), "[forever mixed solo]"},
		{keys.Aux(ns, "mixed", "children"), "[live]"},
		{keys.Aux(ns, "mixed", "names"), "[live]"},
		{keys.Aux(ns, "old", "names"), "[]"},
		{keys.Aux(ns, "forever", "children"), "[a]"},
		{keys.Aux(ns, "old", "children"), "[]"},
		{keys.Namespace("gone", "roots"), "[]"},
	} {
		if got := members(tt.key); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.key, got, tt.want)
		}
	}
	if got, _, err := live.List(ctx, ns, "", "", 100); err != nil || fmt.Sprint(got) != "[forever/a/k mixed/live/k solo]" {
		t.Errorf("List after Tidy = %v, %v", got, err)
	}
	if res, err := live.Tidy(ctx); err != nil || res != (store.TidyResult{}) {
		t.Errorf("a second Tidy = %+v, %v; want nothing removed", res, err)
	}

	// Written again, by a store that had raised the entries before
	// (its memo of them is for the old expiry): listed again.
	put(past, ns, "old/b/k", 3*time.Hour)
	put(live, "gone", "x/y/z", time.Hour)
	if got, _, err := live.List(ctx, ns, "old/", "", 100); err != nil || fmt.Sprint(got) != "[old/b/k]" {
		t.Errorf("List(old/) after a new write = %v, %v; want [old/b/k]", got, err)
	}
	if got, _, err := live.List(ctx, "gone", "", "", 100); err != nil || fmt.Sprint(got) != "[x/y/z]" {
		t.Errorf("List in namespace gone after a new write = %v, %v; want [x/y/z]", got, err)
	}
	if got := members(keys.Global("namespaces")); got != "[gone test]" {
		t.Errorf("namespaces after new writes = %s, want [gone test]", got)
	}
}

// A namespace written before the namespaces index existed is tidied when
// named, as the server names its default namespace.
func TestTidyNamedNamespace(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		// Per-key (Cluster) writes: a single Redis's sweep would take the
		// subtree out at once.
		past := newStore(t, b, store.Config{PerKeyScripts: true, Now: func() time.Time { return time.Now().Add(-2 * time.Hour) }})
		ttl := time.Minute
		if _, err := past.Put(ctx, ns, "old/a/k", store.PutRequest{Value: json.RawMessage(`1`), TTL: &ttl}); err != nil {
			t.Fatal(err)
		}
		if _, err := newStore(t, b, store.Config{PerKeyScripts: true}).Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Client.Del(ctx, keys.Global("namespaces")).Err(); err != nil { // as before this version
			t.Fatal(err)
		}
		if res, err := past.Tidy(ctx); err != nil || res != (store.TidyResult{}) {
			t.Errorf("Tidy without the namespace = %+v, %v; want nothing found", res, err)
		}
		if res, err := past.Tidy(ctx, ns, "not a namespace!"); err != nil || res != (store.TidyResult{Roots: 1, Children: 1}) {
			t.Errorf("Tidy(%q) = %+v, %v; want a root and a child removed", ns, res, err)
		}
	})
}

// BenchmarkTidy measures one Tidy on a real redis-server: with 10,000 dead
// children under one root to remove (the state after the sweeper announced
// their keys' expiry), and with 10,000 live ones and nothing to remove (the
// steady state every instance pays once a minute).
func BenchmarkTidy(b *testing.B) {
	const n = 10_000
	be := redistest.Real(b)
	s := newStore(b, be, store.Config{})
	ctx := context.Background()
	fill := func(score float64) {
		b.Helper()
		members := make([]redis.Z, n)
		for i := range members {
			members[i] = redis.Z{Score: score, Member: "T" + strconv.Itoa(i)}
		}
		pipe := be.Client.Pipeline()
		pipe.ZAdd(ctx, keys.Global("namespaces"), redis.Z{Score: score, Member: ns})
		pipe.ZAdd(ctx, keys.Namespace(ns, "roots"), redis.Z{Score: score, Member: "tasks"})
		pipe.ZAdd(ctx, keys.Aux(ns, "tasks", "children"), members...)
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("10k-dead", func(b *testing.B) {
		dead := float64(time.Now().Add(-time.Hour).UnixMilli())
		for b.Loop() {
			b.StopTimer()
			fill(dead)
			b.StartTimer()
			res, err := s.Tidy(ctx)
			if err != nil || res.Children != n {
				b.Fatalf("Tidy = %+v, %v", res, err)
			}
		}
	})
	b.Run("10k-live", func(b *testing.B) {
		fill(float64(time.Now().Add(time.Hour).UnixMilli()))
		for b.Loop() {
			if res, err := s.Tidy(ctx); err != nil || res != (store.TidyResult{}) {
				b.Fatalf("Tidy = %+v, %v", res, err)
			}
		}
	})
	// A flat namespace: 10,000 live first segments (keys of one segment),
	// nothing to remove.
	b.Run("10k-live-roots", func(b *testing.B) {
		score := float64(time.Now().Add(time.Hour).UnixMilli())
		roots := make([]redis.Z, n)
		for i := range roots {
			roots[i] = redis.Z{Score: score, Member: "R" + strconv.Itoa(i)}
		}
		pipe := be.Client.Pipeline()
		pipe.ZAdd(ctx, keys.Global("namespaces"), redis.Z{Score: score, Member: "flat"})
		pipe.ZAdd(ctx, keys.Namespace("flat", "roots"), roots...)
		for i := range roots {
			roots[i].Score = 0
		}
		pipe.ZAdd(ctx, keys.Namespace("flat", "names"), roots...)
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			be.Client.Del(ctx, keys.Global("namespaces"), keys.Namespace("flat", "roots"), keys.Namespace("flat", "names"))
		})
		for b.Loop() {
			if res, err := s.Tidy(ctx); err != nil || res != (store.TidyResult{}) {
				b.Fatalf("Tidy = %+v, %v", res, err)
			}
		}
	})
	// Per-key (Cluster) writes: 10,000 children without expiry, each
	// marked an hour ago by the delete of its last key.
	perKey := newStore(b, be, store.Config{PerKeyScripts: true})
	b.Run("10k-marked", func(b *testing.B) {
		marked := float64(time.Now().Add(-time.Hour).UnixMilli())
		for b.Loop() {
			b.StopTimer()
			fill(math.Inf(1))
			marks := make([]redis.Z, n)
			for i := range marks {
				marks[i] = redis.Z{Score: marked, Member: "T" + strconv.Itoa(i)}
			}
			if err := be.Client.ZAdd(ctx, keys.Aux(ns, "tasks", "unlist"), marks...).Err(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			res, err := perKey.Tidy(ctx)
			if err != nil || res.Children != n {
				b.Fatalf("Tidy = %+v, %v", res, err)
			}
		}
	})
	// The daily look below 10,000 children without expiry, each with a
	// key below it: nothing to remove.
	b.Run("10k-unexpiring-daily", func(b *testing.B) {
		fill(math.Inf(1))
		pipe := be.Client.Pipeline()
		for i := range n {
			key := "tasks/T" + strconv.Itoa(i) + "/k"
			pipe.ZAdd(ctx, keys.SubtreeIndex(ns, key), redis.Z{Score: math.Inf(1), Member: key})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			b.StopTimer()
			if err := be.Client.Del(ctx, keys.Aux(ns, "tasks", "children-checked")).Err(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if res, err := s.Tidy(ctx); err != nil || res != (store.TidyResult{}) {
				b.Fatalf("Tidy = %+v, %v", res, err)
			}
			b.StopTimer()
			if n, err := be.Client.Exists(ctx, keys.Aux(ns, "tasks", "children-checked")).Result(); err != nil || n != 1 {
				b.Fatalf("children-checked exists: %d, %v; want the look done", n, err)
			}
			b.StartTimer()
		}
	})
}

// On a single Redis the delete that empties a subtree takes it out of the
// listing indexes at once, keys without expiry included (Tidy only sees
// what expired), and a later create puts it back even when its own
// instance's memo says the entries are there.
func TestDeleteDropsWhatItLeavesEmpty(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		const space = "drop"
		a, other := newStore(t, b, store.Config{}), newStore(t, b, store.Config{})
		forever := time.Duration(0)
		put := func(s *store.Store, key string) {
			t.Helper()
			if _, err := s.Put(ctx, space, key, store.PutRequest{Value: json.RawMessage(`1`), TTL: &forever}); err != nil {
				t.Fatal(err)
			}
		}
		del := func(s *store.Store, key string) {
			t.Helper()
			if _, err := s.Delete(ctx, space, key, store.DeleteRequest{}); err != nil {
				t.Fatal(err)
			}
		}
		members := func(key string) string { return sortedMembers(t, b.Client, key) }
		namespaces, roots, children, names := keys.Global("namespaces"), keys.Namespace(space, "roots"), keys.Aux(space, "p", "children"), keys.Aux(space, "p", "names")
		for _, k := range []string{"p/a/k1", "p/a/k2", "p/b/k", "q", "r/x/k"} {
			put(a, k)
		}
		for _, step := range []struct {
			del                  string
			roots, children, nss string
		}{
			{"p/a/k1", "[p q r]", "[a b]", "[drop]"},
			{"p/a/k2", "[p q r]", "[b]", "[drop]"},
			{"p/b/k", "[q r]", "[]", "[drop]"},
			{"q", "[r]", "[]", "[drop]"},
			{"r/x/k", "[]", "[]", "[]"},
		} {
			del(other, step.del)
			if got := members(roots); got != step.roots {
				t.Errorf("after deleting %s: roots %s, want %s", step.del, got, step.roots)
			}
			if got := members(keys.Namespace(space, "names")); got != step.roots {
				t.Errorf("after deleting %s: root names %s, want %s", step.del, got, step.roots)
			}
			if got := members(children); got != step.children {
				t.Errorf("after deleting %s: children of p %s, want %s", step.del, got, step.children)
			}
			if got := members(names); got != step.children {
				t.Errorf("after deleting %s: names of p %s, want %s", step.del, got, step.children)
			}
			if got := members(namespaces); got != step.nss {
				t.Errorf("after deleting %s: namespaces %s, want %s", step.del, got, step.nss)
			}
		}

		// a raised these entries within its memo's trust, and other's
		// deletes dropped them: a's creates, single and in an atomic batch,
		// raise them again in their scripts.
		put(a, "m/a/k")
		put(a, "n/a/k")
		del(other, "m/a/k")
		del(other, "n/a/k")
		put(a, "m/a/k2")
		if _, err := a.Batch(ctx, []store.BatchOp{{Kind: store.OpPut, Namespace: space, Key: "n/a/k2",
			PutRequest: store.PutRequest{Value: json.RawMessage(`1`), TTL: &forever}}}, true); err != nil {
			t.Fatal(err)
		}
		if got, _, err := a.List(ctx, space, "", "", 10); err != nil || fmt.Sprint(got) != "[m/a/k2 n/a/k2]" {
			t.Errorf("List after creates into dropped subtrees = %v, %v; want [m/a/k2 n/a/k2]", got, err)
		}

		// A batch that creates, deletes and creates again in one subtree
		// (one script call on a single Redis) leaves it listed.
		if out, err := a.Batch(ctx, []store.BatchOp{
			{Kind: store.OpPut, Namespace: space, Key: "o/a/k1", PutRequest: store.PutRequest{Value: json.RawMessage(`1`), TTL: &forever}},
			{Kind: store.OpDelete, Namespace: space, Key: "o/a/k1"},
			{Kind: store.OpPut, Namespace: space, Key: "o/a/k2", PutRequest: store.PutRequest{Value: json.RawMessage(`1`), TTL: &forever}},
		}, false); err != nil || out[0].Err != nil || out[1].Err != nil || out[2].Err != nil {
			t.Fatalf("batch = %+v, %v", out, err)
		}
		if got, _, err := a.List(ctx, space, "o/", "", 10); err != nil || fmt.Sprint(got) != "[o/a/k2]" {
			t.Errorf("List(o/) after a batch created, deleted and created again = %v, %v; want [o/a/k2]", got, err)
		}
		del(other, "o/a/k2")

		// The deletes of an atomic batch drop what they leave empty too.
		if _, err := other.Batch(ctx, []store.BatchOp{
			{Kind: store.OpDelete, Namespace: space, Key: "m/a/k2"},
			{Kind: store.OpDelete, Namespace: space, Key: "n/a/k2"},
		}, true); err != nil {
			t.Fatal(err)
		}
		if got := members(namespaces); got != "[]" {
			t.Errorf("after an atomic batch deleted every key: namespaces %s, want []", got)
		}
		if got := members(roots); got != "[]" {
			t.Errorf("after an atomic batch deleted every key: roots %s, want []", got)
		}
	})
}

// Creates and deletes racing on a few subtrees from two instances leave
// the listing indexes exact on a single Redis: a subtree is listed in its
// parent's children if and only if it has a key, and List returns exactly
// the keys that exist.
func TestListingIndexesExactUnderCreatesAndDeletes(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		const space = "race"
		stores := []*store.Store{newStore(t, b, store.Config{}), newStore(t, b, store.Config{})}
		forever := time.Duration(0)
		key := func(i int) string { return fmt.Sprintf("c/s%d/k%d", i%4, i/4) }
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s, r := stores[g%2], rand.New(rand.NewPCG(uint64(g), 7))
				for range 150 {
					k := key(r.IntN(12))
					var err error
					if r.IntN(2) == 0 {
						_, err = s.Put(ctx, space, k, store.PutRequest{Value: json.RawMessage(`1`), TTL: &forever})
					} else if _, err = s.Delete(ctx, space, k, store.DeleteRequest{}); errors.Is(err, store.ErrNotFound) {
						err = nil
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		var exist []string
		nonEmpty := map[string]bool{}
		for i := range 12 {
			if _, err := stores[0].Get(ctx, space, key(i), store.GetOptions{Consistent: true}); err == nil {
				exist = append(exist, key(i))
				nonEmpty[fmt.Sprintf("s%d", i%4)] = true
			} else if !errors.Is(err, store.ErrNotFound) {
				t.Fatal(err)
			}
		}
		slices.Sort(exist)
		if got, _, err := stores[1].List(ctx, space, "", "", 100); err != nil || fmt.Sprint(got) != fmt.Sprint(exist) {
			t.Errorf("List = %v, %v; want the keys that exist, %v", got, err, exist)
		}
		listed, err := b.Client.ZRange(ctx, keys.Aux(space, "c", "children"), 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		for i := range 4 {
			s := fmt.Sprintf("s%d", i)
			if slices.Contains(listed, s) != nonEmpty[s] {
				t.Errorf("subtree c/%s: listed in children %v, has keys %v", s, slices.Contains(listed, s), nonEmpty[s])
			}
		}
		named, err := b.Client.ZRange(ctx, keys.Aux(space, "c", "names"), 0, -1).Result()
		if slices.Sort(listed); err != nil || fmt.Sprint(named) != fmt.Sprint(listed) {
			t.Errorf("names of c = %v, %v; want the children %v", named, err, listed)
		}
	})
}

// On the per-write path (Redis Cluster) a delete cannot take the subtree
// it empties out of the listing indexes, in other hash slots; it marks
// the entry above it instead, and Tidy removes an entry marked more than a
// minute ago with nothing below it, then its root and namespace once they
// are empty too. Keys without expiry are the case that matters: their
// entries are scored +inf, so nothing else would ever remove them.
func TestTidyUnlistsWhatPerKeyDeletesLeaveEmpty(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		checkTidyMarked(t, b.Client)
	})
	t.Run("cluster", func(t *testing.T) {
		checkTidyMarked(t, redistest.ClusterClient(t, redistest.StartCluster(t, 3)))
	})
}

// checkTidyMarked is TestTidyUnlistsWhatPerKeyDeletesLeaveEmpty on c.
func checkTidyMarked(t *testing.T, c redis.UniversalClient) {
	ctx := context.Background()
	perKey := store.Config{PerKeyScripts: true}
	live := newStoreOn(t, c, perKey)
	forever := time.Duration(0)
	put := func(s *store.Store, namespace, key string) {
		t.Helper()
		if _, err := s.Put(ctx, namespace, key, store.PutRequest{Value: json.RawMessage(`1`), TTL: &forever}); err != nil {
			t.Fatal(err)
		}
	}
	del := func(s *store.Store, namespace, key string) {
		t.Helper()
		if _, err := s.Delete(ctx, namespace, key, store.DeleteRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	members := func(key string) string { return sortedMembers(t, c, key) }
	for _, k := range []string{"p/a/k1", "p/a/k2", "p/b/k", "q", "r/x/k", "keep/a/k"} {
		put(live, ns, k)
	}
	put(live, "gone", "x/y/z")

	// A delete marks what it empties; a mark younger than a minute is left.
	del(live, ns, "p/b/k")
	if got := members(keys.Aux(ns, "p", "unlist")); got != "[b]" {
		t.Errorf("marks of p's children after deleting p/b/k = %s, want [b]", got)
	}
	if res, err := live.Tidy(ctx); err != nil || res != (store.TidyResult{}) {
		t.Errorf("Tidy right after the delete = %+v, %v; want nothing removed", res, err)
	}
	if got := members(keys.Aux(ns, "p", "children")); got != "[a b]" {
		t.Errorf("children of p right after the delete = %s, want [a b]", got)
	}

	// Marks aged two hours before each Tidy: p/a (once its last key went;
	// deleting p/a/k1 empties nothing), r/x and then r, q, gone's x/y, x
	// and gone itself. p/b keeps its young mark, and so p stays.
	// q goes in an atomic batch, r/x/k in a plain one.
	for _, k := range []string{"p/a/k1", "p/a/k2"} {
		del(live, ns, k)
	}
	del(live, "gone", "x/y/z")
	for _, atomic := range []bool{true, false} {
		k := map[bool]string{true: "q", false: "r/x/k"}[atomic]
		out, err := live.Batch(ctx, []store.BatchOp{{Kind: store.OpDelete, Namespace: ns, Key: k}}, atomic)
		if err != nil || out[0].Err != nil {
			t.Fatalf("batch delete of %s: %v, %+v", k, err, out)
		}
	}
	// A mark that landed after a write put a key below it again (the
	// delete's mark raced a create): the entry stays, the mark goes.
	if err := c.ZAdd(ctx, keys.Aux(ns, "keep", "unlist"), redis.Z{Score: float64(time.Now().Add(-time.Hour).UnixMilli()), Member: "a"}).Err(); err != nil {
		t.Fatal(err)
	}
	youngB := keys.Aux(ns, "p", "unlist") + " b"
	if res, want := store.TidyAged(t, live, c, youngB), (store.TidyResult{Namespaces: 1, Roots: 3, Children: 3}); res != want {
		t.Errorf("Tidy rounds = %+v; want %+v", res, want)
	}
	if got := live.Stats().Tidied; got != 7 {
		t.Errorf("Stats().Tidied = %d, want 7", got)
	}
	for _, tt := range []struct{ key, want string }{
		{keys.Global("namespaces"), "[test]"},
		{keys.Namespace(ns, "roots"), "[keep p]"},
		{keys.Namespace(ns, "names"), "[keep p]"},
		{keys.Aux(ns, "p", "children"), "[b]"},
		{keys.Aux(ns, "p", "names"), "[b]"},
		{keys.Aux(ns, "p", "unlist"), "[b]"},
		{keys.Aux(ns, "r", "children"), "[]"},
		{keys.Aux(ns, "keep", "children"), "[a]"},
		{keys.Aux(ns, "keep", "unlist"), "[]"},
		{keys.Namespace(ns, "unlist"), "[]"},
		{keys.Namespace("gone", "roots"), "[]"},
		{keys.Aux("gone", "x", "children"), "[]"},
		{keys.Global("unlist"), "[]"},
	} {
		if got := members(tt.key); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.key, got, tt.want)
		}
	}
	if got, _, err := live.List(ctx, ns, "", "", 100); err != nil || fmt.Sprint(got) != "[keep/a/k]" {
		t.Errorf("List after Tidy = %v, %v; want [keep/a/k]", got, err)
	}

	// Written again: listed again, with the mark that was left taken
	// away. (A fresh store: live's memo of these entries is seconds old,
	// where the aged marks skipped the hours a memo outlives.)
	again := newStoreOn(t, c, perKey)
	put(again, ns, "p/a/k3")
	put(again, ns, "p/b/k")
	put(again, "gone", "x/y/z")
	if got, _, err := live.List(ctx, ns, "p/", "", 100); err != nil || fmt.Sprint(got) != "[p/a/k3 p/b/k]" {
		t.Errorf("List(p/) after new writes = %v, %v; want [p/a/k3 p/b/k]", got, err)
	}
	if got, _, err := live.List(ctx, "gone", "", "", 100); err != nil || fmt.Sprint(got) != "[x/y/z]" {
		t.Errorf("List in namespace gone after a new write = %v, %v; want [x/y/z]", got, err)
	}
	if got := members(keys.Aux(ns, "p", "unlist")); got != "[]" {
		t.Errorf("marks of p's children after new writes = %s, want []", got)
	}
	if res := store.TidyAged(t, live, c); res != (store.TidyResult{}) {
		t.Errorf("Tidy after new writes = %+v; want nothing removed", res)
	}
}

// A key written without expiry scores its listing entries +inf, and a
// later TTL never lowers them (ZADD GT), so once the key expires the
// entries above it never come due. The expiry takes them out all the same:
// on a single Redis the sweeper's script drops what it leaves empty, on
// the per-key path (Cluster) it marks it and Tidy removes it.
func TestExpiryUnlistsASubtreeOnceWithoutTTL(t *testing.T) {
	eachWritePath(t, checkExpiryUnlists)
}

// checkExpiryUnlists is TestExpiryUnlistsASubtreeOnceWithoutTTL on c.
func checkExpiryUnlists(t *testing.T, c redis.UniversalClient, perKey bool) {
	ctx := context.Background()
	const space = "expiry"
	at := func(ago time.Duration) *store.Store {
		return newStoreOn(t, c, store.Config{PerKeyScripts: perKey, Now: func() time.Time { return time.Now().Add(-ago) }})
	}
	// The key is rewritten two hours ago with a TTL of a minute, and
	// swept (and its subtree marked) an hour ago; its marks are aged.
	live, past, mid := at(0), at(2*time.Hour), at(time.Hour)
	forever, minute := time.Duration(0), time.Minute
	for _, w := range []struct {
		s   *store.Store
		key string
		ttl *time.Duration
	}{{live, "e/a/k", &forever}, {live, "f", &forever}, {past, "e/a/k", &minute}, {past, "f", &minute}} {
		if _, err := w.s.Put(ctx, space, w.key, store.PutRequest{Value: json.RawMessage(`1`), TTL: w.ttl}); err != nil {
			t.Fatal(err)
		}
	}
	if score, err := c.ZScore(ctx, keys.Aux(space, "e", "children"), "a").Result(); err != nil || !math.IsInf(score, 1) {
		t.Fatalf("children entry e/a scores %v, %v; want +inf", score, err)
	}
	if evs, err := mid.Sweep(ctx); err != nil || len(evs) != 2 {
		t.Fatalf("Sweep = %d events, %v; want the 2 expiries", len(evs), err)
	}
	res := store.TidyAged(t, mid, c)
	want := store.TidyResult{Namespaces: 1, Roots: 2, Children: 1}
	if !perKey {
		want = store.TidyResult{} // the sweep dropped them
	}
	if res != want {
		t.Errorf("Tidy rounds = %+v; want %+v", res, want)
	}
	for _, k := range []string{keys.Aux(space, "e", "children"), keys.Aux(space, "e", "names"), keys.Namespace(space, "roots")} {
		if n, err := c.ZCard(ctx, k).Result(); err != nil || n != 0 {
			t.Errorf("%s has %d members, %v; want none", k, n, err)
		}
	}
	if found, err := c.ZScore(ctx, keys.Global("namespaces"), space).Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("namespace %s still listed (score %v, %v)", space, found, err)
	}
}

// sortedMembers returns the members of the sorted set key, sorted, as
// fmt.Sprint prints them.
func sortedMembers(t *testing.T, c redis.UniversalClient, key string) string {
	t.Helper()
	m, err := c.ZRange(context.Background(), key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return fmt.Sprint(m)
}

// A write raises the listing entries above its key before its script
// runs, so a write whose condition then fails on a key that does not
// exist (a single PUT, a put of a batch, an atomic batch refused whole)
// has raised them over nothing. They are taken out again: at once on a
// single Redis, by Tidy after a mark on the per-key path (Cluster).
func TestRefusedCreatesLeaveNothingListed(t *testing.T) {
	eachWritePath(t, checkRefusedCreates)
}

// checkRefusedCreates is TestRefusedCreatesLeaveNothingListed on c.
func checkRefusedCreates(t *testing.T, c redis.UniversalClient, perKey bool) {
	ctx := context.Background()
	const space = "refused"
	s := newStoreOn(t, c, store.Config{PerKeyScripts: perKey})
	forever := time.Duration(0)
	put := func(key, ifMatch string) store.BatchOp {
		return store.BatchOp{Kind: store.OpPut, Namespace: space, Key: key,
			PutRequest: store.PutRequest{Value: json.RawMessage(`1`), TTL: &forever, IfMatch: ifMatch}}
	}
	single := put("f1/a/k", "*")
	if _, err := s.Put(ctx, space, single.Key, single.PutRequest); !errors.Is(err, store.ErrPreconditionFailed) {
		t.Fatalf("Put with If-Match * on a new key: %v, want ErrPreconditionFailed", err)
	}
	out, err := s.Batch(ctx, []store.BatchOp{put("f2/a/k", "0123"), put("f2/b/k", "")}, false)
	if err != nil || !errors.Is(out[0].Err, store.ErrPreconditionFailed) || out[1].Err != nil {
		t.Fatalf("batch = %+v, %v; want the first put refused, the second written", out, err)
	}
	if _, err := s.Batch(ctx, []store.BatchOp{put("f3/a/k", "*")}, true); !errors.Is(err, store.ErrPreconditionFailed) {
		t.Fatalf("atomic batch: %v, want ErrPreconditionFailed", err)
	}
	if perKey {
		want := store.TidyResult{Roots: 2, Children: 3} // f1/a, f2/a, f3/a; f1, f3
		if res := store.TidyAged(t, s, c); res != want {
			t.Errorf("Tidy rounds = %+v; want %+v", res, want)
		}
	}
	for _, tt := range []struct{ key, want string }{
		{keys.Namespace(space, "roots"), "[f2]"},
		{keys.Namespace(space, "names"), "[f2]"},
		{keys.Aux(space, "f2", "children"), "[b]"},
		{keys.Aux(space, "f1", "children"), "[]"},
		{keys.Aux(space, "f3", "children"), "[]"},
	} {
		if got := sortedMembers(t, c, tt.key); got != tt.want {
			t.Errorf("%s = %s, want %s", tt.key, got, tt.want)
		}
	}
	if got, _, err := s.List(ctx, space, "", "", 10); err != nil || fmt.Sprint(got) != "[f2/b/k]" {
		t.Errorf("List = %v, %v; want [f2/b/k]", got, err)
	}
}

// A child left listed above a subtree without keys (scored +inf, never
// due, and unmarked), by a version before the marks or by a delete whose
// mark was lost, is found by a Tidy that looks below every child of its
// root: it is taken out at once on a single Redis, through a mark on the
// per-key path (Cluster). That look holds for a day per root, and so does
// the one below every root of a namespace, for a root left with nothing
// below it.
func TestTidyChecksEveryUnexpiringEntryDaily(t *testing.T) {
	eachWritePath(t, checkUnexpiringChecked)
}

// checkUnexpiringChecked is TestTidyChecksEveryUnexpiringEntryDaily on c.
func checkUnexpiringChecked(t *testing.T, c redis.UniversalClient, perKey bool) {
	ctx := context.Background()
	const space = "legacy"
	s := newStoreOn(t, c, store.Config{PerKeyScripts: perKey})
	forever := time.Duration(0)
	if _, err := s.Put(ctx, space, "old/b/k", store.PutRequest{Value: json.RawMessage(`1`), TTL: &forever}); err != nil {
		t.Fatal(err)
	}
	leave := func(index, names, member string) { // listed, nothing below
		t.Helper()
		pipe := c.Pipeline()
		pipe.ZAdd(ctx, index, redis.Z{Score: math.Inf(1), Member: member})
		pipe.ZAdd(ctx, names, redis.Z{Member: member})
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	children, childNames := keys.Aux(space, "old", "children"), keys.Aux(space, "old", "names")
	roots, rootNames := keys.Namespace(space, "roots"), keys.Namespace(space, "names")
	checkedChildren, checkedRoots := keys.Aux(space, "old", "children-checked"), keys.Namespace(space, "roots-checked")
	want := func(when string, wants map[string]string) {
		t.Helper()
		for _, k := range []string{roots, rootNames, children, childNames} {
			if got := sortedMembers(t, c, k); got != wants[k] {
				t.Errorf("%s %s = %s, want %s", k, when, got, wants[k])
			}
		}
	}
	leave(children, childNames, "a")
	leave(roots, rootNames, "lone") // its key of one segment gone
	store.TidyAged(t, s, c)
	want("after the first Tidy", map[string]string{roots: "[old]", rootNames: "[old]", children: "[b]", childNames: "[b]"})
	for _, flag := range []string{checkedChildren, checkedRoots} {
		if ttl, err := c.PTTL(ctx, flag).Result(); err != nil || ttl < 24*time.Hour || ttl > 30*time.Hour {
			t.Errorf("%s expires in %v, %v; want between a day and 30 hours", flag, ttl, err)
		}
	}

	// Within the day, what is left listed stays; but on the per-key path
	// every Tidy marks a root with nothing below it.
	leave(children, childNames, "c")
	leave(roots, rootNames, "lone2")
	store.TidyAged(t, s, c)
	within := "[lone2 old]"
	if perKey {
		within = "[old]"
	}
	want("within the day", map[string]string{roots: within, rootNames: within, children: "[b c]", childNames: "[b c]"})

	// Once the checks lapse, it goes.
	if err := c.Del(ctx, checkedRoots).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Del(ctx, checkedChildren).Err(); err != nil {
		t.Fatal(err)
	}
	store.TidyAged(t, s, c)
	want("after the checks lapsed", map[string]string{roots: "[old]", rootNames: "[old]", children: "[b]", childNames: "[b]"})
	if got, _, err := s.List(ctx, space, "", "", 10); err != nil || fmt.Sprint(got) != "[old/b/k]" {
		t.Errorf("List = %v, %v; want [old/b/k]", got, err)
	}
}

// eachWritePath runs check on both write paths of a single Redis, each
// after a FLUSHALL (miniredis and redis-server: one script per group of
// writes, and one per write as on Cluster), then on a real Cluster of
// three masters.
func eachWritePath(t *testing.T, check func(t *testing.T, c redis.UniversalClient, perKey bool)) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		for _, perKey := range []bool{false, true} {
			t.Run(map[bool]string{false: "one-script", true: "per-key"}[perKey], func(t *testing.T) {
				if err := b.Client.FlushAll(context.Background()).Err(); err != nil {
					t.Fatal(err)
				}
				check(t, b.Client, perKey)
			})
		}
	})
	t.Run("cluster", func(t *testing.T) {
		check(t, redistest.ClusterClient(t, redistest.StartCluster(t, 3)), true)
	})
}
