package barrier_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/barrier"
	"github.com/memsync/memsync/internal/redistest"
)

const ns = "test"

func newBarriers(t testing.TB, b redistest.Backend) *barrier.Barriers {
	t.Helper()
	bs := barrier.New(b.Client, barrier.Options{})
	t.Cleanup(func() { _ = bs.Close() })
	return bs
}

func arrive(t *testing.T, bs *barrier.Barriers, name string, req barrier.Request) barrier.State {
	t.Helper()
	st, err := bs.Arrive(context.Background(), ns, name, req)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// The last of the parties trips the barrier; one party arriving twice
// counts once; the next generation starts empty.
func TestBarrierTripsAtItsParties(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		bs := newBarriers(t, b)
		ctx := context.Background()
		if _, err := bs.Get(ctx, ns, "phases/p1"); !errors.Is(err, barrier.ErrNotFound) {
			t.Fatalf("Get of a new barrier: %v, want ErrNotFound", err)
		}
		for _, party := range []string{"w1", "w2", "w1"} {
			st := arrive(t, bs, "phases/p1", barrier.Request{Parties: 3, Party: party})
			if st.Tripped || st.Generation != 0 {
				t.Fatalf("%s: %+v, want waiting at generation 0", party, st)
			}
		}
		st, err := bs.Get(ctx, ns, "phases/p1")
		if err != nil || fmt.Sprint(st.Arrived) != "[w1 w2]" || st.Parties != 3 || st.Generation != 0 {
			t.Fatalf("Get = %+v, %v", st, err)
		}
		last := arrive(t, bs, "phases/p1", barrier.Request{Parties: 3, Party: "w3"})
		if !last.Tripped || last.Generation != 0 || fmt.Sprint(last.Arrived) != "[w1 w2 w3]" {
			t.Fatalf("third party = %+v, want generation 0 passed by w1 w2 w3", last)
		}
		if st, _ := bs.Get(ctx, ns, "phases/p1"); st.Generation != 1 || len(st.Arrived) != 0 {
			t.Fatalf("after the trip = %+v, want generation 1, nobody", st)
		}
		if s := bs.Stats(); s.Arrivals != 4 || s.Trips != 1 {
			t.Fatalf("Stats = %+v", s)
		}
	})
}

// Parties waiting on two instances pass together, round after round.
func TestBarrierWaitersPassTogetherAcrossInstances(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		instances := []*barrier.Barriers{newBarriers(t, b), newBarriers(t, b)}
		const parties, rounds = 5, 3
		passed := make([][]int64, parties)
		var wg sync.WaitGroup
		for p := range parties {
			wg.Go(func() {
				for range rounds {
					st, err := instances[p%2].Arrive(context.Background(), ns, "phases/all",
						barrier.Request{Parties: parties, Party: fmt.Sprint("w", p), Wait: 10 * time.Second})
					if err != nil || !st.Tripped || len(st.Arrived) != parties {
						t.Errorf("w%d: %+v, %v", p, st, err)
						return
					}
					passed[p] = append(passed[p], st.Generation)
				}
			})
		}
		wg.Wait()
		for p, gens := range passed {
			if fmt.Sprint(gens) != "[0 1 2]" {
				t.Errorf("w%d passed generations %v, want [0 1 2]", p, gens)
			}
		}
	})
}

// An arrival lapses its TTL after its wait; until then, another number of
// parties is refused.
func TestBarrierArrivalsLapse(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		bs := newBarriers(t, b)
		ctx := context.Background()
		arrive(t, bs, "phases/p2", barrier.Request{Parties: 3, Party: "w1", TTL: time.Second})
		if _, err := bs.Arrive(ctx, ns, "phases/p2", barrier.Request{Parties: 2, Party: "w2"}); !errors.Is(err, barrier.ErrPartiesMismatch) {
			t.Fatalf("another number of parties: %v, want ErrPartiesMismatch", err)
		}
		time.Sleep(1200 * time.Millisecond) // both backends run on real time
		if st, _ := bs.Get(ctx, ns, "phases/p2"); len(st.Arrived) != 0 {
			t.Fatalf("after w1's TTL: %+v, want nobody", st)
		}
		st := arrive(t, bs, "phases/p2", barrier.Request{Parties: 2, Party: "w2"})
		if st.Tripped || fmt.Sprint(st.Arrived) != "[w2]" {
			t.Fatalf("w2 after w1 lapsed = %+v", st)
		}
	})
}

// A request sent again under its idempotency key after its generation
// passed learns so, rather than arrive at the next generation.
func TestBarrierIdempotentArrival(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		bs := newBarriers(t, b)
		ctx := context.Background()
		req := barrier.Request{Parties: 2, Party: "w1", IdempotencyKey: "phase-1"}
		arrive(t, bs, "phases/p3", req)
		arrive(t, bs, "phases/p3", barrier.Request{Parties: 2, Party: "w2"})
		again := arrive(t, bs, "phases/p3", req)
		if !again.Tripped || again.Generation != 0 || fmt.Sprint(again.Arrived) != "[w1 w2]" {
			t.Fatalf("sent again = %+v, want generation 0 passed by w1 w2", again)
		}
		if st, _ := bs.Get(ctx, ns, "phases/p3"); st.Generation != 1 || len(st.Arrived) != 0 {
			t.Fatalf("after the replay = %+v, want nobody at generation 1", st)
		}
		// The same key from another party is that party's own.
		if st := arrive(t, bs, "phases/p3", barrier.Request{Parties: 2, Party: "w2", IdempotencyKey: "phase-1"}); st.Tripped {
			t.Fatalf("w2 under w1's key = %+v, want a new arrival", st)
		}
		// The next trip forgets the keys of generation 0: only w2's, at
		// generation 1, is left.
		arrive(t, bs, "phases/p3", barrier.Request{Parties: 2, Party: "w1"})
		fields, err := b.Client.HKeys(ctx, "ms:{test/phases/p3}#barrier").Result()
		var idem []string
		for _, f := range fields {
			if len(f) > 2 && f[:2] == "i:" {
				idem = append(idem, f)
			}
		}
		if err != nil || fmt.Sprint(idem) != "[i:w2 phase-1]" {
			t.Fatalf("keys remembered after two trips: %q, %v; want w2's only", idem, err)
		}
		if s := bs.Stats(); s.Trips != 2 {
			t.Fatalf("Stats = %+v, want 2 trips", s)
		}
	})
}

// A waiting request whose caller goes away withdraws its arrival; closed
// Barriers end waits.
func TestBarrierWaitEnds(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		bs := newBarriers(t, b)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := bs.Arrive(ctx, ns, "phases/p4", barrier.Request{Parties: 2, Party: "w1", Wait: 10 * time.Second})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Arrive past its context: %v", err)
		}
		if st, _ := bs.Get(context.Background(), ns, "phases/p4"); len(st.Arrived) != 0 {
			t.Fatalf("after the caller went: %+v, want the arrival withdrawn", st)
		}
		// A wait that ends first is not an error; the arrival stays.
		st := arrive(t, bs, "phases/p4", barrier.Request{Parties: 2, Party: "w1", Wait: 50 * time.Millisecond})
		if st.Tripped || fmt.Sprint(st.Arrived) != "[w1]" {
			t.Fatalf("a wait that ended = %+v", st)
		}
		done := make(chan error, 1)
		go func() {
			_, err := bs.Arrive(context.Background(), ns, "phases/p5", barrier.Request{Parties: 2, Party: "w1", Wait: 10 * time.Second})
			done <- err
		}()
		time.Sleep(50 * time.Millisecond)
		_ = bs.Close()
		select {
		case err := <-done:
			if !errors.Is(err, barrier.ErrClosed) {
				t.Fatalf("wait on closed Barriers: %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not end the wait")
		}
	})
}

func TestBarrierValidation(t *testing.T) {
	bs := newBarriers(t, redistest.Mini(t))
	ok := barrier.Request{Parties: 2, Party: "w1"}
	for _, tt := range []struct {
		name string
		ns   string
		key  string
		req  barrier.Request
	}{
		{"bad name", ns, "a//b", ok},
		{"bad namespace", "a/b", "p", ok},
		{"no party", ns, "p", barrier.Request{Parties: 2}},
		{"bad party", ns, "p", barrier.Request{Parties: 2, Party: "w 1"}},
		{"no parties", ns, "p", barrier.Request{Party: "w1"}},
		{"too many parties", ns, "p", barrier.Request{Parties: barrier.MaxParties + 1, Party: "w1"}},
		{"wait too long", ns, "p", barrier.Request{Parties: 2, Party: "w1", Wait: time.Hour}},
		{"ttl too long", ns, "p", barrier.Request{Parties: 2, Party: "w1", TTL: 2 * time.Hour}},
		{"bad key", ns, "p", barrier.Request{Parties: 2, Party: "w1", IdempotencyKey: "a b"}},
	} {
		if _, err := bs.Arrive(context.Background(), tt.ns, tt.key, tt.req); !errors.Is(err, barrier.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", tt.name, err)
		}
	}
	if _, err := bs.Get(context.Background(), ns, "p"); !errors.Is(err, barrier.ErrNotFound) {
		t.Fatalf("refused arrivals made a barrier: %v", err)
	}
}

// A reset breaks the generation waited at: its waiters are told so at
// once, a keyed arrival sent again learns it too, and the next generation
// starts empty.
func TestBarrierReset(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		bs := newBarriers(t, b)
		ctx := context.Background()
		if _, _, err := bs.Reset(ctx, ns, "phases/none"); !errors.Is(err, barrier.ErrNotFound) {
			t.Fatalf("Reset of no barrier: %v, want ErrNotFound", err)
		}
		waited := make(chan error, 1)
		go func() {
			_, err := bs.Arrive(ctx, ns, "phases/p6", barrier.Request{Parties: 3, Party: "w1", Wait: 10 * time.Second})
			waited <- err
		}()
		keyed := barrier.Request{Parties: 3, Party: "w2", IdempotencyKey: "p6-w2"}
		arrive(t, bs, "phases/p6", keyed)
		deadline := time.Now().Add(5 * time.Second)
		for st, _ := bs.Get(ctx, ns, "phases/p6"); len(st.Arrived) < 2; st, _ = bs.Get(ctx, ns, "phases/p6") {
			if time.Now().After(deadline) {
				t.Fatal("w1 did not arrive")
			}
			time.Sleep(10 * time.Millisecond)
		}
		gen, arrived, err := bs.Reset(ctx, ns, "phases/p6")
		if err != nil || gen != 0 || arrived != 2 {
			t.Fatalf("Reset = %d, %d, %v; want generation 0 broken with 2 arrived", gen, arrived, err)
		}
		select {
		case err := <-waited:
			if !errors.Is(err, barrier.ErrBroken) {
				t.Fatalf("the waiter at a reset: %v, want ErrBroken", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the waiter was not told of the reset within 5 s")
		}
		if _, err := bs.Arrive(ctx, ns, "phases/p6", keyed); !errors.Is(err, barrier.ErrBroken) {
			t.Fatalf("keyed arrival sent again after the reset: %v, want ErrBroken", err)
		}
		if st, _ := bs.Get(ctx, ns, "phases/p6"); st.Generation != 1 || len(st.Arrived) != 0 {
			t.Fatalf("after the reset: %+v, want generation 1, nobody", st)
		}
		var last barrier.State
		for _, p := range []string{"w1", "w2", "w3"} {
			last = arrive(t, bs, "phases/p6", barrier.Request{Parties: 3, Party: p})
		}
		if !last.Tripped || last.Generation != 1 {
			t.Fatalf("the next generation = %+v, want 1 tripped", last)
		}
	})
}

// List names the namespace's barriers under a prefix, sorted, each as Get
// reads it, and forgets a barrier gone idle (past Keep).
func TestBarriersAreListed(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		bs := barrier.New(b.Client, barrier.Options{Keep: time.Second})
		t.Cleanup(func() { _ = bs.Close() })
		if got, err := bs.List(ctx, ns, ""); err != nil || len(got) != 0 {
			t.Fatalf("List of none = %+v, %v", got, err)
		}
		arrive(t, bs, "phases/p2", barrier.Request{Parties: 2, Party: "w1"})
		arrive(t, bs, "phases/p1", barrier.Request{Parties: 1, Party: "w1"}) // trips: generation 1 waited on
		arrive(t, bs, "other/o1", barrier.Request{Parties: 3, Party: "w2"})
		got, err := bs.List(ctx, ns, "phases/")
		if err != nil || len(got) != 2 {
			t.Fatalf("List(phases/) = %+v, %v", got, err)
		}
		if p1, p2 := got[0], got[1]; p1.Name != "phases/p1" || p1.Generation != 1 || len(p1.Arrived) != 0 ||
			p2.Name != "phases/p2" || p2.Parties != 2 || fmt.Sprint(p2.Arrived) != "[w1]" {
			t.Fatalf("List(phases/) = %+v", got)
		}
		if all, _ := bs.List(ctx, ns, ""); len(all) != 3 || all[0].Name != "other/o1" {
			t.Fatalf("List() = %+v", all)
		}
		if _, err := bs.List(ctx, "bad ns", ""); !errors.Is(err, barrier.ErrInvalidArgument) {
			t.Errorf("List of a bad namespace: %v", err)
		}
		// Idle past Keep, the barriers go, and with them their names.
		deadline := time.Now().Add(10 * time.Second)
		for {
			all, err := bs.List(ctx, ns, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(all) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("barriers idle for 10 s still listed: %+v", all)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if n := b.Client.ZCard(ctx, "ms:{"+ns+"}#barriers").Val(); n != 0 {
			t.Errorf("the index still names %d barriers gone", n)
		}
	})
}
