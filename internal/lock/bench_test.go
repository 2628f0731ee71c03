package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/redistest"
)

// BenchmarkAcquireRelease measures one uncontended Acquire + Release on a real
// redis-server: two scripts and two index writes, four round trips.
func BenchmarkAcquireRelease(b *testing.B) {
	s := redistest.Start(b, redistest.Options{})
	l := lock.New(s.Client(b), lock.Options{})
	b.Cleanup(func() { _ = l.Close() })
	ctx := context.Background()
	req := lock.AcquireRequest{TTL: 10 * time.Second, Owner: "bench"}
	b.ReportAllocs()
	for b.Loop() {
		g, err := l.Acquire(ctx, ns, "tasks/bench", req)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx, ns, "tasks/bench", g.Token); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNaiveSetNXDel is the baseline: a bare SET NX PX and an unchecked
// DEL, two round trips, with no token check, fence, metadata, index or wake-up.
func BenchmarkNaiveSetNXDel(b *testing.B) {
	s := redistest.Start(b, redistest.Options{})
	c := s.Client(b)
	ctx := context.Background()
	key := keys.Aux(ns, "tasks/bench", "naive")
	b.ReportAllocs()
	for b.Loop() {
		ok, err := c.SetNX(ctx, key, "0123456789abcdef0123456789abcdef", 10*time.Second).Result()
		if err != nil || !ok {
			b.Fatal(ok, err)
		}
		if err := c.Del(ctx, key).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
