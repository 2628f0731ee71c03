package store

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/redistest"
)

// A write into a dead subtree between Tidy's reading of the stale entries
// and their removal (forced here by beforeUnlist) keeps the subtree listed:
// the write raised the entries first, and Tidy removes only entries still
// in the past. (Per-key writes, as on Cluster: on a single Redis the sweep
// takes the subtree out itself.)
func TestTidyKeepsWhatAWriteRaisesMeanwhile(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		newAt := func(now func() time.Time) *Store {
			s, err := New(b.Client, Config{Now: now, PerKeyScripts: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		past := newAt(func() time.Time { return time.Now().Add(-2 * time.Hour) })
		live := newAt(nil)
		ttl := time.Minute
		put := func(s *Store, key string) {
			t.Helper()
			if _, err := s.Put(ctx, "test", key, PutRequest{Value: json.RawMessage(`1`), TTL: &ttl}); err != nil {
				t.Fatal(err)
			}
		}
		put(past, "old/a/k")
		if _, err := live.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		children := keys.Aux("test", "old", "children")
		wrote := false
		beforeUnlist = func(index string) {
			if index == children && !wrote {
				wrote = true
				put(live, "old/a/k2")
			}
		}
		t.Cleanup(func() { beforeUnlist = nil })
		res, err := live.Tidy(ctx)
		if err != nil || !wrote || res != (TidyResult{}) {
			t.Errorf("Tidy = %+v, %v (wrote meanwhile: %v); want nothing removed", res, err, wrote)
		}
		if got, _, err := live.List(ctx, "test", "", "", 10); err != nil || fmt.Sprint(got) != "[old/a/k2]" {
			t.Errorf("List = %v, %v; want [old/a/k2]", got, err)
		}
	})
}

// On the per-write path, a create below a marked entry between Tidy's
// look below it and its removal (forced here by beforeUnlist) keeps the
// entry listed: the create's raise took the mark away, and Tidy removes
// only entries still marked. The entry's score, +inf, never changed.
func TestTidyKeepsWhatACreateUnmarksMeanwhile(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		newAt := func(now func() time.Time) *Store {
			s, err := New(b.Client, Config{Now: now, PerKeyScripts: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		past := newAt(func() time.Time { return time.Now().Add(-2 * time.Hour) })
		forever := time.Duration(0)
		put := func(s *Store, key string) {
			t.Helper()
			if _, err := s.Put(ctx, "test", key, PutRequest{Value: json.RawMessage(`1`), TTL: &forever}); err != nil {
				t.Fatal(err)
			}
		}
		put(past, "old/a/k")
		if _, err := past.Delete(ctx, "test", "old/a/k", DeleteRequest{}); err != nil {
			t.Fatal(err)
		}
		children := keys.Aux("test", "old", "children")
		wrote := false
		beforeUnlist = func(index string) {
			if index == children && !wrote {
				wrote = true
				put(newAt(nil), "old/a/k2") // no memo of the entry: it raises it
			}
		}
		t.Cleanup(func() { beforeUnlist = nil })
		res, err := past.Tidy(ctx)
		if err != nil || !wrote || res != (TidyResult{}) {
			t.Errorf("Tidy = %+v, %v (wrote meanwhile: %v); want nothing removed", res, err, wrote)
		}
		if got, _, err := past.List(ctx, "test", "", "", 10); err != nil || fmt.Sprint(got) != "[old/a/k2]" {
			t.Errorf("List = %v, %v; want [old/a/k2]", got, err)
		}
	})
}
