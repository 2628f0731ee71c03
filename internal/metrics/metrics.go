// Package metrics exposes memsync's Prometheus metrics from a private
// registry, and the seed's getMetrics() snapshot for /v1/stats.
//
// The collectors read plain snapshots (Sources) at scrape time; sources.go
// adapts each component to them. The few per-event observations (request
// latency, pipeline sizes, lock waits) come in through the Observe methods,
// which cmd/server hooks into the components.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// StoreStats are the store's counters.
type StoreStats struct {
	Reads, Writes, Commits, EventsPublished, RedisErrors, Tidied, Replayed, ReplayedDeletes uint64
	Conflicts                                                                               map[string]uint64 // by strategy
}

// LockStats are the locker's counters.
type LockStats struct {
	Grants, Contended, Replayed    uint64
	Permits, Full, PermitsReplayed uint64 // the semaphores'
}

// QueueStats are the work queues' counters.
type QueueStats struct {
	Enqueued, Claimed, Redelivered, Acked, Expired, Dead, Redriven uint64
	Replayed                                                       uint64 // enqueues answered by their Idempotency-Key
}

// CounterStats are the counters' counts.
type CounterStats struct {
	Added    uint64 // increments applied
	Replayed uint64 // increments answered by their Idempotency-Key
}

// BarrierStats are the barriers' counts.
type BarrierStats struct {
	Arrivals uint64 // parties counted in (or told their generation passed)
	Trips    uint64 // arrivals that tripped their barrier
}

// CacheStats are the read cache's counters and size.
type CacheStats struct {
	Hits, Misses, Evictions, Invalidations uint64
	Entries, MaxEntries                    int
}

// WatchStats are the event hub's counters.
type WatchStats struct {
	Watchers                 int
	EventsDelivered, Dropped uint64
	SubscriptionUp           bool
}

// AsyncStats are the async write queue's counters.
type AsyncStats struct {
	Pending int
	Flushes uint64
}

// Sources are the snapshots the metrics read. A nil function means the
// component is not running; its series are left out.
type Sources struct {
	Store         func() StoreStats
	Locks         func() LockStats
	Cache         func() CacheStats
	Watch         func() WatchStats
	Async         func() AsyncStats
	Reaped        func() uint64 // keys deleted because their worker's heartbeat was gone
	Queues        func() QueueStats
	Counters      func() CounterStats
	Barriers      func() BarrierStats
	VectorClock   func() map[string]uint64
	ActiveWorkers func(context.Context) (int, error)
}

// Metrics holds the registry and the observed series.
type Metrics struct {
	reg       *prometheus.Registry
	src       Sources
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	batchSize prometheus.Histogram
	lockWait  prometheus.Histogram

	// observers caches the resolved request series by requestKey.
	observers  sync.Map
	nObservers atomic.Int64
}

// New returns metrics over src on a private registry, with the Go runtime
// and process collectors.
func New(src Sources) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		src: src,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "memsync_http_requests_total", Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "memsync_http_request_duration_seconds", Help: "HTTP request latency by route pattern and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"route", "method"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "memsync_batch_size", Help: "Writes per Redis pipeline sent by the group committer.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		lockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "memsync_lock_wait_seconds", Help: "Time from a lock request to its grant or refusal.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60},
		}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.batchSize, m.lockWait, snapshotCollector{m},
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the private registry, for tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveRequest records one finished HTTP request.
func (m *Metrics) ObserveRequest(route, method string, status int, took time.Duration) {
	if route == "" {
		route = "unmatched" // keep unknown paths from inflating the label set
	}
	k := requestKey{route, method, status}
	o, ok := m.observers.Load(k)
	if !ok {
		o = m.resolve(k)
	}
	ro := o.(*requestObserver)
	ro.count.Inc()
	ro.latency.Observe(took.Seconds())
}

// requestKey is one combination of the request series' labels.
type requestKey struct {
	route, method string
	status        int
}

// requestObserver holds the series of one requestKey, resolved once:
// WithLabelValues hashes every label and takes the vector's lock on each
// call, a cost every request would otherwise pay.
type requestObserver struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

// maxObservers bounds the resolved series kept; past it (a client sending
// made-up methods) series are looked up on every request instead.
const maxObservers = 1024

// resolve returns k's series, remembering them while there is room.
func (m *Metrics) resolve(k requestKey) *requestObserver {
	o := &requestObserver{
		count:   m.requests.WithLabelValues(k.route, k.method, strconv.Itoa(k.status)),
		latency: m.latency.WithLabelValues(k.route, k.method),
	}
	if m.nObservers.Load() < maxObservers {
		if prev, loaded := m.observers.LoadOrStore(k, o); loaded {
			return prev.(*requestObserver)
		}
		m.nObservers.Add(1)
	}
	return o
}

// ObserveCommit records the size of one pipeline of writes.
func (m *Metrics) ObserveCommit(writes int) { m.batchSize.Observe(float64(writes)) }

// ObserveLockWait records how long one lock request took.
func (m *Metrics) ObserveLockWait(took time.Duration, _ bool) { m.lockWait.Observe(took.Seconds()) }

// desc builds the description of a snapshot series.
func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descReads         = desc("memsync_reads_total", "Keys read from Redis.")
	descWrites        = desc("memsync_writes_total", "Writes applied.")
	descConflicts     = desc("memsync_conflicts_total", "Writes that left concurrent siblings, by the key's strategy.", "strategy")
	descFlushes       = desc("memsync_batch_flushes_total", "Pipelines of writes sent to Redis (group commits and async flushes).", "kind")
	descEvents        = desc("memsync_events_published_total", "Change events published by this instance.")
	descRedisErrors   = desc("memsync_redis_errors_total", "Redis calls that failed (unreachable or an error reply).")
	descTidied        = desc("memsync_index_entries_tidied_total", "Listing index entries (namespaces, roots, children) this instance removed once nothing below them was left.")
	descReplayed      = desc("memsync_idempotent_replays_total", "Requests answered without being carried out again, because an earlier one had been under the same Idempotency-Key: puts, deletes, lock and permit acquires, enqueues, counter increments.", "kind")
	descLockGrants    = desc("memsync_lock_grants_total", "Locks granted.")
	descLockContended = desc("memsync_lock_contention_total", "Lock requests that found the lock held.")
	descPermits       = desc("memsync_semaphore_permits_total", "Semaphore permits granted.")
	descPermitsFull   = desc("memsync_semaphore_contention_total", "Permit requests that found the semaphore full.")
	descCacheHits     = desc("memsync_cache_hits_total", "Reads served from the instance cache.")
	descCacheMisses   = desc("memsync_cache_misses_total", "Cacheable reads that went to Redis.")
	descCacheEntries  = desc("memsync_cache_entries", "Entries in the instance cache.")
	descCacheEvicted  = desc("memsync_cache_evictions_total", "Entries evicted to make room.")
	descCacheInval    = desc("memsync_cache_invalidations_total", "Entries dropped because their key changed.")
	descWatchers      = desc("memsync_subscriptions_active", "Open watch streams on this instance.")
	descDelivered     = desc("memsync_events_delivered_total", "Events delivered to watchers.")
	descDropped       = desc("memsync_events_dropped_total", "Events a slow watcher missed (it was sent a reset instead).")
	descSubUp         = desc("memsync_event_subscription_up", "1 while this instance's Redis event subscription is up.")
	descPending       = desc("memsync_pending_async_writes", "Async writes queued and not yet in Redis.")
	descWorkers       = desc("memsync_active_workers", "Workers whose heartbeat is alive (default namespace).")
	descQueue         = desc("memsync_queue_messages_total", "Work queue messages this instance handled, by what it did: enqueued, claimed, redelivered (claimed again after a claim lapsed or a release), acked, expired (deleted past its TTL), dead (moved to the dead letters, having had its most attempts), redriven (given back from the dead letters).", "event")
	descCounterAdds   = desc("memsync_increments_total", "Increments this instance applied to counters (not those answered by their Idempotency-Key).")
	descBarrierArrive = desc("memsync_barrier_arrivals_total", "Parties this instance counted in at a barrier.")
	descBarrierTrips  = desc("memsync_barrier_trips_total", "Barrier generations an arrival on this instance completed.")
	descReaped        = desc("memsync_ephemeral_keys_reaped_total", "Keys bound to a heartbeat (ephemeral) that this instance deleted once the heartbeat was gone.")
)

// snapshotCollector turns the Sources into series at scrape time.
type snapshotCollector struct{ m *Metrics }

func (c snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReads, descWrites, descConflicts, descFlushes, descEvents,
		descRedisErrors, descTidied, descReplayed, descLockGrants, descLockContended, descPermits, descPermitsFull, descCacheHits, descCacheMisses, descCacheEntries,
		descCacheEvicted, descCacheInval, descWatchers, descDelivered, descDropped, descSubUp, descPending, descWorkers, descReaped, descQueue, descCounterAdds, descBarrierArrive, descBarrierTrips} {
		ch <- d
	}
}

func (c snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	src := c.m.src
	if src.Store != nil {
		s := src.Store()
		counter(descReads, s.Reads)
		counter(descWrites, s.Writes)
		for strategy, n := range s.Conflicts {
			counter(descConflicts, n, strategy)
		}
		counter(descFlushes, s.Commits, "group_commit")
		counter(descEvents, s.EventsPublished)
		counter(descRedisErrors, s.RedisErrors)
		counter(descTidied, s.Tidied)
		counter(descReplayed, s.Replayed, "put")
		counter(descReplayed, s.ReplayedDeletes, "delete")
	}
	if src.Locks != nil {
		l := src.Locks()
		counter(descLockGrants, l.Grants)
		counter(descLockContended, l.Contended)
		counter(descReplayed, l.Replayed, "lock")
		counter(descPermits, l.Permits)
		counter(descPermitsFull, l.Full)
		counter(descReplayed, l.PermitsReplayed, "permit")
	}
	if src.Cache != nil {
		s := src.Cache()
		counter(descCacheHits, s.Hits)
		counter(descCacheMisses, s.Misses)
		gauge(descCacheEntries, float64(s.Entries))
		counter(descCacheEvicted, s.Evictions)
		counter(descCacheInval, s.Invalidations)
	}
	if src.Watch != nil {
		w := src.Watch()
		gauge(descWatchers, float64(w.Watchers))
		counter(descDelivered, w.EventsDelivered)
		counter(descDropped, w.Dropped)
		up := 0.0
		if w.SubscriptionUp {
			up = 1
		}
		gauge(descSubUp, up)
	}
	if src.Async != nil {
		a := src.Async()
		gauge(descPending, float64(a.Pending))
		counter(descFlushes, a.Flushes, "async")
	}
	if src.Reaped != nil {
		counter(descReaped, src.Reaped())
	}
	if src.Queues != nil {
		q := src.Queues()
		counter(descQueue, q.Enqueued, "enqueued")
		counter(descQueue, q.Claimed, "claimed")
		counter(descQueue, q.Redelivered, "redelivered")
		counter(descQueue, q.Acked, "acked")
		counter(descQueue, q.Expired, "expired")
		counter(descQueue, q.Dead, "dead")
		counter(descQueue, q.Redriven, "redriven")
		counter(descReplayed, q.Replayed, "enqueue")
	}
	if src.Counters != nil {
		c := src.Counters()
		counter(descCounterAdds, c.Added)
		counter(descReplayed, c.Replayed, "counter")
	}
	if src.Barriers != nil {
		b := src.Barriers()
		counter(descBarrierArrive, b.Arrivals)
		counter(descBarrierTrips, b.Trips)
	}
	if src.ActiveWorkers != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if n, err := src.ActiveWorkers(ctx); err == nil {
			gauge(descWorkers, float64(n))
		}
	}
}

// Stats is the seed's getMetrics() shape, plus hitRate and conflictRate.
type Stats struct {
	Reads         uint64            `json:"reads"`
	Writes        uint64            `json:"writes"`
	Conflicts     uint64            `json:"conflicts"`
	CacheHits     uint64            `json:"cacheHits"`
	CacheMisses   uint64            `json:"cacheMisses"`
	Syncs         uint64            `json:"syncs"`
	Cache         CacheSummary      `json:"cache"`
	PendingWrites int               `json:"pendingWrites"`
	Subscriptions int               `json:"subscriptions"`
	VectorClock   map[string]uint64 `json:"vectorClock"`
	HitRate       float64           `json:"hitRate"`
	ConflictRate  float64           `json:"conflictRate"`
}

// CacheSummary is the cache part of Stats.
type CacheSummary struct {
	Size        int    `json:"size"`
	MaxSize     int    `json:"maxSize"`
	Invalidated uint64 `json:"invalidated"`
}

// Snapshot returns the Stats of this instance.
func (m *Metrics) Snapshot() Stats {
	st := Stats{VectorClock: map[string]uint64{}}
	src := m.src
	if src.Store != nil {
		s := src.Store()
		st.Reads, st.Writes, st.Syncs = s.Reads, s.Writes, s.Commits
		for _, n := range s.Conflicts {
			st.Conflicts += n
		}
	}
	if src.Cache != nil {
		c := src.Cache()
		st.CacheHits, st.CacheMisses = c.Hits, c.Misses
		st.Reads += c.Hits // a read served from the cache is a read too
		st.Cache = CacheSummary{Size: c.Entries, MaxSize: c.MaxEntries, Invalidated: c.Invalidations}
	}
	if src.Async != nil {
		a := src.Async()
		st.PendingWrites = a.Pending
		st.Syncs += a.Flushes
	}
	if src.Watch != nil {
		st.Subscriptions = src.Watch().Watchers
	}
	if src.VectorClock != nil {
		st.VectorClock = src.VectorClock()
	}
	if total := st.CacheHits + st.CacheMisses; total > 0 {
		st.HitRate = float64(st.CacheHits) / float64(total)
	}
	if st.Writes > 0 {
		st.ConflictRate = float64(st.Conflicts) / float64(st.Writes)
	}
	return st
}
