package metrics_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/memsync/memsync/internal/metrics"
)

func sources() metrics.Sources {
	return metrics.Sources{
		Store: func() metrics.StoreStats {
			return metrics.StoreStats{Reads: 10, Writes: 8, Commits: 3, EventsPublished: 8, RedisErrors: 1, Tidied: 6, Replayed: 4, ReplayedDeletes: 2,
				Conflicts: map[string]uint64{"lww": 1, "merge": 1}}
		},
		Locks: func() metrics.LockStats {
			return metrics.LockStats{Grants: 5, Contended: 2, Replayed: 1, Permits: 7, Full: 3, PermitsReplayed: 8}
		},
		Cache: func() metrics.CacheStats {
			return metrics.CacheStats{Hits: 30, Misses: 10, Evictions: 1, Invalidations: 4, Entries: 7, MaxEntries: 1000}
		},
		Watch: func() metrics.WatchStats {
			return metrics.WatchStats{Watchers: 2, EventsDelivered: 16, SubscriptionUp: true}
		},
		Async:  func() metrics.AsyncStats { return metrics.AsyncStats{Pending: 3, Flushes: 2} },
		Reaped: func() uint64 { return 9 },
		Queues: func() metrics.QueueStats {
			return metrics.QueueStats{Enqueued: 11, Claimed: 12, Redelivered: 2, Acked: 10, Expired: 4, Dead: 1, Redriven: 1, Replayed: 5}
		},
		Counters:      func() metrics.CounterStats { return metrics.CounterStats{Added: 13, Replayed: 6} },
		Barriers:      func() metrics.BarrierStats { return metrics.BarrierStats{Arrivals: 14, Trips: 3} },
		VectorClock:   func() map[string]uint64 { return map[string]uint64{"w1": 4} },
		ActiveWorkers: func(context.Context) (int, error) { return 2, nil },
	}
}

func TestExpositionPassesLint(t *testing.T) {
	m := metrics.New(sources())
	m.ObserveRequest("/v1/kv/*", "GET", 200, 3*time.Millisecond)
	m.ObserveRequest("", "GET", 404, time.Millisecond)
	m.ObserveCommit(12)
	m.ObserveLockWait(40*time.Millisecond, true)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`memsync_http_requests_total{code="200",method="GET",route="/v1/kv/*"} 1`,
		`memsync_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`memsync_conflicts_total{strategy="merge"} 1`,
		`memsync_batch_flushes_total{kind="async"} 2`,
		`memsync_batch_flushes_total{kind="group_commit"} 3`,
		`memsync_cache_hits_total 30`,
		`memsync_index_entries_tidied_total 6`,
		`memsync_idempotent_replays_total{kind="put"} 4`,
		`memsync_idempotent_replays_total{kind="delete"} 2`,
		`memsync_idempotent_replays_total{kind="lock"} 1`,
		`memsync_pending_async_writes 3`,
		`memsync_lock_grants_total 5`,
		`memsync_semaphore_permits_total 7`,
		`memsync_ephemeral_keys_reaped_total 9`,
		`memsync_queue_messages_total{event="redelivered"} 2`,
		`memsync_queue_messages_total{event="acked"} 10`,
		`memsync_queue_messages_total{event="dead"} 1`,
		`memsync_queue_messages_total{event="expired"} 4`,
		`memsync_idempotent_replays_total{kind="enqueue"} 5`,
		`memsync_increments_total 13`,
		`memsync_barrier_arrivals_total 14`,
		`memsync_barrier_trips_total 3`,
		`memsync_idempotent_replays_total{kind="counter"} 6`,
		`memsync_semaphore_contention_total 3`,
		`memsync_idempotent_replays_total{kind="permit"} 8`,
		`memsync_active_workers 2`,
		`memsync_event_subscription_up 1`,
		`memsync_batch_size_count 1`,
		`memsync_lock_wait_seconds_count 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestSnapshotHasTheSeedsShape(t *testing.T) {
	b, err := json.Marshal(metrics.New(sources()).Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	// Every field of the design document's getMetrics() example, plus the two rates.
	for _, k := range []string{"reads", "writes", "conflicts", "cacheHits", "cacheMisses", "syncs", "cache",
		"pendingWrites", "subscriptions", "vectorClock", "hitRate", "conflictRate"} {
		if _, ok := got[k]; !ok {
			t.Errorf("stats lack %q: %s", k, b)
		}
	}
	cache := got["cache"].(map[string]any)
	for _, k := range []string{"size", "maxSize", "invalidated"} {
		if _, ok := cache[k]; !ok {
			t.Errorf("stats.cache lacks %q", k)
		}
	}
	if got["hitRate"] != 0.75 || got["conflictRate"] != 0.25 || got["reads"] != float64(40) || got["syncs"] != float64(5) {
		t.Errorf("derived stats wrong: %s", b)
	}
}

func TestMissingSourcesAreLeftOut(t *testing.T) {
	m := metrics.New(metrics.Sources{})
	if problems, err := testutil.GatherAndLint(m.Registry()); err != nil || len(problems) > 0 {
		t.Fatalf("lint with no sources: %v %v", problems, err)
	}
	if st := m.Snapshot(); st.Reads != 0 || st.VectorClock == nil {
		t.Errorf("empty snapshot = %+v", st)
	}
}

// ObserveRequest remembers the series it resolved, up to a bound; past it
// (made-up methods) every request is still counted.
func TestObserveRequestPastTheRememberedSeries(t *testing.T) {
	m := metrics.New(sources())
	const methods = 1100
	for round := range 2 {
		for i := range methods {
			m.ObserveRequest("/v1/kv/*", "M"+strconv.Itoa(i), 200+round, time.Millisecond)
		}
	}
	if n := testutil.CollectAndCount(m.Registry(), "memsync_http_requests_total"); n != 2*methods {
		t.Errorf("%d request series, want %d", n, 2*methods)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`memsync_http_requests_total{code="200",method="M0",route="/v1/kv/*"} 1`,
		`memsync_http_requests_total{code="201",method="M1099",route="/v1/kv/*"} 1`,
		`memsync_http_request_duration_seconds_count{method="M1099",route="/v1/kv/*"} 2`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
