package store_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

// Children written before the names index existed are listed all the
// same (from the children index), and Tidy fills the names index with
// them, after which listing pages through it. The same holds one level up,
// for the roots of a namespace and its names index: first segments, here
// each a key of one segment.
func TestListWithoutNamesIndex(t *testing.T) {
	for _, tt := range []struct {
		level  string
		key    string // a key, from its number
		prefix string
		names  string // the names index
	}{
		{"children", "tasks/T%03d/state", "tasks/T", keys.Aux(ns, "tasks", "names")},
		{"roots", "T%03d", "T", keys.Namespace(ns, "names")},
	} {
		t.Run(tt.level, func(t *testing.T) {
			redistest.Each(t, func(t *testing.T, b redistest.Backend) {
				checkListWithoutNames(t, b, tt.key, tt.prefix, tt.names)
			})
		})
	}
}

// checkListWithoutNames is TestListWithoutNamesIndex for one level.
func checkListWithoutNames(t *testing.T, b redistest.Backend, keyf, prefix, names string) {
	ctx := context.Background()
	s := newStore(t, b, store.Config{})
	var want []string
	for i := range 150 { // more than a chunk of names
		k := fmt.Sprintf(keyf, i)
		mustPut(t, s, k, "w1", `1`, nil)
		want = append(want, k)
	}
	listAll := func() []string {
		t.Helper()
		var got []string
		cursor := ""
		for range 100 {
			page, next, err := s.List(ctx, ns, prefix, cursor, 7)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, page...)
			if cursor = next; cursor == "" {
				break
			}
		}
		return got
	}
	if got := listAll(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("List with the names index = %v", got)
	}
	if err := b.Client.Del(ctx, names).Err(); err != nil { // as before this version
		t.Fatal(err)
	}
	k := fmt.Sprintf(keyf, 999)
	mustPut(t, s, k, "w1", `1`, nil) // a name, but not all
	want = append(want, k)
	if got := listAll(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("List with the names index missing = %v", got)
	}
	if _, err := s.Tidy(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Client.ZCard(ctx, names).Result(); err != nil || n != 151 {
		t.Errorf("names after Tidy: %d, %v; want 151", n, err)
	}
	if got := listAll(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("List after Tidy filled the names index = %v", got)
	}

	// Names whose children are gone (a write that named its child after a
	// delete dropped it, then created nothing) are removed.
	if err := b.Client.ZAdd(ctx, names, redis.Z{Member: "T0x"}, redis.Z{Member: "T5x"}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tidy(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Client.ZCard(ctx, names).Result(); err != nil || n != 151 {
		t.Errorf("names after Tidy with two stray ones: %d, %v; want 151", n, err)
	}
	if got := listAll(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("List after Tidy removed stray names = %v", got)
	}
}

// BenchmarkListPage lists pages of 100 keys under a prefix with 100,000
// subtrees of a key each, on a real redis-server: a page reads about as
// many names as it lists, rather than every child's.
func BenchmarkListPage(b *testing.B) {
	benchListPages(b, "tasks/", func(i int) string { return "tasks/T" + strconv.Itoa(i) + "/state" })
}

// BenchmarkListFlatPage lists pages of 100 keys of a namespace of 100,000
// keys of one segment each (every key its own first segment), on a real
// redis-server: the listing of a flat keyspace, as Redis users write one.
func BenchmarkListFlatPage(b *testing.B) {
	benchListPages(b, "", func(i int) string { return "user:" + strconv.Itoa(i) })
}

// benchListPages writes 100,000 keys named by key, then lists them under
// prefix a page of 100 at a time, over and over.
func benchListPages(b *testing.B, prefix string, key func(i int) string) {
	be := redistest.Real(b)
	s := newStore(b, be, store.Config{})
	ctx := context.Background()
	const n = 100_000
	ops := make([]store.BatchOp, 0, store.MaxBatchOps)
	for i := range n {
		ops = append(ops, putOp(key(n+i), `1`))
		if len(ops) == cap(ops) {
			mustBatch(b, s, ops)
			ops = ops[:0]
		}
	}
	cursor := ""
	for b.Loop() {
		page, next, err := s.List(ctx, ns, prefix, cursor, 100)
		if err != nil || len(page) != 100 {
			b.Fatalf("List = %d keys, %v", len(page), err)
		}
		cursor = next // "" at the end: from the start again
	}
}
