package quota_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/quota"
	"github.com/memsync/memsync/internal/redistest"
)

func TestShare(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		a, bb := quota.New(b.Client, "A", time.Minute), quota.New(b.Client, "B", time.Minute)
		share := func(tab *quota.Table, mine map[string]quota.Usage) map[string]quota.Usage {
			t.Helper()
			others, err := tab.Share(ctx, mine)
			if err != nil {
				t.Fatal(err)
			}
			return others
		}
		steps := []struct {
			name string
			tab  *quota.Table
			mine map[string]quota.Usage
			want map[string]quota.Usage
		}{
			{"A first: nobody else", a, map[string]quota.Usage{"t1": {Rate: 10, Watchers: 1}}, map[string]quota.Usage{}},
			{"B hears A", bb, map[string]quota.Usage{"t1": {Rate: 5.5, Watchers: 2}, "t2": {Rate: 1}},
				map[string]quota.Usage{"t1": {Rate: 10, Watchers: 1}}},
			{"A hears B, not itself", a, map[string]quota.Usage{"t1": {Rate: 12, Watchers: 1}},
				map[string]quota.Usage{"t1": {Rate: 5.5, Watchers: 2}, "t2": {Rate: 1}}},
			{"B stops using t2: its report goes", bb, map[string]quota.Usage{"t1": {Rate: 4}},
				map[string]quota.Usage{"t1": {Rate: 12, Watchers: 1}}},
			{"A hears B's last report only", a, map[string]quota.Usage{"t1": {Rate: 12, Watchers: 1}},
				map[string]quota.Usage{"t1": {Rate: 4}}},
			{"A idle: nothing of its own left", a, nil, map[string]quota.Usage{"t1": {Rate: 4}}},
			{"B hears nobody", bb, map[string]quota.Usage{"t1": {Rate: 4}}, map[string]quota.Usage{}},
		}
		for _, s := range steps {
			if got := share(s.tab, s.mine); !maps.Equal(got, s.want) {
				t.Errorf("%s: others = %v, want %v", s.name, got, s.want)
			}
		}

		// A report not renewed within the staleness bound stops counting,
		// and is removed from the table.
		c := quota.New(b.Client, "C", 300*time.Millisecond)
		share(c, map[string]quota.Usage{"t3": {Rate: 7}})
		time.Sleep(500 * time.Millisecond)
		if got := share(quota.New(b.Client, "D", 300*time.Millisecond), nil); got["t3"] != (quota.Usage{}) {
			t.Errorf("a stale report still counts: %v", got)
		}
		fields, err := b.Client.HKeys(ctx, keys.Global("quota")).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fields {
			if f == "t3|C" {
				t.Errorf("the stale report is still in the table: %v", fields)
			}
		}
	})
}

// BenchmarkShare is one instance's report among three, each using 1,000
// tokens: the table's cost grows with tokens × instances.
func BenchmarkShare(b *testing.B) {
	be := redistest.Real(b)
	ctx := context.Background()
	mine := map[string]quota.Usage{}
	for i := range 1000 {
		mine[fmt.Sprintf("%032x", i)] = quota.Usage{Rate: 12.5, Watchers: 1}
	}
	tables := []*quota.Table{quota.New(be.Client, "A", time.Minute), quota.New(be.Client, "B", time.Minute),
		quota.New(be.Client, "C", time.Minute)}
	for _, t := range tables {
		if _, err := t.Share(ctx, mine); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, err := tables[0].Share(ctx, mine); err != nil {
			b.Fatal(err)
		}
	}
}
