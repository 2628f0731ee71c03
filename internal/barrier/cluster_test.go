package barrier_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/barrier"
	"github.com/memsync/memsync/internal/redistest"
)

// On a Redis Cluster of three masters, parties waiting on two instances
// are woken by the trip's message alone (the safety-net retry is set past
// the test's bound), however the barrier's slot and the subscriptions'
// nodes fall.
func TestBarrierOnCluster(t *testing.T) {
	c := redistest.ClusterClient(t, redistest.StartCluster(t, 3))
	instance := func() *barrier.Barriers {
		b := barrier.New(c, barrier.Options{RetryInterval: time.Minute})
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	instances := []*barrier.Barriers{instance(), instance()}
	for _, name := range []string{"phases/p1", "jobs/J7/merge", "x"} {
		const parties = 4
		start := time.Now()
		var wg sync.WaitGroup
		for p := range parties {
			wg.Go(func() {
				st, err := instances[p%2].Arrive(context.Background(), ns, name,
					barrier.Request{Parties: parties, Party: fmt.Sprint("w", p), Wait: 20 * time.Second})
				if err != nil || !st.Tripped || len(st.Arrived) != parties {
					t.Errorf("%s, w%d: %+v, %v", name, p, st, err)
				}
			})
		}
		wg.Wait()
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: the parties passed %v after the first arrived; the trip's message did not wake them", name, took)
		}
	}
}
