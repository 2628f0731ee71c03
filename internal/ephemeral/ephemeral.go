// Package ephemeral binds keys to a worker's heartbeat, as etcd binds keys
// to a lease and Consul to a session: a key written with ?ephemeral=true is
// deleted once its writer's heartbeat key (workers/{id}/heartbeat) is gone,
// expired or deleted, so that what a worker claimed or announced does not
// outlive it.
//
// A key is bound by the write that made its current state: the binding
// records the etag that write left, and the key is deleted only while it
// still has that etag (a conditional delete). A later write, bound or not,
// by anyone, takes the key over.
//
// Every instance reaps: every Interval it looks up the heartbeats of the
// workers with bound keys and deletes the keys of those whose heartbeat is
// gone. What two instances both try, one does and the other finds done (the
// delete is conditional), so a reap that an instance did not finish (it
// died, Redis failed) is finished by the next pass of any instance.
//
// Redis layout (all in the namespace's hash slot but the first):
//
//	ms:{#memsync}#ephemeral  set: the namespaces with bound keys
//	ms:{N}#ephemeral         set: the workers with bound keys in N
//	ms:{N}#ephemeral:<id>    hash: key → the etag of its bound write
package ephemeral

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/store"
)

// DefaultInterval is how often Run reaps: a worker's bound keys go within
// about a second of its heartbeat, which itself expires with a whole TTL.
const DefaultInterval = time.Second

// ErrNoHeartbeat: the worker has no live heartbeat to bind a key to.
var ErrNoHeartbeat = errors.New("ephemeral: the worker has no live heartbeat")

// Store is what the binder needs from the store: reading heartbeats, and
// deleting a bound key on the condition that it is still as bound.
type Store interface {
	GetMany(ctx context.Context, ns string, keys []string, opt store.GetOptions) ([]store.Entry, error)
	Delete(ctx context.Context, ns, key string, req store.DeleteRequest) (store.DeleteResult, error)
}

// Binder binds keys to heartbeats and reaps them. It is safe for concurrent
// use.
type Binder struct {
	rdb    redis.UniversalClient
	st     Store
	reaped atomic.Uint64
}

// Reaped is how many bound keys this Binder deleted because their worker's
// heartbeat was gone, for metrics.
func (b *Binder) Reaped() uint64 { return b.reaped.Load() }

// New returns a Binder on rdb and st (the same Redis). Start its reaping
// with Run.
func New(rdb redis.UniversalClient, st Store) *Binder {
	return &Binder{rdb: rdb, st: st}
}

// HeartbeatKey is worker's heartbeat key.
func HeartbeatKey(worker string) string { return "workers/" + worker + "/heartbeat" }

var namespacesKey = keys.Namespace("#memsync", "ephemeral")

func workersKey(ns string) string       { return keys.Namespace(ns, "ephemeral") }
func boundKey(ns, worker string) string { return keys.Namespace(ns, "ephemeral:"+worker) }
func unavailable(op string, err error) error {
	return fmt.Errorf("%w: ephemeral: %s: %w", store.ErrUnavailable, op, err)
}

// Alive reports whether worker's heartbeat is live in ns.
func (b *Binder) Alive(ctx context.Context, ns, worker string) (bool, error) {
	alive, err := b.alive(ctx, ns, []string{worker})
	if err != nil {
		return false, err
	}
	return alive[0], nil
}

func (b *Binder) alive(ctx context.Context, ns string, workers []string) ([]bool, error) {
	ks := make([]string, len(workers))
	for i, w := range workers {
		ks[i] = HeartbeatKey(w)
	}
	entries, err := b.st.GetMany(ctx, ns, ks, store.GetOptions{Consistent: true})
	if err != nil {
		return nil, err
	}
	out := make([]bool, len(workers))
	for i, e := range entries {
		out[i] = e.Key != ""
	}
	return out, nil
}

// Bind records that key, in the state etag, is bound to worker's heartbeat.
// When the heartbeat is gone by the time the binding is recorded, Bind
// deletes the key (if it is still in that state) and returns
// ErrNoHeartbeat: a key written just as its worker died does not stay.
func (b *Binder) Bind(ctx context.Context, ns, worker, key, etag string) error {
	if !keys.ValidSegment(worker) {
		return fmt.Errorf("%w: worker id %q", store.ErrInvalidArgument, worker)
	}
	// The worker is listed with its binding in one transaction (one slot),
	// and the namespace after it, so that a reap never drops a namespace
	// or worker that still has bindings (see dropIfEmpty).
	_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, boundKey(ns, worker), key, etag)
		p.SAdd(ctx, workersKey(ns), worker)
		return nil
	})
	if err == nil {
		err = b.rdb.SAdd(ctx, namespacesKey, ns).Err()
	}
	if err != nil {
		return unavailable("bind", err)
	}
	alive, err := b.Alive(ctx, ns, worker)
	if err != nil || alive {
		return err
	}
	if _, err := b.end(ctx, ns, worker, map[string]string{key: etag}); err != nil {
		return err
	}
	return ErrNoHeartbeat
}

// Run reaps every interval (DefaultInterval when 0) until ctx ends; a pass
// that fails is reported to onErr and tried again at the next.
func (b *Binder) Run(ctx context.Context, interval time.Duration, onErr func(error)) {
	if interval <= 0 {
		interval = DefaultInterval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if _, err := b.Reap(ctx); err != nil && ctx.Err() == nil && onErr != nil {
			onErr(err)
		}
	}
}

// Reap deletes the bound keys of every worker whose heartbeat is gone, in
// every namespace, and returns how many it deleted.
func (b *Binder) Reap(ctx context.Context) (int, error) {
	nss, err := b.rdb.SMembers(ctx, namespacesKey).Result()
	if err != nil {
		return 0, unavailable("reap", err)
	}
	total := 0
	var errs []error
	for _, ns := range nss {
		if keys.ValidateNamespace(ns) != nil {
			continue
		}
		n, err := b.reapNamespace(ctx, ns)
		total += n
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

func (b *Binder) reapNamespace(ctx context.Context, ns string) (int, error) {
	workers, err := b.rdb.SMembers(ctx, workersKey(ns)).Result()
	if err != nil {
		return 0, unavailable("reap", err)
	}
	if len(workers) == 0 {
		return 0, b.dropNamespaceIfEmpty(ctx, ns)
	}
	valid := workers[:0]
	for _, w := range workers {
		if keys.ValidSegment(w) {
			valid = append(valid, w)
		}
	}
	alive, err := b.alive(ctx, ns, valid)
	if err != nil {
		return 0, err
	}
	total := 0
	for i, w := range valid {
		if alive[i] {
			continue
		}
		bound, err := b.rdb.HGetAll(ctx, boundKey(ns, w)).Result()
		if err != nil {
			return total, unavailable("reap", err)
		}
		n, err := b.end(ctx, ns, w, bound)
		total += n
		if err != nil {
			return total, err
		}
		if err := dropWorkerScript.Run(ctx, b.rdb, []string{boundKey(ns, w), workersKey(ns)}, w).Err(); err != nil {
			return total, unavailable("reap", err)
		}
	}
	return total, nil
}

// end deletes the keys of bound (key → etag) that are still in their bound
// state, and forgets their bindings; it returns how many it deleted.
func (b *Binder) end(ctx context.Context, ns, worker string, bound map[string]string) (int, error) {
	n := 0
	for key, etag := range bound {
		_, err := b.st.Delete(ctx, ns, key, store.DeleteRequest{IfMatch: etag})
		switch {
		case err == nil:
			n++
			b.reaped.Add(1)
		case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrPreconditionFailed), errors.Is(err, keys.ErrInvalidKey):
			// Gone already, or taken over by a later write.
		default:
			return n, err
		}
		if err := forgetScript.Run(ctx, b.rdb, []string{boundKey(ns, worker)}, key, etag).Err(); err != nil {
			return n, unavailable("forget", err)
		}
	}
	return n, nil
}

// dropNamespaceIfEmpty takes ns off the list of namespaces with bindings
// when it has none. A Bind racing with it lists the worker before the
// namespace, so the second look puts back a namespace it took off wrongly.
func (b *Binder) dropNamespaceIfEmpty(ctx context.Context, ns string) error {
	if err := b.rdb.SRem(ctx, namespacesKey, ns).Err(); err != nil {
		return unavailable("reap", err)
	}
	n, err := b.rdb.SCard(ctx, workersKey(ns)).Result()
	if err == nil && n > 0 {
		err = b.rdb.SAdd(ctx, namespacesKey, ns).Err()
	}
	if err != nil {
		return unavailable("reap", err)
	}
	return nil
}

// forgetScript removes a binding unless it was made again since.
//
// KEYS[1] the worker's bindings (hash: key → etag)
// ARGV[1] key, ARGV[2] the etag of the binding to remove
//
// Returns 1 when removed, else 0.
var forgetScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
`)

// dropWorkerScript takes a worker off its namespace's list when it has no
// bindings left (a Bind may have added one since the reap read them).
//
// KEYS[1] the worker's bindings, KEYS[2] the namespace's workers (set)
// ARGV[1] worker id
//
// Returns 1 when dropped, else 0.
var dropWorkerScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.call('SREM', KEYS[2], ARGV[1])
end
return 0
`)
