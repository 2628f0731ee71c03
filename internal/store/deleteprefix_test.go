package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

// DeletePrefix deletes the live keys under a prefix, across list pages,
// each announced by a delete event, and nothing else; through the group
// committer's script and through the per-key one (Cluster's).
func TestDeletePrefix(t *testing.T) {
	for _, perKey := range []bool{false, true} {
		t.Run(fmt.Sprintf("per-key-scripts=%v", perKey), func(t *testing.T) {
			redistest.Each(t, func(t *testing.T, b redistest.Backend) {
				s := newStore(t, b, store.Config{PerKeyScripts: perKey})
				ctx := context.Background()
				doomed := []string{"tasks/T1/state", "tasks/T1/progress", "tasks/T1/agents/a1", "tasks/T1/agents/a2"}
				kept := []string{"tasks/T10/state", "tasks/T2/state", "tasks/T1"}
				for _, key := range append(append([]string(nil), doomed...), kept...) {
					mustPut(t, s, key, "w1", `1`, nil)
				}
				// More than a page of keys under one prefix.
				bulk := store.MaxListLimit + 150
				ops := make([]store.BatchOp, 0, store.MaxBatchOps)
				for i := range bulk {
					ops = append(ops, store.BatchOp{Kind: store.OpPut, Namespace: ns, Key: fmt.Sprintf("bulk/b%d/k%d", i%7, i),
						PutRequest: store.PutRequest{Value: json.RawMessage(`0`), Writer: "w1"}})
					if len(ops) == store.MaxBatchOps || i == bulk-1 {
						if _, err := s.Batch(ctx, ops, false); err != nil {
							t.Fatal(err)
						}
						ops = ops[:0]
					}
				}
				events := eventsLogged(t, b)

				for _, tt := range []struct {
					prefix string
					want   int
				}{{"tasks/T1/", len(doomed)}, {"bulk/", bulk}, {"tasks/T1/", 0}, {"nothing/", 0}} {
					n, err := s.DeletePrefix(ctx, ns, tt.prefix)
					if err != nil || n != tt.want {
						t.Errorf("DeletePrefix(%q) = %d, %v; want %d", tt.prefix, n, err, tt.want)
					}
					if left, _, err := s.List(ctx, ns, tt.prefix, "", store.MaxListLimit); err != nil || len(left) != 0 {
						t.Errorf("after DeletePrefix(%q): %d keys left (%v), %v", tt.prefix, len(left), left[:min(len(left), 5)], err)
					}
				}
				want := []string{"tasks/T1", "tasks/T10/state", "tasks/T2/state"} // kept, in path order
				if all, _, err := s.List(ctx, ns, "", "", store.MaxListLimit); err != nil || !slices.Equal(all, want) {
					t.Errorf("keys left = %v, %v; want %v", all, err, want)
				}
				if got := eventsLogged(t, b) - events; got != len(doomed)+bulk {
					t.Errorf("delete events logged = %d, want %d", got, len(doomed)+bulk)
				}
				for _, bad := range []string{"", "a b/"} {
					if _, err := s.DeletePrefix(ctx, ns, bad); !errors.Is(err, store.ErrInvalidArgument) {
						t.Errorf("DeletePrefix(%q) = %v, want ErrInvalidArgument", bad, err)
					}
				}
			})
		})
	}
}
