package ephemeral_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/ephemeral"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

const ns = "test"

func newStore(t *testing.T, b redistest.Backend) *store.Store {
	t.Helper()
	st, err := store.New(b.Client, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func put(t *testing.T, st *store.Store, key, writer string, ttl time.Duration) string {
	t.Helper()
	req := store.PutRequest{Value: json.RawMessage(`"x"`), Writer: writer}
	if ttl > 0 {
		req.TTL = &ttl
	}
	res, err := st.Put(context.Background(), ns, key, req)
	if err != nil {
		t.Fatal(err)
	}
	return res.ETag
}

func exists(t *testing.T, st *store.Store, key string) bool {
	t.Helper()
	_, err := st.Get(context.Background(), ns, key, store.GetOptions{})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestBoundKeysGoWithTheirHeartbeat(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		st := newStore(t, b)
		bd := ephemeral.New(b.Client, st)
		ctx := context.Background()
		put(t, st, ephemeral.HeartbeatKey("w1"), "w1", 300*time.Millisecond)
		put(t, st, ephemeral.HeartbeatKey("w2"), "w2", time.Minute)
		for _, k := range []string{"tasks/T1/agents/w1", "coordination/claims/T1", "tasks/T2/owner"} {
			if err := bd.Bind(ctx, ns, "w1", k, put(t, st, k, "w1", 0)); err != nil {
				t.Fatal(err)
			}
		}
		if err := bd.Bind(ctx, ns, "w2", "tasks/T3/owner", put(t, st, "tasks/T3/owner", "w2", 0)); err != nil {
			t.Fatal(err)
		}
		// Written again after its binding: no longer w1's to take along.
		put(t, st, "tasks/T2/owner", "w3", 0)

		if n, err := bd.Reap(ctx); err != nil || n != 0 {
			t.Fatalf("Reap with both heartbeats alive = %d, %v; want 0", n, err)
		}
		time.Sleep(400 * time.Millisecond) // w1's heartbeat expires; both backends run TTLs in real time
		n, err := bd.Reap(ctx)
		if err != nil || n != 2 {
			t.Fatalf("Reap after w1's heartbeat expired = %d, %v; want its 2 keys still bound", n, err)
		}
		for key, want := range map[string]bool{"tasks/T1/agents/w1": false, "coordination/claims/T1": false,
			"tasks/T2/owner": true, "tasks/T3/owner": true} {
			if got := exists(t, st, key); got != want {
				t.Errorf("%s exists = %v, want %v", key, got, want)
			}
		}
		if n, err := b.Client.Exists(ctx, keys.Namespace(ns, "ephemeral:w1")).Result(); err != nil || n != 0 {
			t.Errorf("w1's bindings left behind: %d (%v)", n, err)
		}
		if m, err := b.Client.SMembers(ctx, keys.Namespace(ns, "ephemeral")).Result(); err != nil || len(m) != 1 || m[0] != "w2" {
			t.Errorf("workers with bindings = %v (%v), want [w2]", m, err)
		}

		// A heartbeat deleted rather than expired ends the bindings too.
		if _, err := st.Delete(ctx, ns, ephemeral.HeartbeatKey("w2"), store.DeleteRequest{}); err != nil {
			t.Fatal(err)
		}
		if n, err := bd.Reap(ctx); err != nil || n != 1 || exists(t, st, "tasks/T3/owner") {
			t.Fatalf("Reap after w2's heartbeat was deleted = %d, %v; want tasks/T3/owner gone", n, err)
		}
		if n, err := bd.Reap(ctx); err != nil || n != 0 {
			t.Fatalf("a second Reap = %d, %v; want nothing left", n, err)
		}
		if got := bd.Reaped(); got != 3 {
			t.Errorf("Reaped() = %d, want the 3 keys deleted", got)
		}
		if n, err := b.Client.Exists(ctx, keys.Namespace(ns, "ephemeral"), keys.Namespace("#memsync", "ephemeral")).Result(); err != nil || n != 0 {
			t.Errorf("lists left after every binding ended: %d (%v)", n, err)
		}
	})
}

func TestBindWithoutAHeartbeatUndoesTheWrite(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		st := newStore(t, b)
		bd := ephemeral.New(b.Client, st)
		ctx := context.Background()
		if alive, err := bd.Alive(ctx, ns, "w9"); err != nil || alive {
			t.Fatalf("Alive(w9) = %v, %v; want false", alive, err)
		}
		err := bd.Bind(ctx, ns, "w9", "tasks/T1/owner", put(t, st, "tasks/T1/owner", "w9", 0))
		if !errors.Is(err, ephemeral.ErrNoHeartbeat) {
			t.Fatalf("Bind without a heartbeat: %v, want ErrNoHeartbeat", err)
		}
		if exists(t, st, "tasks/T1/owner") {
			t.Fatal("the key of a worker without a heartbeat stayed")
		}
		if err := bd.Bind(ctx, ns, "a/b", "tasks/T1/owner", "e"); !errors.Is(err, store.ErrInvalidArgument) {
			t.Fatalf("Bind with a bad worker id: %v, want ErrInvalidArgument", err)
		}
	})
}

// TestReapersRaceWithBinds has two binders (two instances) reap while
// workers bind keys, and some of the workers die meanwhile: every key of a
// dead worker goes, bound before or after its death, and no key of a live
// one.
func TestReapersRaceWithBinds(t *testing.T) {
	b := redistest.Real(t)
	st := newStore(t, b)
	binders := []*ephemeral.Binder{ephemeral.New(b.Client, st), ephemeral.New(b.Client, st)}
	ctx := context.Background()
	const workers, perWorker = 6, 20
	for w := range workers {
		// Even workers live on; odd ones die halfway through their binds.
		ttl := time.Minute
		if w%2 == 1 {
			ttl = 200 * time.Millisecond
		}
		put(t, st, ephemeral.HeartbeatKey(fmt.Sprint("w", w)), "w", ttl)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, bd := range binders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := bd.Reap(ctx); err != nil {
					t.Error(err)
					return
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	var binds sync.WaitGroup
	for w := range workers {
		binds.Add(1)
		go func() {
			defer binds.Done()
			id := fmt.Sprint("w", w)
			for k := range perWorker {
				key := fmt.Sprintf("tasks/T%d/%s", k, id)
				res, err := st.Put(ctx, ns, key, store.PutRequest{Value: json.RawMessage(`1`), Writer: id})
				if err != nil {
					t.Error(err)
					return
				}
				time.Sleep(20 * time.Millisecond)
				err = binders[k%2].Bind(ctx, ns, id, key, res.ETag)
				if err != nil && !(w%2 == 1 && errors.Is(err, ephemeral.ErrNoHeartbeat)) {
					t.Error(err)
					return
				}
			}
		}()
	}
	binds.Wait()
	close(stop)
	wg.Wait()
	if _, err := binders[0].Reap(ctx); err != nil {
		t.Fatal(err)
	}
	for w := range workers {
		for k := range perWorker {
			key := fmt.Sprintf("tasks/T%d/w%d", k, w)
			if got, want := exists(t, st, key), w%2 == 0; got != want {
				t.Errorf("%s exists = %v, want %v", key, got, want)
			}
		}
	}
}
