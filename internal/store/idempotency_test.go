package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

// eventsLogged reads how many change events have been numbered: a write
// applied twice would log two.
func eventsLogged(t *testing.T, b redistest.Backend) int {
	t.Helper()
	n, err := b.Client.Get(context.Background(), "ms:{#memsync}#events-seq").Int()
	if err != nil {
		t.Fatalf("events-seq: %v", err)
	}
	return n
}

func TestIdempotentWrites(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		req := func(value, idem string) store.PutRequest {
			return store.PutRequest{Value: json.RawMessage(value), Writer: "w1", IdempotencyKey: idem}
		}
		first, err := s.Put(ctx, ns, "idem/k", req(`"a"`, "req-1"))
		if err != nil || first.Replayed {
			t.Fatalf("first put: replayed %v, %v", first.Replayed, err)
		}
		events := eventsLogged(t, b)

		// Sent again: answered, not applied.
		again, err := s.Put(ctx, ns, "idem/k", req(`"a"`, "req-1"))
		if err != nil {
			t.Fatalf("the same put again: %v", err)
		}
		if !again.Replayed || again.ETag != first.ETag || string(again.Value) != `"a"` ||
			again.Version.Compare(clock.Vector{"w1": 1}) != clock.Equal {
			t.Errorf("the same put again = replayed %v, etag %s (first %s), value %s, version %v; want the first write's state",
				again.Replayed, again.ETag, first.ETag, again.Value, again.Version)
		}
		if got := eventsLogged(t, b); got != events {
			t.Errorf("events logged = %d after the retry, want %d: a retry must not announce a write", got, events)
		}
		if st := s.Stats(); st.Replayed != 1 || st.Writes != 1 {
			t.Errorf("stats after the retry: %d replayed, %d writes; want 1, 1", st.Replayed, st.Writes)
		}

		// The same idempotency key on another request is refused, whole.
		if _, err := s.Put(ctx, ns, "idem/k", req(`"b"`, "req-1")); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("another value under the same key: %v, want ErrInvalidArgument", err)
		}
		other := req(`"a"`, "req-1")
		other.TTL = ttl(0)
		if _, err := s.Put(ctx, ns, "idem/k", other); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("another TTL under the same key: %v, want ErrInvalidArgument", err)
		}
		if e := mustGet(t, s, "idem/k", store.GetOptions{}); e.ETag != first.ETag {
			t.Errorf("refused requests changed the key: etag %s, want %s", e.ETag, first.ETag)
		}

		// A condition that the write itself made false does not fail its
		// retry: a create, and a compare-and-set.
		create := req(`"c"`, "req-create")
		create.IfNoneMatch = true
		for i := range 2 {
			res, err := s.Put(ctx, ns, "idem/new", create)
			if err != nil || res.Replayed != (i == 1) {
				t.Errorf("create, attempt %d: replayed %v, %v", i+1, res.Replayed, err)
			}
		}
		cas := req(`"d"`, "req-cas")
		cas.IfMatch = first.ETag
		var casETag string
		for i := range 2 {
			res, err := s.Put(ctx, ns, "idem/k", cas)
			if err != nil || res.Replayed != (i == 1) {
				t.Fatalf("compare-and-set, attempt %d: replayed %v, %v", i+1, res.Replayed, err)
			}
			if i == 0 {
				casETag = res.ETag
			} else if res.ETag != casETag {
				t.Errorf("compare-and-set retry: etag %s, want the write's %s", res.ETag, casETag)
			}
		}

		// A retry after someone else wrote is answered with what the key
		// holds now.
		mustPut(t, s, "idem/k", "w2", `"e"`, nil)
		res, err := s.Put(ctx, ns, "idem/k", cas)
		if err != nil || !res.Replayed || len(res.Siblings) != 2 {
			t.Errorf("retry after another writer: replayed %v, %d siblings, %v; want replayed, both siblings",
				res.Replayed, len(res.Siblings), err)
		}

		// The key remembers its latest IdempotencyKeep idempotent writes.
		for i := range store.IdempotencyKeep {
			if _, err := s.Put(ctx, ns, "idem/k", req(fmt.Sprintf("%d", i), fmt.Sprintf("later-%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		if res, err := s.Put(ctx, ns, "idem/k", req(`0`, "later-0")); err != nil || !res.Replayed {
			t.Errorf("the oldest remembered write again: replayed %v, %v", res.Replayed, err)
		}
		res, err = s.Put(ctx, ns, "idem/k", cas) // forgotten: applied, and its If-Match fails now
		if !errors.Is(err, store.ErrPreconditionFailed) {
			t.Errorf("a write older than the %d remembered, again: replayed %v, %v; want it applied (412)",
				store.IdempotencyKeep, res.Replayed, err)
		}

		// A deleted key forgets.
		if _, err := s.Delete(ctx, ns, "idem/new", store.DeleteRequest{}); err != nil {
			t.Fatal(err)
		}
		if res, err := s.Put(ctx, ns, "idem/new", create); err != nil || res.Replayed {
			t.Errorf("retry after a delete: replayed %v, %v; want created again", res.Replayed, err)
		}

		// Refused before Redis: a malformed key.
		if _, err := s.Put(ctx, ns, "idem/bad", req(`1`, "two words")); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("idempotency key with a space: %v, want ErrInvalidArgument", err)
		}
		if _, err := s.Get(ctx, ns, "idem/bad", store.GetOptions{}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("idem/bad exists after a refused write: %v", err)
		}
	})
}

// A batch sent again: the puts it applied under idempotency keys are
// answered (Replayed, the key as it is now) and not applied again; a put
// of it that had failed, and one without a key, are applied.
func TestIdempotentBatch(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		put := func(key, value, idem string) store.BatchOp {
			return store.BatchOp{Kind: store.OpPut, Namespace: ns, Key: key,
				PutRequest: store.PutRequest{Value: json.RawMessage(value), Writer: "w1", IdempotencyKey: idem}}
		}
		mustPut(t, s, "batch/taken", "w2", `"theirs"`, nil)
		ops := []store.BatchOp{
			put("batch/a", `"a"`, "b1.0"),
			put("batch/b", `"b"`, "b1.1"),
			put("batch/taken", `"mine"`, "b1.2"),
			put("batch/plain", `"p"`, ""),
		}
		ops[2].IfNoneMatch = true // fails: the key exists
		first, err := s.Batch(ctx, ops, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Delete(ctx, ns, "batch/taken", store.DeleteRequest{}); err != nil {
			t.Fatal(err)
		}
		events := eventsLogged(t, b)
		again, err := s.Batch(ctx, ops, false)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []struct {
			replayed bool
			version  uint64 // w1's counter
		}{{true, 1}, {true, 1}, {false, 1}, {false, 2}} {
			r := again[i]
			if r.Err != nil || r.Replayed != want.replayed || r.Entry.Version["w1"] != want.version {
				t.Errorf("op %d sent again: replayed %v, version %v, %v; want replayed %v, w1 %d",
					i, r.Replayed, r.Entry.Version, r.Err, want.replayed, want.version)
			}
		}
		if first[0].Entry.ETag != again[0].Entry.ETag || first[2].Err == nil {
			t.Errorf("first batch: %+v", first)
		}
		if got := eventsLogged(t, b); got != events+2 {
			t.Errorf("events logged by the batch sent again = %d, want 2 (the two puts applied)", got-events)
		}
		if st := s.Stats(); st.Replayed != 2 {
			t.Errorf("replayed = %d, want 2", st.Replayed)
		}
	})
}

// An atomic batch sent again under its puts' idempotency keys: it had
// applied whole, so it is answered (Replayed, its puts' keys as they are
// now, its gets read now) and nothing is applied again, though its
// if_match no longer holds. The same keys on another batch, or on only
// some of its puts, are refused, and so is everything in the batch.
func TestIdempotentAtomicBatch(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		theirs := mustPut(t, s, "atomic/T1/x", "w2", `"theirs"`, nil)
		mustPut(t, s, "atomic/T1/gone", "w2", `"old"`, nil)
		op := func(kind store.OpKind, key, value, idem, ifMatch string) store.BatchOp {
			o := store.BatchOp{Kind: kind, Namespace: ns, Key: key,
				PutRequest: store.PutRequest{Writer: "w1", IdempotencyKey: idem, IfMatch: ifMatch}}
			if value != "" {
				o.Value = json.RawMessage(value)
			}
			return o
		}
		ops := []store.BatchOp{
			op(store.OpPut, "atomic/T1/a", `"a"`, "k.0", ""),
			op(store.OpPut, "atomic/T1/x", `"mine"`, "k.1", theirs.Entry.ETag),
			op(store.OpDelete, "atomic/T1/gone", "", "", "*"),
			op(store.OpGet, "atomic/T1/a", "", "", ""),
		}
		first, err := s.Batch(ctx, ops, true)
		if err != nil {
			t.Fatal(err)
		}
		events := eventsLogged(t, b)
		again, err := s.Batch(ctx, ops, true)
		if err != nil {
			t.Fatalf("atomic batch sent again: %v, want it answered as applied", err)
		}
		for i, want := range []struct {
			replayed bool
			value    string
		}{{true, `"a"`}, {true, `"mine"`}, {true, ""}, {false, `"a"`}} {
			r := again[i]
			if r.Err != nil || r.Replayed != want.replayed || string(r.Entry.Value) != want.value {
				t.Errorf("op %d sent again: replayed %v, value %s, %v; want replayed %v, %s", i, r.Replayed, r.Entry.Value, r.Err, want.replayed, want.value)
			}
		}
		if again[0].Entry.ETag != first[0].Entry.ETag || again[1].Entry.Version["w1"] != 1 {
			t.Errorf("applied again: etag %s then %s, x at %v", first[0].Entry.ETag, again[0].Entry.ETag, again[1].Entry.Version)
		}
		if got := eventsLogged(t, b); got != events {
			t.Errorf("events logged by the batch sent again = %d, want 0", got-events)
		}
		if st := s.Stats(); st.Replayed != 2 {
			t.Errorf("replayed = %d, want 2 (the puts)", st.Replayed)
		}

		// Without its keys, the same batch fails whole on its own if_match.
		plain := append([]store.BatchOp(nil), ops...)
		plain[0].IdempotencyKey, plain[1].IdempotencyKey = "", ""
		var be *store.BatchError
		if _, err := s.Batch(ctx, plain, true); !errors.As(err, &be) || !errors.Is(err, store.ErrPreconditionFailed) {
			t.Errorf("the batch again without keys: %v, want a BatchError of ErrPreconditionFailed", err)
		}

		// The same keys on another batch, whose puts are the same but not
		// the rest, or whose put differs: refused, nothing applied.
		other := append([]store.BatchOp(nil), ops...)
		other[2] = op(store.OpDelete, "atomic/T1/x", "", "", "")
		if _, err := s.Batch(ctx, other, true); !errors.As(err, &be) || !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("the keys on a batch with another delete: %v, want a BatchError of ErrInvalidArgument", err)
		}
		other = append([]store.BatchOp(nil), ops...)
		other[0] = op(store.OpPut, "atomic/T1/a", `"changed"`, "k.0", "")
		if _, err := s.Batch(ctx, other, true); !errors.As(err, &be) || !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("the keys on a batch with another value: %v, want a BatchError of ErrInvalidArgument", err)
		}
		// Keys on only some of its puts: refused before Redis.
		some := []store.BatchOp{op(store.OpPut, "atomic/T1/b", `1`, "m.0", ""), op(store.OpPut, "atomic/T1/c", `2`, "", "")}
		if _, err := s.Batch(ctx, some, true); !errors.As(err, &be) || be.Index != 1 || !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("keys on some puts: %v, want a BatchError of ErrInvalidArgument at op 1", err)
		}
		if got := eventsLogged(t, b); got != events {
			t.Errorf("events logged by refused batches = %d, want 0", got-events)
		}
		e, err := s.Get(ctx, ns, "atomic/T1/a", store.GetOptions{})
		if err != nil || string(e.Value) != `"a"` || e.ETag != first[0].Entry.ETag {
			t.Errorf("atomic/T1/a after refused batches = %s %s, %v", e.Value, e.ETag, err)
		}

		// A batch of deletes only is remembered by the keys it deleted:
		// sent again after one of them was written anew, it deletes
		// nothing, and is answered as applied.
		mustPut(t, s, "atomic/T1/d1", "w2", `1`, nil)
		mustPut(t, s, "atomic/T1/d2", "w2", `2`, nil)
		dels := []store.BatchOp{op(store.OpDelete, "atomic/T1/d1", "", "del.0", ""), op(store.OpDelete, "atomic/T1/d2", "", "del.1", "")}
		if out, err := s.Batch(ctx, dels, true); err != nil || out[0].Err != nil || out[1].Err != nil || out[0].Replayed {
			t.Fatalf("atomic batch of deletes = %+v, %v", out, err)
		}
		anew := mustPut(t, s, "atomic/T1/d1", "w2", `"anew"`, nil)
		events = eventsLogged(t, b)
		out, err := s.Batch(ctx, dels, true)
		if err != nil || !out[0].Replayed || !out[1].Replayed || out[0].Err != nil || out[1].Err != nil {
			t.Errorf("atomic batch of deletes sent again = %+v, %v; want both answered as applied", out, err)
		}
		if e, err := s.Get(ctx, ns, "atomic/T1/d1", store.GetOptions{}); err != nil || e.ETag != anew.Entry.ETag {
			t.Errorf("atomic/T1/d1 after the deletes were sent again = %s, %v; want the write after them, %s", e.ETag, err, anew.Entry.ETag)
		}
		if got := eventsLogged(t, b); got != events {
			t.Errorf("events logged by the deletes sent again = %d, want 0", got-events)
		}
		// Its keys on another batch of deletes: refused, nothing deleted.
		if _, err := s.Batch(ctx, dels[:1], true); !errors.As(err, &be) || be.Index != 0 || !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("the keys on another batch of deletes: %v, want a BatchError of ErrInvalidArgument at op 0", err)
		}
		if _, err := s.Get(ctx, ns, "atomic/T1/d1", store.GetOptions{}); err != nil {
			t.Errorf("atomic/T1/d1 after a refused batch: %v", err)
		}
	})
}

// A delete sent again under its idempotency key: applied once, even when
// the key was written again in between, while the key remembers it (its
// IdempotencyKeep latest keyed deletes); the same key with another
// If-Match is refused; a batch's delete is remembered the same way.
func TestIdempotentDeletes(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		del := func(key, idem, ifMatch string) (store.DeleteResult, error) {
			return s.Delete(ctx, ns, key, store.DeleteRequest{IfMatch: ifMatch, IdempotencyKey: idem})
		}
		mustPut(t, s, "gone/k", "w1", `1`, nil)
		if res, err := del("gone/k", "d-1", ""); err != nil || res.Replayed {
			t.Fatalf("first delete: %+v, %v", res, err)
		}
		events := eventsLogged(t, b)
		if res, err := del("gone/k", "d-1", ""); err != nil || !res.Replayed {
			t.Errorf("the delete again: %+v, %v; want Replayed", res, err)
		}
		// Written again since: the delete sent again still changes nothing.
		again := mustPut(t, s, "gone/k", "w2", `2`, nil)
		if res, err := del("gone/k", "d-1", ""); err != nil || !res.Replayed {
			t.Errorf("the delete again after a new write: %+v, %v; want Replayed", res, err)
		}
		if e, err := s.Get(ctx, ns, "gone/k", store.GetOptions{Consistent: true}); err != nil || e.ETag != again.Entry.ETag {
			t.Errorf("the new write after the delete sent again: %+v, %v", e, err)
		}
		if _, err := del("gone/k", "d-1", again.Entry.ETag); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("the idempotency key with another If-Match: %v, want ErrInvalidArgument", err)
		}
		if got := eventsLogged(t, b); got != events+1 {
			t.Errorf("events logged = %d, want 1 (the new write)", got-events)
		}
		// Another key is another delete; without one, a delete of nothing
		// is ErrNotFound.
		if res, err := del("gone/k", "d-2", ""); err != nil || res.Replayed {
			t.Errorf("a delete under another key: %+v, %v; want it applied", res, err)
		}
		if _, err := del("gone/k", "", ""); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a delete without a key of a deleted key: %v, want ErrNotFound", err)
		}
		if _, err := del("gone/k", "two words", ""); !errors.Is(err, store.ErrInvalidArgument) {
			t.Errorf("a malformed idempotency key: %v, want ErrInvalidArgument", err)
		}
		if b.Real != nil {
			ttl := b.Client.PTTL(ctx, "ms:{"+ns+"/gone/k}#deleted").Val()
			if ttl <= store.DeleteIdempotencyKeep-time.Minute || ttl > store.DeleteIdempotencyKeep {
				t.Errorf("the remembered delete expires in %v, want %v", ttl, store.DeleteIdempotencyKeep)
			}
		}

		// The key remembers its IdempotencyKeep latest keyed deletes: d-1
		// and d-2 now, until IdempotencyKeep newer ones.
		if res, err := del("gone/k", "d-1", ""); err != nil || !res.Replayed {
			t.Errorf("the first delete again after another keyed one: %+v, %v; want Replayed", res, err)
		}
		for i := range store.IdempotencyKeep - 1 {
			mustPut(t, s, "gone/k", "w1", `3`, nil)
			if _, err := del("gone/k", fmt.Sprintf("d-%d", i+3), ""); err != nil {
				t.Fatal(err)
			}
		}
		if res, err := del("gone/k", "d-2", ""); err != nil || !res.Replayed {
			t.Errorf("d-2 after %d newer deletes: %+v, %v; want Replayed", store.IdempotencyKeep-1, res, err)
		}
		if res, err := del("gone/k", "d-1", ""); !errors.Is(err, store.ErrNotFound) || res.Replayed {
			t.Errorf("d-1 after %d newer deletes: %+v, %v; want it forgotten (ErrNotFound)", store.IdempotencyKeep, res, err)
		}

		// In a batch that is not atomic.
		mustPut(t, s, "gone/b", "w1", `1`, nil)
		op := store.BatchOp{Kind: store.OpDelete, Namespace: ns, Key: "gone/b", PutRequest: store.PutRequest{IdempotencyKey: "bd.0"}}
		for i, replayed := range []bool{false, true} {
			res, err := s.Batch(ctx, []store.BatchOp{op}, false)
			if err != nil || res[0].Err != nil || res[0].Replayed != replayed {
				t.Errorf("batch delete, try %d: %+v, %v; want replayed %v", i+1, res, err, replayed)
			}
		}
		bad := op
		bad.IdempotencyKey = "two words"
		if res, err := s.Batch(ctx, []store.BatchOp{bad}, false); err != nil || !errors.Is(res[0].Err, store.ErrInvalidArgument) {
			t.Errorf("batch delete with a malformed key: %+v, %v; want ErrInvalidArgument", res, err)
		}
		if st := s.Stats(); st.ReplayedDeletes != 5 || st.Replayed != 0 {
			t.Errorf("replayed deletes %d, puts %d; want 5, 0", st.ReplayedDeletes, st.Replayed)
		}
	})
}

// A keyed delete that found no key is remembered as such: sent again, it
// is ErrNotFound again, Replayed, and deletes nothing, even after the key
// was created; alone, in a batch, and in an atomic batch, through the
// group committer's script and through the per-key one (Cluster's).
func TestIdempotentDeletesOfAbsentKeys(t *testing.T) {
	for _, perKey := range []bool{false, true} {
		t.Run(fmt.Sprintf("per-key-scripts=%v", perKey), func(t *testing.T) {
			redistest.Each(t, func(t *testing.T, b redistest.Backend) {
				s := newStore(t, b, store.Config{PerKeyScripts: perKey})
				ctx := context.Background()
				mustPut(t, s, "ghost/other", "w1", `0`, nil) // numbers the events
				created := map[string]string{}               // key → etag of its write after the first delete
				create := func(key string) {
					created[key] = mustPut(t, s, key, "w2", `"created since"`, nil).Entry.ETag
				}
				del := func(key, idem, ifMatch string) (store.DeleteResult, error) {
					return s.Delete(ctx, ns, key, store.DeleteRequest{IfMatch: ifMatch, IdempotencyKey: idem})
				}
				delOp := func(key, idem string) store.BatchOp {
					return store.BatchOp{Kind: store.OpDelete, Namespace: ns, Key: key, PutRequest: store.PutRequest{IdempotencyKey: idem}}
				}

				if res, err := del("ghost/k", "g-1", ""); !errors.Is(err, store.ErrNotFound) || res.Replayed {
					t.Fatalf("first delete of an absent key: %+v, %v; want ErrNotFound", res, err)
				}
				create("ghost/k")

				// A non-atomic batch's delete, an atomic batch whose only
				// delete finds nothing, and one whose other delete finds its
				// key. Each is sent, its keys are created, and it is sent
				// again (replayed).
				mustPut(t, s, "ghost/a3", "w1", `3`, nil)
				batches := []struct {
					ops    []store.BatchOp
					atomic bool
					found  []bool
				}{
					{[]store.BatchOp{delOp("ghost/b", "gb.0")}, false, []bool{false}},
					{[]store.BatchOp{delOp("ghost/a1", "ga.0")}, true, []bool{false}},
					{[]store.BatchOp{delOp("ghost/a2", "gt.0"), delOp("ghost/a3", "gt.1")}, true, []bool{false, true}},
				}
				sendBatches := func(replayed bool) {
					t.Helper()
					for _, c := range batches {
						out, err := s.Batch(ctx, c.ops, c.atomic)
						if err != nil {
							t.Fatalf("batch %v (replayed %v): %v", c.ops, replayed, err)
						}
						for i, r := range out {
							if r.Replayed != replayed || errors.Is(r.Err, store.ErrNotFound) == c.found[i] || c.found[i] && r.Err != nil {
								t.Errorf("batch: delete of %s = replayed %v, %v; want replayed %v, found %v", c.ops[i].Key, r.Replayed, r.Err, replayed, c.found[i])
							}
							if !replayed {
								create(c.ops[i].Key)
							}
						}
					}
				}
				sendBatches(false)
				events := eventsLogged(t, b)

				if res, err := del("ghost/k", "g-1", ""); !errors.Is(err, store.ErrNotFound) || !res.Replayed {
					t.Errorf("the delete again after the key was created: %+v, %v; want ErrNotFound, Replayed", res, err)
				}
				if _, err := del("ghost/k", "g-1", "*"); !errors.Is(err, store.ErrInvalidArgument) {
					t.Errorf("its idempotency key with another If-Match: %v, want ErrInvalidArgument", err)
				}
				sendBatches(true)
				for key, etag := range created {
					if e, err := s.Get(ctx, ns, key, store.GetOptions{Consistent: true}); err != nil || e.ETag != etag {
						t.Errorf("%s after the deletes were sent again = %s, %v; want the write since, %s", key, e.ETag, err, etag)
					}
				}
				if got := eventsLogged(t, b); got != events {
					t.Errorf("events logged by the deletes sent again = %d, want 0", got-events)
				}
			})
		})
	}
}

// A write derived from another request (a PATCH) names that request by its
// subject: a retry whose value, context and TTL differ is still the same
// request, and another subject under the key is refused.
func TestIdempotencySubject(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		ttl := time.Minute
		req := func(value, subject string) store.PutRequest {
			return store.PutRequest{Value: json.RawMessage(value), Writer: "w1", IdempotencyKey: "patch-1", IdempotencySubject: subject, TTL: &ttl}
		}
		first, err := s.Put(ctx, ns, "idem/subject", req(`{"a":1}`, "s1"))
		if err != nil || first.Replayed {
			t.Fatalf("first put: replayed %v, %v", first.Replayed, err)
		}
		retry := req(`{"a":1,"b":2}`, "s1")
		retry.IfMatch, retry.Context = "not-an-etag", first.Version
		ttl = 30 * time.Second
		again, err := s.Put(ctx, ns, "idem/subject", retry)
		if err != nil || !again.Replayed || again.ETag != first.ETag || string(again.Value) != `{"a":1}` {
			t.Fatalf("retry of the same subject = %+v, %v; want the first write replayed", again, err)
		}
		if _, err := s.Put(ctx, ns, "idem/subject", req(`{"a":1}`, "s2")); !errors.Is(err, store.ErrInvalidArgument) {
			t.Fatalf("another subject under the key: %v, want ErrInvalidArgument", err)
		}
		other := req(`{"a":1}`, "s1")
		other.Writer = "w2"
		if _, err := s.Put(ctx, ns, "idem/subject", other); !errors.Is(err, store.ErrInvalidArgument) {
			t.Fatalf("the subject from another writer: %v, want ErrInvalidArgument", err)
		}
	})
}
