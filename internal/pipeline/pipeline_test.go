package pipeline

// Internal tests: most take every place in flight by hand, so that calls
// queue deterministically.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/redistest"
)

// pipelineCounter is a go-redis hook that counts the pipelines that start
// with command first (not the connection's set-up), and the commands in them.
type pipelineCounter struct {
	first string
	mu    sync.Mutex
	sizes []int
}

func (*pipelineCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (*pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if cmds[0].Name() == c.first {
			c.mu.Lock()
			c.sizes = append(c.sizes, len(cmds))
			c.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

func (c *pipelineCounter) got() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.sizes...)
}

type result struct {
	i   int
	val string
	err error // Do's, or else the GET's
}

// queueGets starts n calls on g, each a GET of "pl:<i>" and an INCR of
// "pl:count", and waits until all of them are queued. g must have every
// place in flight taken.
func queueGets(t *testing.T, g *Group, rdb redis.Cmdable, ctx context.Context, n int) <-chan result {
	t.Helper()
	out := make(chan result, n)
	for i := range n {
		go func() {
			var get *redis.StringCmd
			err := g.Do(ctx, rdb, func(ctx context.Context, p redis.Pipeliner) {
				get = p.Get(ctx, fmt.Sprintf("pl:%d", i))
				p.Incr(ctx, "pl:count")
			})
			if err != nil {
				out <- result{i, "", err}
				return
			}
			val, err := get.Result()
			out <- result{i, val, err}
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		g.mu.Lock()
		queued := len(g.queue)
		g.mu.Unlock()
		if queued == n {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d calls queued", queued, n)
		}
	}
}

func TestQueuedCallsGoOutInPipelinesOfAtMostMax(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		n := DefaultMax + 5 // two pipelines: a full one and the rest
		for i := range n {
			if i%7 != 0 { // every 7th stays missing
				b.Client.Set(ctx, fmt.Sprintf("pl:%d", i), i, 0)
			}
		}
		hook := &pipelineCounter{first: "get"}
		b.Client.AddHook(hook)

		var g Group
		g.flying = DefaultDepth // every place taken by hand
		results := queueGets(t, &g, b.Client, ctx, n)
		g.next() // one place comes back: what queued goes out
		for range n {
			r := <-results
			switch {
			case r.i%7 == 0 && !errors.Is(r.err, redis.Nil):
				t.Errorf("call %d: got %q, %v; want redis.Nil", r.i, r.val, r.err)
			case r.i%7 != 0 && (r.err != nil || r.val != fmt.Sprint(r.i)):
				t.Errorf("call %d: got %q, %v; want %d", r.i, r.val, r.err, r.i)
			}
		}
		if got := hook.got(); fmt.Sprint(got) != fmt.Sprint([]int{2 * DefaultMax, 2 * 5}) {
			t.Errorf("pipelines of %v commands, want [%d %d]", got, 2*DefaultMax, 2*5)
		}
		if count, err := b.Client.Get(ctx, "pl:count").Int(); err != nil || count != n {
			t.Errorf("pl:count = %d, %v; want %d (every call's commands ran once)", count, err, n)
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.flying != DefaultDepth-1 || len(g.queue) != 0 {
			t.Errorf("after the pipelines: %d in flight, %d queued; want %d and 0", g.flying, len(g.queue), DefaultDepth-1)
		}
	})
}

func TestCallCancelledWhileQueuedSendsNothing(t *testing.T) {
	b := redistest.Mini(t)
	var g Group
	g.flying = DefaultDepth
	ctx, cancel := context.WithCancel(context.Background())
	results := queueGets(t, &g, b.Client, ctx, 3)
	cancel()
	for range 3 {
		if r := <-results; !errors.Is(r.err, context.Canceled) {
			t.Errorf("call %d: got %v, want context.Canceled", r.i, r.err)
		}
	}
	g.mu.Lock()
	queued, flying := len(g.queue), g.flying
	g.mu.Unlock()
	if queued != 0 || flying != DefaultDepth {
		t.Errorf("%d queued, %d in flight; want 0 and %d (the places were never given back)", queued, flying, DefaultDepth)
	}
	if n, err := b.Client.Exists(context.Background(), "pl:count").Result(); err != nil || n != 0 {
		t.Errorf("pl:count exists (%d, %v): a cancelled call's commands ran", n, err)
	}
}

func TestFailedPipelineFailsEveryCall(t *testing.T) {
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1})
	defer dead.Close()
	var g Group
	g.flying = DefaultDepth
	results := queueGets(t, &g, dead, context.Background(), 4)
	g.next()
	for range 4 {
		if r := <-results; r.err == nil || errors.Is(r.err, redis.Nil) {
			t.Errorf("call %d: got %v with Redis gone, want a connection error", r.i, r.err)
		}
	}
}

// TestConcurrentCallsEachGetTheirOwnReplies runs many callers at once, with
// the places in flight and pipelines small so that they queue and share
// pipelines, and checks that every caller reads its own replies and that
// every command ran exactly once.
func TestConcurrentCallsEachGetTheirOwnReplies(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		hook := &pipelineCounter{first: "incr"}
		b.Client.AddHook(hook)
		g := Group{Depth: 1, Max: 4}
		const workers, each = 16, 50
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					key := fmt.Sprintf("pl:w%d", w)
					var incr *redis.IntCmd
					var echo *redis.StringCmd
					err := g.Do(ctx, b.Client, func(ctx context.Context, p redis.Pipeliner) {
						incr = p.Incr(ctx, key)
						echo = p.Echo(ctx, fmt.Sprintf("%d/%d", w, i))
					})
					if err != nil {
						errs <- err
						return
					}
					if n, err := incr.Result(); err != nil || n != int64(i+1) {
						errs <- fmt.Errorf("worker %d call %d: INCR got %d, %v; want %d", w, i, n, err, i+1)
					}
					if s, err := echo.Result(); err != nil || s != fmt.Sprintf("%d/%d", w, i) {
						errs <- fmt.Errorf("worker %d call %d: ECHO got %q, %v", w, i, s, err)
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		shared := 0
		for _, n := range hook.got() {
			if n > 2*4 {
				t.Errorf("a pipeline of %d commands: more than Max calls", n)
			}
			if n > 2 {
				shared++
			}
		}
		if shared == 0 {
			t.Error("no pipeline carried more than one call: the test did not exercise sharing")
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.flying != 0 || len(g.queue) != 0 {
			t.Errorf("idle group: %d in flight, %d queued; want 0 and 0", g.flying, len(g.queue))
		}
	})
}
