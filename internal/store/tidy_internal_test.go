package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/redistest"
)

// A write into a dead subtree between Tidy's look below its entry and the
// entry's removal (forced here by beforeUnlist) keeps the subtree listed.
// Writes as on Cluster (per key): on a single Redis the sweep and the
// delete take the subtree out themselves.
//
//   - past-score: the subtree's key expired two hours ago and was swept;
//     the write raised the entry first, and Tidy removes only entries
//     whose score is still in the past.
//   - marked: the subtree's key, without expiry, was deleted and the entry
//     marked (its score is +inf and stays so), the mark aged two hours; the
//     write's raise took the mark away, and Tidy removes only entries
//     still marked.
//   - marked-again: as marked, but the key written meanwhile is deleted
//     again at once, which marks the entry anew: Tidy removes only entries
//     whose mark is old, and this one waits for its new mark to age, as
//     the delete may race another create.
func TestTidyKeepsWhatAWriteRaisesMeanwhile(t *testing.T) {
	tests := []struct {
		name string
		ttl  time.Duration
		// kill leaves old/a/k's subtree dead (its marks are aged after):
		// past's clock is two hours behind, live's is right.
		kill func(ctx context.Context, past, live *Store) error
		// deleteAgain deletes the key written meanwhile at once.
		deleteAgain bool
	}{
		{"past-score", time.Minute, func(ctx context.Context, _, live *Store) error {
			_, err := live.Sweep(ctx)
			return err
		}, false},
		{"marked", 0, deleteOldKey, false},
		{"marked-again", 0, deleteOldKey, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			redistest.Each(t, func(t *testing.T, b redistest.Backend) {
				ctx := context.Background()
				past := perKeyStoreAt(t, b, func() time.Time { return time.Now().Add(-2 * time.Hour) })
				live := perKeyStoreAt(t, b, nil)
				put := func(s *Store, key string) {
					t.Helper()
					if _, err := s.Put(ctx, "test", key, PutRequest{Value: json.RawMessage(`1`), TTL: &tt.ttl}); err != nil {
						t.Fatal(err)
					}
				}
				put(past, "old/a/k")
				if err := tt.kill(ctx, past, live); err != nil {
					t.Fatal(err)
				}
				AgeMarks(t, b.Client, 2*time.Hour)
				children := keys.Aux("test", "old", "children")
				wrote := false
				beforeUnlist = func(index string) {
					if index == children && !wrote {
						wrote = true
						put(live, "old/a/k2") // live has no memo of the entry: it raises it
						if tt.deleteAgain {
							if _, err := live.Delete(ctx, "test", "old/a/k2", DeleteRequest{}); err != nil {
								t.Fatal(err)
							}
						}
					}
				}
				t.Cleanup(func() { beforeUnlist = nil })
				res, err := past.Tidy(ctx)
				if err != nil || !wrote || res != (TidyResult{}) {
					t.Errorf("Tidy = %+v, %v (wrote meanwhile: %v); want nothing removed", res, err, wrote)
				}
				if got, err := b.Client.ZRange(ctx, children, 0, -1).Result(); err != nil || fmt.Sprint(got) != "[a]" {
					t.Errorf("children of old = %v, %v; want [a]", got, err)
				}
				want := "[old/a/k2]"
				if tt.deleteAgain {
					want = "[]"
				}
				if got, _, err := live.List(ctx, "test", "", "", 10); err != nil || fmt.Sprint(got) != want {
					t.Errorf("List = %v, %v; want %s", got, err, want)
				}
			})
		})
	}
}

// deleteOldKey deletes old/a/k through past, which marks its subtree's
// entry.
func deleteOldKey(ctx context.Context, past, _ *Store) error {
	_, err := past.Delete(ctx, "test", "old/a/k", DeleteRequest{})
	return err
}

// perKeyStoreAt returns a store on b that writes as on Cluster, its clock
// now (nil: the real one).
func perKeyStoreAt(t *testing.T, b redistest.Backend, now func() time.Time) *Store {
	t.Helper()
	s, err := New(b.Client, Config{Now: now, PerKeyScripts: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Creates and deletes racing from two instances on the per-key path
// (Cluster), while a third tidies all along, with the memo's trust and
// Tidy's margin shrunk (20 ms and 600 ms, for 5 s and a minute): a
// listing right after a write shows its key, Tidy removes entries all the
// while, and once the writes stop, tidying leaves the indexes exact (an
// entry listed if and only if something is below it). The narrow race of
// a create between Tidy's look below an entry and its removal is forced
// in TestTidyKeepsWhatAWriteRaisesMeanwhile.
func TestTidyUnderRacingCreatesAndDeletes(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		oldMemo, oldMargin := memoTTL, tidyMargin
		memoTTL, tidyMargin = 20*time.Millisecond, 600*time.Millisecond
		t.Cleanup(func() { memoTTL, tidyMargin = oldMemo, oldMargin })
		ctx := context.Background()
		const space = "race"
		writers := []*Store{perKeyStoreAt(t, b, nil), perKeyStoreAt(t, b, nil)}
		tidier := perKeyStoreAt(t, b, nil)
		forever := time.Duration(0)
		// Keys c/s<sub>/k<j> in 20 subtrees of c, two in each, and d<g> of
		// one segment. Each key has one writer (owner), so that a key a
		// writer has written stays until that writer deletes it, while the
		// two keys of a subtree have different writers, whose creates and
		// deletes race over the subtree's entry. A writer picks its
		// subtrees skewed, so that some are busy and others stay empty long
		// enough for Tidy.
		const writerCount, subtrees = 6, 20
		key := func(sub, j int) string { return fmt.Sprintf("c/s%02d/k%d", sub, j) }
		owner := func(sub, j int) int { return (sub*2 + j) % writerCount }
		pick := func(r *rand.Rand, g int) string {
			if r.IntN(8) == 0 {
				return fmt.Sprintf("d%d", g)
			}
			for {
				sub, j := int(subtrees*math.Pow(r.Float64(), 3)), r.IntN(2)
				if owner(sub, j) == g {
					return key(sub, j)
				}
			}
		}
		var all []string
		for sub := range subtrees {
			all = append(all, key(sub, 0), key(sub, 1))
		}
		for g := range writerCount {
			all = append(all, fmt.Sprintf("d%d", g))
		}
		stop := make(chan struct{})
		var writes sync.WaitGroup
		var missed atomic.Int64 // keys a listing right after their write did not show
		for g := range writerCount {
			writes.Add(1)
			go func() {
				defer writes.Done()
				s, r := writers[g%2], rand.New(rand.NewPCG(uint64(g), 11))
				for {
					select {
					case <-stop:
						return
					default:
					}
					k := pick(r, g)
					if r.IntN(2) == 0 {
						if _, err := s.Put(ctx, space, k, PutRequest{Value: json.RawMessage(`1`), TTL: &forever}); err != nil {
							t.Error(err)
							return
						}
						got, _, err := s.List(ctx, space, k, "", 10)
						if err != nil {
							t.Error(err)
							return
						}
						if !slices.Contains(got, k) { // only its writer deletes it
							missed.Add(1)
						}
					} else if _, err := s.Delete(ctx, space, k, DeleteRequest{}); err != nil && !errors.Is(err, ErrNotFound) {
						t.Error(err)
						return
					}
					time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
				}
			}()
		}
		// And one more writer leaves a subtree of c empty every 50 ms,
		// for Tidy to remove while the others write.
		writes.Add(1)
		go func() {
			defer writes.Done()
			for n := range 20 {
				k := fmt.Sprintf("c/x%02d/k", n)
				if _, err := writers[0].Put(ctx, space, k, PutRequest{Value: json.RawMessage(`1`), TTL: &forever}); err != nil {
					t.Error(err)
					return
				}
				if _, err := writers[1].Delete(ctx, space, k, DeleteRequest{}); err != nil {
					t.Error(err)
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		var removed int
		tidied := make(chan struct{})
		go func() {
			defer close(tidied)
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				res, err := tidier.Tidy(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				removed += res.Children + res.Roots + res.Namespaces
			}
		}()
		time.Sleep(3500 * time.Millisecond)
		close(stop)
		writes.Wait()
		<-tidied
		if n := missed.Load(); n > 0 {
			t.Errorf("%d keys were missing from a listing right after their write", n)
		}
		if removed < 10 {
			t.Errorf("Tidy removed %d entries while the writes ran; want at least 10 of the 20 emptied in the first second or so", removed)
		}

		// The writes have stopped: three rounds, each after the margin,
		// take out what is empty, a level at a time.
		for range 3 {
			time.Sleep(tidyMargin + 50*time.Millisecond)
			if _, err := tidier.Tidy(ctx); err != nil {
				t.Fatal(err)
			}
		}
		var exist []string
		nonEmpty, roots := map[string]bool{}, map[string]bool{}
		for _, k := range all {
			if _, err := tidier.Get(ctx, space, k, GetOptions{Consistent: true}); err == nil {
				exist = append(exist, k)
				first, rest, deep := strings.Cut(k, "/")
				roots[first] = true
				if deep {
					second, _, _ := strings.Cut(rest, "/")
					nonEmpty[second] = true
				}
			} else if !errors.Is(err, ErrNotFound) {
				t.Fatal(err)
			}
		}
		slices.SortFunc(exist, pathCompare)
		if got, _, err := tidier.List(ctx, space, "", "", 100); err != nil || fmt.Sprint(got) != fmt.Sprint(exist) {
			t.Errorf("List = %v, %v; want the keys that exist, %v", got, err, exist)
		}
		members := func(key string) []string {
			t.Helper()
			m, err := b.Client.ZRange(ctx, key, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(m)
			return m
		}
		sortedKeys := func(m map[string]bool) []string {
			out := make([]string, 0, len(m))
			for k := range m {
				out = append(out, k)
			}
			slices.Sort(out)
			return out
		}
		if got, want := members(keys.Aux(space, "c", "children")), sortedKeys(nonEmpty); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("children of c = %v; want the subtrees with keys, %v", got, want)
		}
		if got, want := members(keys.Namespace(space, "roots")), sortedKeys(roots); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("roots = %v; want the first segments with keys, %v", got, want)
		}
		t.Logf("Tidy removed %d entries while the writes ran", removed)
	})
}
