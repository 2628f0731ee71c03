package http_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/testserver"
)

// plain talks to a server without the spec validator, whose work would
// distort the timings.
type plain struct {
	t      *testing.T
	client *http.Client
}

func newPlain(t *testing.T) *plain {
	return &plain{t: t, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
}

// value GETs url and returns the entry's value as JSON text ("" for 404).
func (p *plain) value(url string) string {
	res, err := p.client.Get(url)
	if err != nil {
		p.t.Errorf("GET %s: %v", url, err)
		return ""
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode == 404 {
		return ""
	}
	var e struct {
		Value json.RawMessage `json:"value"`
	}
	if res.StatusCode != 200 || json.Unmarshal(body, &e) != nil {
		p.t.Errorf("GET %s = %d %s", url, res.StatusCode, body)
	}
	return string(e.Value)
}

func (p *plain) put(url, value string) {
	req, _ := http.NewRequest("PUT", url, strings.NewReader(`{"value":`+value+`}`))
	res, err := p.client.Do(req)
	if err != nil {
		p.t.Errorf("PUT %s: %v", url, err)
		return
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		body, _ := io.ReadAll(res.Body)
		p.t.Errorf("PUT %s = %d %s", url, res.StatusCode, body)
	}
}

// in returns h for use by the subtest t.
func (h *harness) in(t *testing.T) *harness {
	c := *h
	c.t = t
	return &c
}

// gapCounter is a hub listener that counts subscription breaks.
type gapCounter struct{ gaps atomic.Int64 }

func (g *gapCounter) Event(store.Event) {}
func (g *gapCounter) Gap()              { g.gaps.Add(1) }
func (g *gapCounter) Connected()        {}

// TestTwoInstancesOnOneRedis is the propagation contract end to end: two
// memsync instances share one real Redis, as behind a load balancer.
func TestTwoInstancesOnOneRedis(t *testing.T) {
	b := redistest.Real(t)
	a := newServerHarness(t, testserver.Options{Backend: &b})
	bb := newServerHarness(t, testserver.Options{Backend: &b})
	p := crossInstanceChecks(t, a, bb)

	t.Run("no stale read after CLIENT KILL TYPE pubsub while writes go on", func(t *testing.T) {
		const keys = 50
		gaps := &gapCounter{}
		defer bb.srv.Hub.Listen(gaps)()
		var stop atomic.Bool
		var wg sync.WaitGroup
		var written atomic.Int64
		for g := range 4 {
			wg.Go(func() { // writers on A
				for i := 0; !stop.Load(); i++ {
					p.put(fmt.Sprintf("%s/v1/kv/kill/k%d", a.url, (g*31+i)%keys), strconv.Itoa(g*1_000_000+i))
					written.Add(1)
				}
			})
			wg.Go(func() { // readers on B keep its cache full
				for i := 0; !stop.Load(); i++ {
					p.value(fmt.Sprintf("%s/v1/kv/kill/k%d", bb.url, (g*17+i)%keys))
				}
			})
		}
		ctx := context.Background()
		waitUp := func() {
			for deadline := time.Now().Add(5 * time.Second); !bb.srv.Hub.Stats().Connected; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("B did not resubscribe within 5 s")
				}
			}
		}
		for range 5 {
			time.Sleep(80 * time.Millisecond)
			waitUp()
			// Every subscription: both hubs, and both lockers' too.
			if n, err := b.Client.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil || n < 2 {
				t.Fatalf("CLIENT KILL TYPE pubsub: %d killed, %v", n, err)
			}
		}
		time.Sleep(80 * time.Millisecond)
		stop.Store(true)
		wg.Wait()

		// Wait until B is subscribed again and has heard the last write.
		newest, err := bb.srv.Store.LastEventID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for st := bb.srv.Hub.Stats(); !st.Connected || st.LastID < newest; st = bb.srv.Hub.Stats() {
			if time.Now().After(deadline) {
				t.Fatalf("B's hub %+v has not caught up with event %d", st, newest)
			}
			time.Sleep(5 * time.Millisecond)
		}
		stale := 0
		for k := range keys {
			url := fmt.Sprintf("%s/v1/kv/kill/k%d", bb.url, k)
			if got, want := p.value(url), p.value(url+"?consistent=true"); got != want {
				stale++
				t.Errorf("B serves %s for kill/k%d, Redis has %s", got, k, want)
			}
		}
		if n := gaps.gaps.Load(); n < 5 {
			t.Errorf("B's hub heard %d breaks, want 5", n)
		}
		t.Logf("%d writes on A, 5 kills of every subscription, %d gaps on B, %d stale keys on B afterwards; B's cache: %+v",
			written.Load(), gaps.gaps.Load(), stale, bb.srv.Cache.Stats())
	})
}

// crossInstanceChecks runs the checks of two instances A and B on one
// Redis (or Cluster) as subtests, and returns the plain client they used.
func crossInstanceChecks(t *testing.T, a, bb *harness) *plain {
	p := newPlain(t)
	// Subtests fail through their own t.
	t.Cleanup(func() { p.t = t })
	t.Run("a write on A reaches B's watchers and B's cached reads", func(t *testing.T) {
		crossInstanceReads(t, a, bb, p)
	})
	t.Run("a watcher that reconnects with Last-Event-ID misses nothing", func(t *testing.T) {
		crossInstanceResume(t, a, bb, p)
	})
	return p
}

// crossInstanceReads writes through A and checks that B's watcher hears
// every write in order and that B's cached reads follow; it logs the time
// from A's acknowledgement to B serving the new value.
func crossInstanceReads(t *testing.T, a, bb *harness, p *plain) {
	const keys, writes = 20, 500
	bb = bb.in(t)
	w := bb.watch("/v1/watch?pattern=lat/*")
	for k := range keys {
		p.put(fmt.Sprintf("%s/v1/kv/lat/k%d", a.url, k), "-1")
	}
	for range keys {
		w.nextChange()
	}
	hits := bb.srv.Cache.Stats().Hits
	lat := make([]time.Duration, 0, writes)
	for i := range writes {
		key := fmt.Sprintf("/v1/kv/lat/k%d", i%keys)
		// B holds the current value in its cache...
		p.value(bb.url + key)
		prev := p.value(bb.url + key)
		// ...A overwrites it; how long until B serves the new one?
		p.put(a.url+key, strconv.Itoa(i))
		acked := time.Now()
		for got := prev; got != strconv.Itoa(i); got = p.value(bb.url + key) {
			if time.Since(acked) > 5*time.Second {
				t.Fatalf("write %d: B still serves %s 5 s after A acknowledged", i, got)
			}
		}
		lat = append(lat, time.Since(acked))
	}
	if got := bb.srv.Cache.Stats().Hits - hits; got < writes {
		t.Errorf("B served %d reads from its cache, want at least %d: the test measured no cache", got, writes)
	}
	for i := range writes {
		c := w.nextChange()
		if string(c.Value) != strconv.Itoa(i) || c.Key != fmt.Sprintf("lat/k%d", i%keys) {
			t.Fatalf("B's watcher: event %d = %+v", i, c)
		}
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("A's acknowledgement → B serves the new value, over %d writes: p50 %s, p99 %s, max %s (target p99 ≤ 50ms)",
		writes, p50.Round(time.Microsecond), p99.Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
}

// crossInstanceResume checks that a watcher on B that reconnects with
// Last-Event-ID while A keeps writing gets every missed event once, in order.
func crossInstanceResume(t *testing.T, a, bb *harness, p *plain) {
	bb = bb.in(t)
	w := bb.watch("/v1/watch?pattern=resume/**")
	p.put(a.url+"/v1/kv/resume/k", "0")
	last := w.nextChange()
	w.cancel()
	var wg sync.WaitGroup
	wg.Go(func() { // writes go on while the watcher is away and while it reconnects
		for i := 1; i <= 200; i++ {
			p.put(fmt.Sprintf("%s/v1/kv/resume/k%d", a.url, i%3), strconv.Itoa(i))
			if i == 100 {
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	time.Sleep(30 * time.Millisecond)
	r := bb.watch("/v1/watch?pattern=resume/**", "Last-Event-ID", strconv.FormatUint(last.ID, 10))
	wg.Wait()
	prev := last.ID
	for i := 1; i <= 200; i++ {
		c := r.nextChange()
		if c.ID <= prev || string(c.Value) != strconv.Itoa(i) {
			t.Fatalf("resumed event %d = %+v (previous id %d): want value %d, in order, once", i, c, prev, i)
		}
		prev = c.ID
	}
}

// The same two checks with both instances on a Redis Cluster of three
// masters: events cross nodes by the cluster's pub/sub, and the log and the
// caches work as on one Redis.
func TestTwoInstancesOnACluster(t *testing.T) {
	nodes := redistest.StartCluster(t, 3)
	instance := func() *harness {
		c := redistest.ClusterClient(t, nodes)
		b := redistest.Backend{Name: "cluster", Client: nodes[0].Client(t), Real: nodes[0]}
		return newServerHarness(t, testserver.Options{Backend: &b, Redis: c})
	}
	crossInstanceChecks(t, instance(), instance())
}
