package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// Three workers meet at a barrier twice, for two phases; a fourth asking
// for another number of parties is refused.
func TestBarrierAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	passed := make([][]int64, 3)
	for i := range passed {
		c := mustNew(t, srv.URL, client.WithWorkerID(fmt.Sprint("w", i)))
		wg.Go(func() {
			for range 2 {
				st, err := c.Arrive(ctx, "phases/all", 3, client.BarrierOptions{Wait: 10 * time.Second})
				if err != nil || !st.Tripped || len(st.Arrived) != 3 {
					t.Errorf("w%d: %+v, %v", i, st, err)
					return
				}
				passed[i] = append(passed[i], st.Generation)
			}
		})
	}
	wg.Wait()
	for i, gens := range passed {
		if fmt.Sprint(gens) != "[0 1]" {
			t.Errorf("w%d passed %v, want [0 1]", i, gens)
		}
	}
	c := mustNew(t, srv.URL, client.WithWorkerID("w9"))
	if st, err := c.Arrive(ctx, "phases/all", 3, client.BarrierOptions{}); err != nil || st.Tripped || fmt.Sprint(st.Arrived) != "[w9]" {
		t.Fatalf("Arrive without waiting = %+v, %v", st, err)
	}
	if _, err := c.Arrive(ctx, "phases/all", 2, client.BarrierOptions{}); !errors.Is(err, client.ErrLimitMismatch) {
		t.Fatalf("another number of parties: %v, want ErrLimitMismatch", err)
	}
	if st, err := c.Barrier(ctx, "phases/all"); err != nil || st.Generation != 2 || st.Parties != 3 {
		t.Fatalf("Barrier = %+v, %v", st, err)
	}
	if bs, err := c.Barriers(ctx, "phases/"); err != nil || len(bs) != 1 || bs[0].Name != "phases/all" || bs[0].Generation != 2 {
		t.Fatalf("Barriers = %+v, %v; want phases/all at generation 2", bs, err)
	}
	if _, err := c.Barrier(ctx, "phases/none"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Barrier of none: %v, want ErrNotFound", err)
	}
	// w9 waits at a generation nobody else comes to: a reset ends it.
	waited := make(chan error, 1)
	go func() {
		_, err := c.Arrive(ctx, "phases/all", 3, client.BarrierOptions{Wait: 10 * time.Second})
		waited <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if gen, err := c.ResetBarrier(ctx, "phases/all"); err != nil || gen != 2 {
		t.Fatalf("ResetBarrier = %d, %v; want generation 2", gen, err)
	}
	if err := <-waited; !errors.Is(err, client.ErrBarrierBroken) {
		t.Fatalf("Arrive at a reset: %v, want ErrBarrierBroken", err)
	}
}

// The arrival that trips a barrier, its answer lost, is sent again by a
// client WithRetries: it is told it passed, and arrives nowhere else.
func TestArriveRetriedAfterTheTrip(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	first := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	if _, err := first.Arrive(ctx, "phases/p1", 2, client.BarrierOptions{}); err != nil {
		t.Fatal(err)
	}
	lossy := mustNew(t, lossyProxy(t, srv.URL, http.MethodPost), client.WithWorkerID("w2"), client.WithRetries(2))
	st, err := lossy.Arrive(ctx, "phases/p1", 2, client.BarrierOptions{})
	if err != nil || !st.Tripped || st.Generation != 0 || fmt.Sprint(st.Arrived) != "[w1 w2]" {
		t.Fatalf("Arrive with its answer lost = %+v, %v; want generation 0 passed", st, err)
	}
	if st, err := first.Barrier(ctx, "phases/p1"); err != nil || st.Generation != 1 || len(st.Arrived) != 0 {
		t.Fatalf("after = %+v, %v; want nobody at generation 1", st, err)
	}
}
