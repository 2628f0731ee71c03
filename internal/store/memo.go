package store

import (
	"sync"
	"time"
)

// memoTTL is how long a remembered index score is trusted: after that the
// next write raises it again, which repairs an index Redis lost (a restart
// without persistence) within this long of the next write. Tidy's removal
// of marked entries relies on it being far below tidyMargin. A variable
// for tests, which shrink both.
var memoTTL = 5 * time.Second

// memoMax bounds indexMemo; past it the memo starts afresh.
const memoMax = 1 << 16

// indexMemo remembers the scores this instance recently raised the roots
// and children indexes to. Their members' scores only ever rise (ZADD GT)
// and Tidy removes none whose score is in the future, so a write whose
// expiry is no later than a score raised within memoTTL can skip the ZADD:
// it would change nothing. A delete on a single Redis does remove the
// members of a subtree it empties; the write that creates a key there next
// raises them again in its own script (ensureParents), memo or not.
type indexMemo struct {
	mu sync.Mutex
	m  map[string]memoEntry
}

type memoEntry struct {
	score float64
	at    time.Time
}

// covers reports whether index member name is known to score at least
// score.
func (m *indexMemo) covers(name string, score float64, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.m[name]
	return ok && e.score >= score && now.Sub(e.at) < memoTTL
}

// raised records that member name was raised to at least score.
func (m *indexMemo) raised(name string, score float64, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil || len(m.m) >= memoMax {
		m.m = make(map[string]memoEntry)
	}
	if e, ok := m.m[name]; ok && e.score > score && now.Sub(e.at) < memoTTL {
		return
	}
	m.m[name] = memoEntry{score: score, at: now}
}
