// Package cache is memsync's per-instance read cache: an LRU of resolved
// entries in front of the store, kept coherent by the change events of every
// instance (it is a watch.Listener).
//
// Coherence rests on three rules:
//
//   - Every invalidation bumps a generation counter (per stripe of keys) and
//     a fill stores what it read only if the generation it saw before
//     reading Redis is unchanged, so a fill that raced with an invalidation
//     never leaves a stale entry behind.
//   - When the event subscription breaks (Gap), everything is dropped and
//     nothing is filled until it is back and contiguous (Connected): a cache
//     that cannot hear about changes must not serve.
//   - Entries die at their key's expiry, and after MaxAge whatever happens,
//     which bounds the damage of an event lost for good.
package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/memsync/memsync/internal/glob"
	"github.com/memsync/memsync/internal/store"
)

// Defaults of Options.
const (
	// DefaultSize is the number of entries an instance caches.
	DefaultSize = 1000
	// DefaultMaxAge bounds how long an entry is served without being read
	// again. Events are published after the write they announce, in a
	// separate step: a writer that crashes in between leaves every other
	// instance's copy stale until something else invalidates it. This is
	// the most that can last.
	DefaultMaxAge = 30 * time.Second
)

// stripes is the number of generation counters: enough that unrelated keys
// rarely share one (a shared one only costs a skipped fill).
const stripes = 1024

// Backend is the store the cache reads through and writes to.
type Backend interface {
	Get(ctx context.Context, ns, key string, opt store.GetOptions) (store.Entry, error)
	Put(ctx context.Context, ns, key string, req store.PutRequest) (store.PutResult, error)
	Delete(ctx context.Context, ns, key string, req store.DeleteRequest) (store.DeleteResult, error)
	GetMany(ctx context.Context, ns string, keys []string, opt store.GetOptions) ([]store.Entry, error)
	List(ctx context.Context, ns, prefix, cursor string, limit int) ([]string, string, error)
	DeletePrefix(ctx context.Context, ns, prefix string) (int, error)
	Ping(ctx context.Context) error
	Batch(ctx context.Context, ops []store.BatchOp, atomic bool) ([]store.BatchResult, error)
	CheckOp(op store.BatchOp) error
	// Publish announces an event to every instance (used for
	// invalidate-by-pattern).
	Publish(ctx context.Context, ev *store.Event) error
}

// Options tune a Cache.
type Options struct {
	// Size is the number of entries kept; 0 or less disables caching
	// (every read goes to the backend). cmd/server defaults it to
	// DefaultSize.
	Size int
	// MaxAge is the longest an entry is served (DefaultMaxAge).
	MaxAge time.Duration
	// Now is the clock for expiries; nil means time.Now.
	Now func() time.Time
}

// Cache serves Get from memory and passes everything else to the backend.
// Local writes invalidate their key; so do the events it hears as a
// watch.Listener, from every instance. It is safe for concurrent use.
//
// Entries returned by Get, and renderings returned by GetRendered, may be
// shared with other readers: they must not be modified.
type Cache struct {
	b    Backend
	lru  *lru.Cache[cacheKey, *item] // nil when disabled
	size int
	opts Options
	seed maphash.Seed

	// mu guards epoch and connected. Fills hold it for reading while they
	// check and store; whatever drops many entries at once (Gap, a pattern)
	// holds it for writing, so no fill slips in between.
	mu        sync.RWMutex
	epoch     uint64
	connected bool
	gens      [stripes]stripe

	hits, misses, evictions, invalidations atomic.Uint64
}

// stripe is one generation counter; mu makes "bump and remove" and "check
// and store" atomic with respect to each other.
type stripe struct {
	mu  sync.Mutex
	gen uint64
}

type cacheKey struct{ ns, key string }

type item struct {
	entry    store.Entry
	filledAt time.Time
	rendered atomic.Pointer[rendering] // GetRendered's, nil until rendered
}

// rendering boxes what GetRendered's render returned.
type rendering struct{ v any }

// New returns a cache over b. It serves nothing until it hears Connected:
// register it with the hub (hub.Listen).
func New(b Backend, opts Options) (*Cache, error) {
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Cache{b: b, opts: opts, seed: maphash.MakeSeed()}
	if opts.Size > 0 {
		l, err := lru.New[cacheKey, *item](opts.Size)
		if err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
		c.lru, c.size = l, opts.Size
	}
	return c, nil
}

// Get returns the entry of key, from memory when it can. Reads with
// opt.Consistent go to the backend (and refresh the cache); reads with a
// Resolve override go to the backend and are not cached, since the cache
// holds each key's entry as its own strategy resolves it.
func (c *Cache) Get(ctx context.Context, ns, key string, opt store.GetOptions) (store.Entry, error) {
	e, _, err := c.get(ctx, ns, key, opt, nil)
	return e, err
}

// GetRendered is Get for a caller that serves every entry in a form it
// derives from the entry alone, such as internal/http's response body: the
// rendering is kept with the cached entry, so a hit serves it as it is
// instead of deriving it again. render runs once per fill (or once per
// hit of an entry that Get filled) and also for reads the cache does not
// keep; it may return nil, which is then not kept.
//
// Renderings are kept per entry, not per render function: every caller of
// one Cache must pass the same function, or one that renders the same
// thing.
func (c *Cache) GetRendered(ctx context.Context, ns, key string, opt store.GetOptions, render func(store.Entry) any) (store.Entry, any, error) {
	return c.get(ctx, ns, key, opt, render)
}

func (c *Cache) get(ctx context.Context, ns, key string, opt store.GetOptions, render func(store.Entry) any) (store.Entry, any, error) {
	if c.lru == nil || opt.Resolve != "" {
		e, err := c.b.Get(ctx, ns, key, opt)
		if err != nil || render == nil {
			return e, nil, err
		}
		return e, render(e), nil
	}
	k := cacheKey{ns, key}
	if !opt.Consistent {
		if it, ok := c.lru.Get(k); ok && c.fresh(it) {
			c.hits.Add(1)
			if render == nil {
				return it.entry, nil, nil
			}
			if r := it.rendered.Load(); r != nil {
				return it.entry, r.v, nil
			}
			v := render(it.entry)
			if v != nil {
				it.rendered.Store(&rendering{v}) // a racing hit stores the same
			}
			return it.entry, v, nil
		}
		c.misses.Add(1)
	}
	s := c.stripe(k)
	c.mu.RLock()
	epoch, connected := c.epoch, c.connected
	c.mu.RUnlock()
	s.mu.Lock()
	gen := s.gen
	s.mu.Unlock()

	read := c.opts.Now() // the entry is as fresh as this, not as its arrival
	e, err := c.b.Get(ctx, ns, key, opt)
	if err != nil {
		return e, nil, err
	}
	var v any
	if render != nil {
		v = render(e)
	}
	if connected {
		it := &item{entry: e, filledAt: read}
		if v != nil {
			it.rendered.Store(&rendering{v})
		}
		c.fill(k, s, gen, epoch, it)
	}
	return e, v, nil
}

// fill stores it unless its key was invalidated since gen and epoch were
// read, before the backend was.
func (c *Cache) fill(k cacheKey, s *stripe, gen, epoch uint64, it *item) {
	if !c.fresh(it) {
		return
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen || c.epoch != epoch || !c.connected {
		return
	}
	if c.lru.Add(k, it) {
		c.evictions.Add(1)
	}
}

// fresh reports whether a cached item may still be served.
func (c *Cache) fresh(it *item) bool {
	now := c.opts.Now()
	if it.entry.ExpiresAt != 0 && now.UnixMilli() >= it.entry.ExpiresAt {
		return false
	}
	return now.Sub(it.filledAt) < c.opts.MaxAge
}

// Put writes through to the backend, then drops the key, whatever the
// outcome: a write that failed late (a timeout) may still have happened.
func (c *Cache) Put(ctx context.Context, ns, key string, req store.PutRequest) (store.PutResult, error) {
	res, err := c.b.Put(ctx, ns, key, req)
	c.Invalidate(ns, key)
	return res, err
}

// Delete deletes through to the backend, then drops the key.
func (c *Cache) Delete(ctx context.Context, ns, key string, req store.DeleteRequest) (store.DeleteResult, error) {
	res, err := c.b.Delete(ctx, ns, key, req)
	c.Invalidate(ns, key)
	return res, err
}

// Batch runs ops on the backend, then drops the key of every put and
// delete among them, whatever the outcome. Gets in a batch always read
// Redis: a batch is one pipeline either way.
func (c *Cache) Batch(ctx context.Context, ops []store.BatchOp, atomic bool) ([]store.BatchResult, error) {
	res, err := c.b.Batch(ctx, ops, atomic)
	for _, op := range ops {
		if op.Kind != store.OpGet {
			c.Invalidate(op.Namespace, op.Key)
		}
	}
	return res, err
}

// CheckOp validates a batch operation (the async queue checks writes
// before accepting them).
func (c *Cache) CheckOp(op store.BatchOp) error { return c.b.CheckOp(op) }

// GetMany reads through to the backend.
func (c *Cache) GetMany(ctx context.Context, ns string, keys []string, opt store.GetOptions) ([]store.Entry, error) {
	return c.b.GetMany(ctx, ns, keys, opt)
}

// List reads through to the backend.
func (c *Cache) List(ctx context.Context, ns, prefix, cursor string, limit int) ([]string, string, error) {
	return c.b.List(ctx, ns, prefix, cursor, limit)
}

// DeletePrefix deletes the keys under prefix on the backend, then drops
// them from this instance's cache, whatever the outcome: some may be gone.
func (c *Cache) DeletePrefix(ctx context.Context, ns, prefix string) (int, error) {
	n, err := c.b.DeletePrefix(ctx, ns, prefix)
	c.drop(ns, func(key string) bool { return strings.HasPrefix(key, prefix) })
	return n, err
}

// Ping pings the backend.
func (c *Cache) Ping(ctx context.Context) error { return c.b.Ping(ctx) }

// Invalidate drops key from this instance's cache, and makes any fill of it
// in flight discard what it read.
func (c *Cache) Invalidate(ns, key string) {
	if c.lru == nil {
		return
	}
	k := cacheKey{ns, key}
	s := c.stripe(k)
	s.mu.Lock()
	s.gen++
	present := c.lru.Remove(k)
	s.mu.Unlock()
	if present {
		c.invalidations.Add(1)
	}
}

// InvalidatePattern drops the keys of ns that match p from this instance's
// cache and publishes an invalidate event, so that every instance does the
// same. It returns the number of entries dropped here, and the backend's
// error if the event could not be published.
func (c *Cache) InvalidatePattern(ctx context.Context, ns string, p *glob.Pattern) (int, error) {
	n := c.dropMatching(ns, p)
	value, err := json.Marshal(invalidation{Pattern: p.String()})
	if err != nil {
		return n, fmt.Errorf("cache: invalidate %q: %w", p, err)
	}
	ev := store.Event{Type: store.EventInvalidate, Namespace: ns, Timestamp: c.opts.Now().UnixMilli(), Value: value}
	if err := c.b.Publish(ctx, &ev); err != nil {
		return n, err
	}
	return n, nil
}

// invalidation is the value of an EventInvalidate.
type invalidation struct {
	Pattern string `json:"pattern"`
}

// dropMatching drops every entry of ns whose key matches p, and every fill
// in flight (they may be of a matching key).
func (c *Cache) dropMatching(ns string, p *glob.Pattern) int { return c.drop(ns, p.Match) }

// drop drops every entry of ns whose key match accepts, and every fill in
// flight.
func (c *Cache) drop(ns string, match func(key string) bool) int {
	if c.lru == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	n := 0
	for _, k := range c.lru.Keys() {
		if k.ns == ns && match(k.key) && c.lru.Remove(k) {
			n++
		}
	}
	c.invalidations.Add(uint64(n))
	return n
}

// Event implements watch.Listener: a change drops its key; an invalidate
// event drops the keys matching its pattern.
func (c *Cache) Event(ev store.Event) {
	if ev.Type != store.EventInvalidate {
		c.Invalidate(ev.Namespace, ev.Key)
		return
	}
	var inv invalidation
	var p *glob.Pattern
	err := json.Unmarshal(ev.Value, &inv)
	if err == nil {
		p, err = glob.Compile(inv.Pattern)
	}
	if err != nil {
		// Not a pattern this version understands: dropping everything is
		// always safe.
		c.Gap()
		c.Connected()
		return
	}
	c.dropMatching(ev.Namespace, p)
}

// Gap implements watch.Listener: events may have been missed, so nothing
// cached can be trusted, and nothing is cached until Connected.
func (c *Cache) Gap() {
	if c.lru == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.connected = false
	c.invalidations.Add(uint64(c.lru.Len()))
	c.lru.Purge()
}

// Connected implements watch.Listener: every change is heard again.
func (c *Cache) Connected() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.connected = true
}

// Stats are the cache's counters.
type Stats struct {
	Hits, Misses uint64
	// Evictions counts entries pushed out by the size limit;
	// Invalidations those dropped because they may have changed.
	Evictions, Invalidations uint64
	Entries, MaxEntries      int
}

// Stats returns the cache's counters.
func (c *Cache) Stats() Stats {
	st := Stats{Hits: c.hits.Load(), Misses: c.misses.Load(), Evictions: c.evictions.Load(),
		Invalidations: c.invalidations.Load(), MaxEntries: c.size}
	if c.lru != nil {
		st.Entries = c.lru.Len()
	}
	return st
}

func (c *Cache) stripe(k cacheKey) *stripe {
	return &c.gens[maphash.Comparable(c.seed, k)%stripes]
}
