package metrics

import (
	"context"
	"strings"

	"github.com/memsync/memsync/internal/lock"
	"github.com/memsync/memsync/internal/store"
)

// StoreSource adapts the store's counters; it also gives the vector clock
// and the active workers of namespace ns.
func StoreSource(st *store.Store, ns string) (stats func() StoreStats, vc func() map[string]uint64, workers func(context.Context) (int, error)) {
	stats = func() StoreStats {
		s := st.Stats()
		conflicts := make(map[string]uint64, len(s.Conflicts))
		for k, v := range s.Conflicts {
			conflicts[string(k)] = v
		}
		return StoreStats{Reads: s.Reads, Writes: s.Writes, Commits: s.Commits,
			EventsPublished: s.EventsPublished, RedisErrors: s.RedisErrors, Tidied: s.Tidied, Replayed: s.Replayed,
			ReplayedDeletes: s.ReplayedDeletes, Conflicts: conflicts}
	}
	vc = func() map[string]uint64 { return st.VectorClock() }
	workers = func(ctx context.Context) (int, error) { return activeWorkers(ctx, st, ns) }
	return stats, vc, workers
}

// LockSource adapts the locker's counters.
func LockSource(lk *lock.Locker) func() LockStats {
	return func() LockStats {
		s := lk.Stats()
		return LockStats{Grants: s.Grants, Contended: s.Contended, Replayed: s.Replayed,
			Permits: s.Permits, Full: s.Full, PermitsReplayed: s.PermitsReplayed}
	}
}

// activeWorkers counts the live heartbeats of namespace ns, from the index.
func activeWorkers(ctx context.Context, st *store.Store, ns string) (int, error) {
	n, cursor := 0, ""
	for {
		page, next, err := st.List(ctx, ns, "workers/", cursor, store.MaxListLimit)
		if err != nil {
			return 0, err
		}
		for _, k := range page {
			if strings.HasSuffix(k, "/heartbeat") && strings.Count(k, "/") == 2 {
				n++
			}
		}
		if next == "" {
			return n, nil
		}
		cursor = next
	}
}
