package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// AgeMarks moves every Tidy mark (the members of the "#unlist" sets) d
// into the past, as if it had been made d earlier, but for those named in
// keep ("<set> <member>"). Marks are scored by their Redis node's clock
// (markScript), so a test ages them rather than an instance's clock.
func AgeMarks(t *testing.T, c redis.UniversalClient, d time.Duration, keep ...string) {
	t.Helper()
	age := func(ctx context.Context, node redis.Cmdable) error {
		iter := node.Scan(ctx, 0, "*#unlist", 0).Iterator()
		for iter.Next(ctx) {
			set := iter.Val()
			marks, err := node.ZRangeWithScores(ctx, set, 0, -1).Result()
			if err != nil {
				return err
			}
			for _, m := range marks {
				if slices.Contains(keep, set+" "+m.Member.(string)) {
					continue
				}
				m.Score -= float64(d.Milliseconds())
				if err := node.ZAddXX(ctx, set, m).Err(); err != nil {
					return err
				}
			}
		}
		return iter.Err()
	}
	ctx := context.Background()
	var err error
	if cluster, ok := c.(*redis.ClusterClient); ok {
		err = cluster.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return age(ctx, m) })
	} else {
		err = age(ctx, c)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TidyAged runs s.Tidy, each round after AgeMarks(two hours, keep), as
// Tidy would run a minute apart, until two rounds in a row remove nothing:
// a round may only mark what the next removes (the cascade marks each
// level once the one below it is gone). It returns the sum of what the
// rounds removed.
func TidyAged(t *testing.T, s *Store, c redis.UniversalClient, keep ...string) TidyResult {
	t.Helper()
	var sum TidyResult
	idle := 0
	for range 8 {
		AgeMarks(t, c, 2*time.Hour, keep...)
		res, err := s.Tidy(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res == (TidyResult{}) {
			if idle++; idle == 2 {
				return sum
			}
			continue
		}
		idle = 0
		sum.Namespaces += res.Namespaces
		sum.Roots += res.Roots
		sum.Children += res.Children
	}
	t.Fatalf("Tidy still removed entries after 8 rounds (%+v in all)", sum)
	return sum
}
