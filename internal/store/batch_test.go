package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

func putOp(key, value string) store.BatchOp {
	return store.BatchOp{Kind: store.OpPut, Namespace: ns, Key: key,
		PutRequest: store.PutRequest{Value: json.RawMessage(value), Writer: "w1"}}
}

func getOp(key string) store.BatchOp {
	return store.BatchOp{Kind: store.OpGet, Namespace: ns, Key: key}
}

// mustBatch runs a non-atomic batch and fails the test unless every op
// succeeded.
func mustBatch(tb testing.TB, s *store.Store, ops []store.BatchOp) []store.BatchResult {
	tb.Helper()
	res, err := s.Batch(context.Background(), ops, false)
	if err != nil {
		tb.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil {
			tb.Fatalf("op %d: %v", i, r.Err)
		}
	}
	return res
}

func deleteOp(key string) store.BatchOp {
	return store.BatchOp{Kind: store.OpDelete, Namespace: ns, Key: key}
}

func ifMatch(op store.BatchOp, etag string) store.BatchOp {
	op.IfMatch = etag
	return op
}

func TestBatchMixedOpsStandAlone(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		old := mustPut(t, s, "mixed/old", "w1", `"old"`, nil)
		mustPut(t, s, "mixed/gone", "w1", `"gone"`, nil)

		ops := []store.BatchOp{
			putOp("mixed/a", `{"n":1}`),
			putOp("mixed/../bad", `1`),
			getOp("mixed/a"),
			ifMatch(putOp("mixed/old", `"new"`), "stale"),
			getOp("mixed/missing"),
			deleteOp("mixed/gone"),
			deleteOp("mixed/never"),
			{Kind: "frobnicate", Namespace: ns, Key: "mixed/a"},
			putOp("mixed/a", `{"n":2}`),
			ifMatch(getOp("mixed/old"), old.ETag),
			ifMatch(deleteOp("mixed/old"), "*"),
		}
		res, err := s.Batch(ctx, ops, false)
		if err != nil {
			t.Fatal(err)
		}
		want := []error{nil, store.ErrInvalidKey, nil, store.ErrPreconditionFailed, store.ErrNotFound,
			nil, store.ErrNotFound, store.ErrInvalidArgument, nil, nil, nil}
		if len(res) != len(want) {
			t.Fatalf("%d results, want %d", len(res), len(want))
		}
		for i, w := range want {
			if w == nil && res[i].Err != nil || w != nil && !errors.Is(res[i].Err, w) {
				t.Errorf("op %d (%s %s): err = %v, want %v", i, ops[i].Kind, ops[i].Key, res[i].Err, w)
			}
		}
		if got := string(res[2].Entry.Value); got != `{"n":1}` {
			t.Errorf("get after put in the same batch = %s, want {\"n\":1}", got)
		}
		if got := string(res[9].Entry.Value); got != `"old"` {
			t.Errorf("conditional get = %s, want \"old\"", got)
		}
		if e := mustGet(t, s, "mixed/a", store.GetOptions{}); string(e.Value) != `{"n":2}` || e.Version.String() != "w1=2" {
			t.Errorf("mixed/a = %s %s, want {\"n\":2} w1=2 (the second put supersedes the first)", e.Value, e.Version)
		}
		for _, k := range []string{"mixed/gone", "mixed/old"} {
			if _, err := s.Get(ctx, ns, k, store.GetOptions{}); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s after delete: err = %v, want not found", k, err)
			}
		}
	})
}

func TestBatchPublishesOneEventPerWrite(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		mustPut(t, s, "ev/x", "w1", `0`, nil)
		before, _, err := s.EventsAfter(ctx, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		last := before[len(before)-1].ID
		_, err = s.Batch(ctx, []store.BatchOp{putOp("ev/a", `1`), getOp("ev/a"), deleteOp("ev/x"), deleteOp("ev/none"),
			ifMatch(putOp("ev/b", `2`), "stale")}, false)
		if err != nil {
			t.Fatal(err)
		}
		evs, complete, err := s.EventsAfter(ctx, last, 1000)
		if err != nil || !complete {
			t.Fatalf("events: %v complete=%v", err, complete)
		}
		var got []string
		for _, e := range evs {
			got = append(got, e.Type+" "+e.Key)
		}
		if want := "[put ev/a delete ev/x]"; fmt.Sprint(got) != want {
			t.Errorf("events = %v, want %s", got, want)
		}
	})
}

func TestBatchAtomicStaleIfMatchChangesNothing(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		var etags []string
		for i := range 5 {
			etags = append(etags, mustPut(t, s, "atomic/k"+strconv.Itoa(i), "w1", strconv.Itoa(i), nil).ETag)
		}
		stale := etags[3]
		mustPut(t, s, "atomic/k3", "w2", `"moved on"`, nil)
		e3 := mustGet(t, s, "atomic/k3", store.GetOptions{})

		var ops []store.BatchOp
		for i := range 5 {
			etag := etags[i]
			if i == 3 {
				etag = stale
			}
			ops = append(ops, ifMatch(putOp("atomic/k"+strconv.Itoa(i), `"batch"`), etag))
		}
		ops = append(ops, putOp("atomic/new", `"batch"`), deleteOp("atomic/k0"))
		res, err := s.Batch(ctx, ops, true)
		var be *store.BatchError
		if !errors.As(err, &be) || be.Index != 3 || !errors.Is(err, store.ErrPreconditionFailed) || res != nil {
			t.Fatalf("Batch = %v, %v; want a BatchError for op 3 wrapping ErrPreconditionFailed", res, err)
		}
		for i := range 5 {
			e := mustGet(t, s, "atomic/k"+strconv.Itoa(i), store.GetOptions{})
			wantValue, wantETag := strconv.Itoa(i), etags[i]
			if i == 3 {
				wantValue, wantETag = string(e3.Value), e3.ETag
			}
			if string(e.Value) != wantValue || e.ETag != wantETag {
				t.Errorf("k%d = %s etag %s, want %s etag %s (unchanged)", i, e.Value, e.ETag, wantValue, wantETag)
			}
		}
		if _, err := s.Get(ctx, ns, "atomic/new", store.GetOptions{}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("atomic/new: err = %v, want not found (nothing applied)", err)
		}
	})
}

func TestBatchAtomicChecksInOrder(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		k := mustPut(t, s, "order/k", "w1", `1`, nil)

		tests := []struct {
			name    string
			ops     []store.BatchOp
			wantErr error
			wantAt  int
		}{
			{"an if_match after a put of the same key no longer holds",
				[]store.BatchOp{putOp("order/k", `2`), ifMatch(putOp("order/k", `3`), k.ETag)}, store.ErrPreconditionFailed, 1},
			{"a delete leaves nothing to match",
				[]store.BatchOp{deleteOp("order/k"), ifMatch(getOp("order/k"), "*")}, store.ErrPreconditionFailed, 1},
			{"an if_match on an absent key fails, for a delete too",
				[]store.BatchOp{ifMatch(deleteOp("order/absent"), "x")}, store.ErrPreconditionFailed, 0},
			{"create-only on an existing key",
				[]store.BatchOp{{Kind: store.OpPut, Namespace: ns, Key: "order/k", PutRequest: store.PutRequest{Value: json.RawMessage(`1`), IfNoneMatch: true}}},
				store.ErrPreconditionFailed, 0},
			{"an invalid op stops the batch before Redis",
				[]store.BatchOp{putOp("order/k", `2`), putOp("order/k", `{`)}, store.ErrInvalidArgument, 1},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := s.Batch(ctx, tt.ops, true)
				var be *store.BatchError
				if !errors.As(err, &be) || be.Index != tt.wantAt || !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want op %d: %v", err, tt.wantAt, tt.wantErr)
				}
				if e := mustGet(t, s, "order/k", store.GetOptions{}); e.ETag != k.ETag {
					t.Errorf("order/k changed: %s", e.Value)
				}
			})
		}

		// All preconditions hold: everything applies, in order, and a get
		// sees the writes before it.
		res, err := s.Batch(ctx, []store.BatchOp{
			ifMatch(putOp("order/k", `2`), k.ETag),
			getOp("order/k"),
			ifMatch(putOp("order/k2", `"x"`), ""),
			ifMatch(deleteOp("order/k2"), "*"),
			getOp("order/k2"),
			deleteOp("order/absent"),
		}, true)
		if err != nil {
			t.Fatal(err)
		}
		if string(res[1].Entry.Value) != `2` || res[1].Entry.ETag != res[0].Entry.ETag {
			t.Errorf("get in the batch = %s %s, want 2 with the put's etag %s", res[1].Entry.Value, res[1].Entry.ETag, res[0].Entry.ETag)
		}
		if !errors.Is(res[4].Err, store.ErrNotFound) || !errors.Is(res[5].Err, store.ErrNotFound) {
			t.Errorf("get after delete = %v, delete of absent = %v; want not found for both", res[4].Err, res[5].Err)
		}
		if e := mustGet(t, s, "order/k", store.GetOptions{}); string(e.Value) != `2` {
			t.Errorf("order/k = %s, want 2", e.Value)
		}
	})
}

func TestBatchLimitsAndEmpty(t *testing.T) {
	s := newStore(t, redistest.Mini(t), store.Config{})
	ops := make([]store.BatchOp, store.MaxBatchOps+1)
	for i := range ops {
		ops[i] = getOp("k")
	}
	for _, atomic := range []bool{false, true} {
		if _, err := s.Batch(context.Background(), ops, atomic); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("atomic=%v: %d ops: err = %v, want ErrInvalidArgument", atomic, len(ops), err)
		}
		res, err := s.Batch(context.Background(), nil, atomic)
		if err != nil || len(res) != 0 {
			t.Errorf("atomic=%v: empty batch = %v, %v", atomic, res, err)
		}
	}
}

// A Redis that lost its scripts (restart, SCRIPT FLUSH) runs a batch all
// the same, in order.
func TestBatchAfterScriptFlush(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		for round := range 2 {
			if err := b.Client.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			v := strconv.Itoa(round + 1)
			res, err := s.Batch(ctx, []store.BatchOp{putOp("flush/k", v), getOp("flush/k"), deleteOp("flush/k"), putOp("flush/k", v+"0")}, false)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				if r.Err != nil {
					t.Errorf("round %d op %d: %v", round, i, r.Err)
				}
			}
			if string(res[1].Entry.Value) != v {
				t.Errorf("round %d: get = %s, want %s", round, res[1].Entry.Value, v)
			}
			if e := mustGet(t, s, "flush/k", store.GetOptions{}); string(e.Value) != v+"0" {
				t.Errorf("round %d: flush/k = %s, want %s0", round, e.Value, v)
			}
			// Single writes too.
			if err := b.Client.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			mustPut(t, s, "flush/single", "w", v, nil)
			if err := b.Client.ScriptFlush(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Delete(ctx, ns, "flush/single", store.DeleteRequest{}); err != nil {
				t.Errorf("round %d: delete after a script flush: %v", round, err)
			}
		}
	})
}

func TestBatchBackendDown(t *testing.T) {
	b := redistest.Real(t) // its client fails fast, as cmd/server's does
	s := newStore(t, b, store.Config{})
	b.Real.Stop(t)
	for _, atomic := range []bool{false, true} {
		_, err := s.Batch(context.Background(), []store.BatchOp{putOp("down/k", `1`), getOp("down/k")}, atomic)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("atomic=%v: err = %v, want ErrUnavailable", atomic, err)
		}
	}
}

// Concurrent atomic batches on one key: each applies whole or not at all,
// so a counter bumped by read-then-if_match never loses an increment.
func TestBatchAtomicUnderContention(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		mustPut(t, s, "cnt/n", "w0", `0`, nil)
		const workers, each = 4, 10
		errs := make(chan error, workers)
		for w := range workers {
			go func() {
				done := 0
				for done < each {
					e, err := s.Get(ctx, ns, "cnt/n", store.GetOptions{})
					if err != nil {
						errs <- err
						return
					}
					n, _ := strconv.Atoi(string(e.Value))
					_, err = s.Batch(ctx, []store.BatchOp{
						ifMatch(putOp("cnt/n", strconv.Itoa(n+1)), e.ETag),
						putOp("cnt/log"+strconv.Itoa(n+1), strconv.Itoa(w)),
					}, true)
					switch {
					case err == nil:
						done++
					case errors.Is(err, store.ErrPreconditionFailed), errors.Is(err, store.ErrContended):
					default:
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range workers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if e := mustGet(t, s, "cnt/n", store.GetOptions{}); string(e.Value) != strconv.Itoa(workers*each) {
			t.Errorf("counter = %s, want %d", e.Value, workers*each)
		}
		for i := 1; i <= workers*each; i++ {
			if _, err := s.Get(ctx, ns, "cnt/log"+strconv.Itoa(i), store.GetOptions{}); err != nil {
				t.Errorf("cnt/log%d: %v (its batch bumped the counter, so it must exist)", i, err)
			}
		}
	})
}

// BenchmarkBatch100 measures batches of 100 puts, each to its own key, on a
// real redis-server, the shape of the load benchmark's POST /v1/batch arm
// without HTTP; key writes/s is the figure to compare with BENCH.md.
func BenchmarkBatch100(b *testing.B) {
	be := redistest.Real(b)
	s := newStore(b, be, store.Config{})
	ctx := context.Background()
	ops := make([]store.BatchOp, 100)
	for i := range ops {
		ops[i] = putOp("bench/"+strconv.Itoa(i%10)+"/k"+strconv.Itoa(i), `{"status":"running","progress":42}`)
	}
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		res, err := s.Batch(ctx, ops, false)
		if err != nil {
			b.Fatal(err)
		}
		if res[0].Err != nil {
			b.Fatal(res[0].Err)
		}
		n++
	}
	b.ReportMetric(float64(n*len(ops))/time.Since(start).Seconds(), "writes/s")
}

// BenchmarkBatch100Parallel runs batches of 100 puts from several
// goroutines at once, as concurrent POST /v1/batch requests would: the
// ceiling Redis allows. redis-µs/write is the CPU time redis-server spent
// per key written (INFO cpu): the write script's cost, which bounds a
// batch's speed.
func BenchmarkBatch100Parallel(b *testing.B) {
	be := redistest.Real(b)
	s := newStore(b, be, store.Config{})
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(2)
	var worker atomic.Int64
	cpu0 := redisCPU(b, be)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		w := strconv.FormatInt(worker.Add(1), 10)
		ops := make([]store.BatchOp, 100)
		for i := range ops {
			ops[i] = putOp("bench/"+w+"/k"+strconv.Itoa(i), `{"status":"running","progress":42}`)
		}
		for pb.Next() {
			if _, err := s.Batch(ctx, ops, false); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*100)/time.Since(start).Seconds(), "writes/s")
	b.ReportMetric((redisCPU(b, be)-cpu0)*1e6/float64(b.N*100), "redis-µs/write")
}

// BenchmarkPutParallel writes single keys from 32 goroutines, as concurrent
// PUTs would, through the group committer; redis-µs/write as above.
func BenchmarkPutParallel(b *testing.B) {
	be := redistest.Real(b)
	s := newStore(b, be, store.Config{})
	ctx := context.Background()
	value := json.RawMessage(`{"status":"running","progress":42}`)
	b.SetParallelism(16) // 32 on 2 CPUs
	var next atomic.Int64
	cpu0 := redisCPU(b, be)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			key := "tasks/T" + strconv.FormatInt(next.Add(1)%1000, 10) + "/state"
			if _, err := s.Put(ctx, ns, key, store.PutRequest{Value: value}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric((redisCPU(b, be)-cpu0)*1e6/float64(b.N), "redis-µs/write")
}

// redisCPU is the CPU time redis-server has used, in seconds (INFO cpu).
func redisCPU(tb testing.TB, be redistest.Backend) float64 {
	info, err := be.Client.Info(context.Background(), "cpu").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		name, v, _ := strings.Cut(line, ":")
		if name == "used_cpu_user" || name == "used_cpu_sys" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				tb.Fatalf("INFO cpu: %q: %v", line, err)
			}
			total += f
		}
	}
	return total
}

// The largest batch, every put in one subtree and with a TTL, runs whole:
// its index updates go out in chunks of 500 (a Lua unpack takes a few thousand
// values at most), and every key is listed and expires on schedule.
func TestBatchOfMaxOpsInOneSubtree(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		ops := make([]store.BatchOp, store.MaxBatchOps)
		for i := range ops {
			ops[i] = putOp(fmt.Sprintf("big/one/k%04d", i), strconv.Itoa(i))
		}
		res, err := s.Batch(ctx, ops, false)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil || r.Entry.ExpiresAt == 0 {
				t.Fatalf("op %d: %+v, %v", i, r.Entry, r.Err)
			}
		}
		listed, _, err := s.List(ctx, ns, "big/one/", "", store.MaxBatchOps)
		if err != nil || len(listed) != store.MaxBatchOps {
			t.Fatalf("listed %d keys (err %v), want %d", len(listed), err, store.MaxBatchOps)
		}
		n, err := b.Client.ZCard(ctx, "ms:{#memsync}#expiry").Result()
		if err != nil || n < store.MaxBatchOps {
			t.Errorf("expiry index holds %d (err %v), want at least %d", n, err, store.MaxBatchOps)
		}
	})
}

// A batch that switches between namespaces, writers and subtrees, deletes
// included, writes every key as its op says: one script call applies
// them all, each with its own.
func TestBatchSwitchingNamespacesWritersAndSubtrees(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		put := func(ns, writer, key string) store.BatchOp {
			return store.BatchOp{Kind: store.OpPut, Namespace: ns, Key: key,
				PutRequest: store.PutRequest{Value: json.RawMessage(`"` + ns + " " + writer + `"`), Writer: writer}}
		}
		del := func(ns, key string) store.BatchOp {
			return store.BatchOp{Kind: store.OpDelete, Namespace: ns, Key: key}
		}
		mustPut(t, s, "sw/b/gone", "w9", `1`, nil)
		ops := []store.BatchOp{
			put("n1", "w1", "sw/a/x"),
			put("n1", "w1", "sw/a/y"), // all as before
			put("n2", "w1", "sw/a/x"), // another namespace, same subtree name
			put("n2", "w2", "sw/b/z"), // another writer and subtree
			del(ns, "sw/b/gone"),      // a delete between puts of one writer
			put("n2", "w2", "sw/b/q"),
			put("n1", "w2", "sw/a/y"), // back to the first namespace: a second sibling
			put("n1", "w1", "sw/c/r"),
		}
		mustBatch(t, s, ops)
		for _, c := range []struct{ ns, key, want string }{
			{"n1", "sw/a/x", `[n1 w1]`},
			{"n1", "sw/a/y", `[n1 w1 n1 w2]`},
			{"n2", "sw/a/x", `[n2 w1]`},
			{"n2", "sw/b/z", `[n2 w2]`},
			{"n2", "sw/b/q", `[n2 w2]`},
			{"n1", "sw/c/r", `[n1 w1]`},
		} {
			e, err := s.Get(ctx, c.ns, c.key, store.GetOptions{Resolve: store.Siblings})
			if err != nil {
				t.Fatalf("%s %s: %v", c.ns, c.key, err)
			}
			var got []string
			for _, sib := range e.Siblings {
				var v string
				if err := json.Unmarshal(sib.Value, &v); err != nil || !strings.HasSuffix(v, sib.Writer) {
					t.Errorf("%s %s: sibling %s by %s", c.ns, c.key, sib.Value, sib.Writer)
				}
				got = append(got, v)
			}
			slices.Sort(got)
			if fmt.Sprint(got) != c.want {
				t.Errorf("%s %s holds %v, want %s", c.ns, c.key, got, c.want)
			}
			if keys, _, err := s.List(ctx, c.ns, c.key, "", 10); err != nil || len(keys) != 1 || keys[0] != c.key {
				t.Errorf("List(%s, %s) = %v, %v", c.ns, c.key, keys, err)
			}
		}
		if _, err := s.Get(ctx, ns, "sw/b/gone", store.GetOptions{}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted key: %v", err)
		}
	})
}
