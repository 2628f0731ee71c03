package store

import (
	"sync"
	"sync/atomic"

	"github.com/memsync/memsync/internal/clock"
)

// Stats are the store's counters since it started, for metrics.
type Stats struct {
	Reads  uint64 // keys read (found or not)
	Writes uint64 // writes applied
	// Conflicts counts writes that left concurrent siblings, by the key's
	// strategy.
	Conflicts map[Strategy]uint64
	// Commits counts pipelines of writes sent by the group committer.
	Commits         uint64
	EventsPublished uint64
	RedisErrors     uint64 // Redis unreachable, or a Redis error reply
	// Tidied counts listing index entries (namespaces, roots, children)
	// that Tidy removed.
	Tidied uint64
	// Replayed counts puts answered without being applied, because an
	// earlier request had applied them under their idempotency key;
	// ReplayedDeletes the same for deletes.
	Replayed, ReplayedDeletes uint64
}

// counters are the live counters behind Stats.
type counters struct {
	reads, writes, commits, events, redisErrors, tidied atomic.Uint64
	replayed, replayedDeletes                           atomic.Uint64
	conflicts                                           [5]atomic.Uint64 // by strategyIndex

	mu    sync.Mutex
	clock clock.Vector // every version this instance wrote, merged
}

var strategies = [...]Strategy{LWW, Union, Merge, Max, Siblings}

func strategyIndex(s Strategy) int {
	for i, x := range strategies {
		if x == s {
			return i
		}
	}
	return 0
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	c := &s.count
	st := Stats{
		Reads: c.reads.Load(), Writes: c.writes.Load(), Commits: c.commits.Load(),
		EventsPublished: c.events.Load(), RedisErrors: c.redisErrors.Load(), Tidied: c.tidied.Load(),
		Replayed: c.replayed.Load(), ReplayedDeletes: c.replayedDeletes.Load(),
		Conflicts: make(map[Strategy]uint64, len(strategies)),
	}
	for i, x := range strategies {
		st.Conflicts[x] = c.conflicts[i].Load()
	}
	return st
}

// VectorClock returns the merge of every version this instance wrote: the
// seed's per-process vector clock.
func (s *Store) VectorClock() clock.Vector {
	s.count.mu.Lock()
	defer s.count.mu.Unlock()
	return s.count.clock.Clone()
}

// wrote records an applied write.
func (c *counters) wrote(res PutResult) {
	c.writes.Add(1)
	if res.Conflicted {
		c.conflicts[strategyIndex(res.Strategy)].Add(1)
	}
	c.mu.Lock()
	if c.clock == nil {
		c.clock = clock.Vector{}
	}
	for id, n := range res.Written.Version { // merged in place: VectorClock hands out copies
		if n > c.clock[id] {
			c.clock[id] = n
		}
	}
	c.mu.Unlock()
}

// published counts the events a write's script call published for it: its
// put, and the expiry it found unannounced.
func (c *counters) published(op *writeOp) {
	if op.expired {
		c.events.Add(2)
	} else {
		c.events.Add(1)
	}
}
