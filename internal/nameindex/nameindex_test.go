package nameindex_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/nameindex"
	"github.com/memsync/memsync/internal/redistest"
)

// Names reads an index under a prefix, sorted; Prune drops the entries a
// listing found gone, but not one touched since it read them.
func TestNamesAndPrune(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		for _, name := range []string{"jobs/b", "jobs/a", "other/c", "jobs/bad name"} {
			if err := nameindex.Touch(ctx, b.Client, "ns", "things", name).Err(); err != nil {
				t.Fatal(err)
			}
		}
		valid := func(name string) bool { return !strings.Contains(name, " ") }
		entries, err := nameindex.Names(ctx, b.Client, "ns", "things", "jobs/", valid)
		if err != nil || len(entries) != 2 || entries[0].Name != "jobs/a" || entries[1].Name != "jobs/b" {
			t.Fatalf("Names(jobs/) = %+v, %v", entries, err)
		}
		// jobs/b is touched again after the listing read it (a later
		// millisecond: the score must rise).
		time.Sleep(2 * time.Millisecond)
		nameindex.Touch(ctx, b.Client, "ns", "things", "jobs/b")
		n, err := nameindex.Prune(ctx, b.Client, "ns", "things", entries)
		if err != nil || n != 1 {
			t.Fatalf("Prune = %d, %v; want jobs/a only", n, err)
		}
		left, _ := b.Client.ZRange(ctx, nameindex.Key("ns", "things"), 0, -1).Result()
		slices.Sort(left)
		if strings.Join(left, ",") != "jobs/b,jobs/bad name,other/c" {
			t.Errorf("index after Prune = %v", left)
		}
		if n, err := nameindex.Prune(ctx, b.Client, "ns", "things", nil); n != 0 || err != nil {
			t.Errorf("Prune of nothing = %d, %v", n, err)
		}
		// A score only rises.
		b.Client.ZAdd(ctx, nameindex.Key("ns", "things"), redis.Z{Score: 1e15, Member: "other/c"})
		nameindex.Touch(ctx, b.Client, "ns", "things", "other/c")
		if s := b.Client.ZScore(ctx, nameindex.Key("ns", "things"), "other/c").Val(); s != 1e15 {
			t.Errorf("Touch lowered a score to %v", s)
		}
	})
}
