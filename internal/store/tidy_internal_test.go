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

// A write into a dead subtree between Tidy's look below its entry and the
// entry's removal (forced here by beforeUnlist) keeps the subtree listed.
// Writes as on Cluster (per key): on a single Redis the sweep and the
// delete take the subtree out themselves.
//
//   - past-score: the subtree's key expired two hours ago and was swept;
//     the write raised the entry first, and Tidy removes only entries
//     whose score is still in the past.
//   - marked: the subtree's key, without expiry, was deleted two hours ago
//     and the entry marked (its score is +inf and stays so); the write's
//     raise took the mark away, and Tidy removes only entries still marked.
func TestTidyKeepsWhatAWriteRaisesMeanwhile(t *testing.T) {
	tests := []struct {
		name string
		ttl  time.Duration
		// kill leaves old/a/k's subtree dead: past's clock is two hours
		// behind, live's is right.
		kill func(ctx context.Context, past, live *Store) error
	}{
		{"past-score", time.Minute, func(ctx context.Context, _, live *Store) error {
			_, err := live.Sweep(ctx)
			return err
		}},
		{"marked", 0, func(ctx context.Context, past, _ *Store) error {
			_, err := past.Delete(ctx, "test", "old/a/k", DeleteRequest{})
			return err
		}},
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
				children := keys.Aux("test", "old", "children")
				wrote := false
				beforeUnlist = func(index string) {
					if index == children && !wrote {
						wrote = true
						put(live, "old/a/k2") // live has no memo of the entry: it raises it
					}
				}
				t.Cleanup(func() { beforeUnlist = nil })
				res, err := past.Tidy(ctx)
				if err != nil || !wrote || res != (TidyResult{}) {
					t.Errorf("Tidy = %+v, %v (wrote meanwhile: %v); want nothing removed", res, err, wrote)
				}
				if got, _, err := live.List(ctx, "test", "", "", 10); err != nil || fmt.Sprint(got) != "[old/a/k2]" {
					t.Errorf("List = %v, %v; want [old/a/k2]", got, err)
				}
			})
		})
	}
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
