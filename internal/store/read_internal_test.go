package store

// Internal tests of the read coalescer: they take every place in flight by
// hand, so that reads queue deterministically.

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

// pipelineCounter is a go-redis hook that counts pipelines and the
// commands in them.
type pipelineCounter struct {
	mu    sync.Mutex
	sizes []int
}

func (*pipelineCounter) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (*pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if cmds[0].Name() == "hgetall" { // not the connection's set-up
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

type readResult struct {
	i      int
	fields map[string]string
	err    error
}

// queueReads starts n reads of hashes "rg:<i>" on g, which must have every
// place in flight taken, and waits until all of them are queued.
func queueReads(t *testing.T, g *readGroup, rdb redis.UniversalClient, ctx context.Context, n int) <-chan readResult {
	t.Helper()
	out := make(chan readResult, n)
	for i := range n {
		go func() {
			f, err := g.hgetall(ctx, rdb, fmt.Sprintf("rg:%d", i))
			out <- readResult{i, f, err}
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
			t.Fatalf("%d of %d reads queued", queued, n)
		}
	}
}

func TestReadGroupSendsWhatQueuedInPipelines(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		n := maxReadBatch + 5 // two pipelines: a full one and the rest
		for i := range n {
			if i%7 != 0 { // every 7th stays missing: an empty hash
				b.Client.HSet(ctx, fmt.Sprintf("rg:%d", i), "v", i)
			}
		}
		hook := &pipelineCounter{}
		b.Client.AddHook(hook)

		var g readGroup
		g.flying = readPipelines // every place taken by hand
		results := queueReads(t, &g, b.Client, ctx, n)
		g.next() // one place comes back: what queued goes out
		for range n {
			r := <-results
			if r.err != nil {
				t.Fatalf("read %d: %v", r.i, r.err)
			}
			want := map[string]string{"v": fmt.Sprint(r.i)}
			if r.i%7 == 0 {
				want = map[string]string{}
			}
			if fmt.Sprint(r.fields) != fmt.Sprint(want) {
				t.Errorf("read %d: got %v, want %v", r.i, r.fields, want)
			}
		}
		if got := hook.got(); fmt.Sprint(got) != fmt.Sprint([]int{maxReadBatch, 5}) {
			t.Errorf("pipelines of %v, want [%d 5]", got, maxReadBatch)
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.flying != readPipelines-1 || len(g.queue) != 0 {
			t.Errorf("after the pipelines: %d in flight, %d queued; want %d and 0", g.flying, len(g.queue), readPipelines-1)
		}
	})
}

func TestReadGroupCancelledWhileQueued(t *testing.T) {
	b := redistest.Mini(t)
	var g readGroup
	g.flying = readPipelines
	ctx, cancel := context.WithCancel(context.Background())
	results := queueReads(t, &g, b.Client, ctx, 3)
	cancel()
	for range 3 {
		if r := <-results; !errors.Is(r.err, context.Canceled) {
			t.Errorf("read %d: got %v, want context.Canceled", r.i, r.err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.queue) != 0 || g.flying != readPipelines {
		t.Errorf("%d queued, %d in flight; want 0 and %d (the places were never given back)", len(g.queue), g.flying, readPipelines)
	}
}

func TestReadGroupPipelineFailsEveryRead(t *testing.T) {
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1})
	defer dead.Close()
	var g readGroup
	g.flying = readPipelines
	results := queueReads(t, &g, dead, context.Background(), 4)
	g.next()
	for range 4 {
		if r := <-results; r.err == nil {
			t.Errorf("read %d: no error with Redis gone", r.i)
		}
	}
}
