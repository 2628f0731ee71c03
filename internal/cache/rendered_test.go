package cache_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/memsync/memsync/internal/cache"
	"github.com/memsync/memsync/internal/store"
)

// renderer counts its calls and renders an entry as its value's text.
type renderer struct{ calls atomic.Int64 }

func (r *renderer) render(e store.Entry) any {
	r.calls.Add(1)
	return "rendered " + string(e.Value)
}

func rendered(t *testing.T, c *cache.Cache, r *renderer, key string, opt store.GetOptions) any {
	t.Helper()
	e, v, err := c.GetRendered(context.Background(), "ns", key, opt, r.render)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	if want := "rendered " + string(e.Value); v != want {
		t.Fatalf("get %s: rendering %v, want %q (that of the entry returned)", key, v, want)
	}
	return v
}

func TestRenderingsAreKeptWithTheirEntries(t *testing.T) {
	b := newBackend()
	b.set("ns", "k", 1)
	c := newCache(t, b, cache.Options{})
	r := &renderer{}

	for range 3 {
		rendered(t, c, r, "k", store.GetOptions{})
	}
	if n := r.calls.Load(); n != 1 {
		t.Errorf("a miss and two hits rendered %d times, want 1 (at the fill)", n)
	}

	// An entry filled by Get is rendered at its first GetRendered hit only.
	b.set("ns", "g", 1)
	value(t, c, "ns", "g")
	rendered(t, c, r, "g", store.GetOptions{})
	rendered(t, c, r, "g", store.GetOptions{})
	if n := r.calls.Load(); n != 2 {
		t.Errorf("renders = %d, want 2", n)
	}

	// A change drops the rendering with the entry.
	if _, err := c.Put(context.Background(), "ns", "k", store.PutRequest{Value: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if v := rendered(t, c, r, "k", store.GetOptions{}); v != "rendered 2" {
		t.Errorf("after a write: %v, want rendered 2", v)
	}
	b.set("ns", "k", 3) // behind the cache's back
	c.Event(store.Event{Type: store.EventPut, Namespace: "ns", Key: "k"})
	if v := rendered(t, c, r, "k", store.GetOptions{}); v != "rendered 3" {
		t.Errorf("after another instance's write: %v, want rendered 3", v)
	}

	// A consistent read renders what it read, and refreshes the cache's.
	b.set("ns", "k", 4)
	if v := rendered(t, c, r, "k", store.GetOptions{Consistent: true}); v != "rendered 4" {
		t.Errorf("consistent read: %v, want rendered 4", v)
	}
	before := r.calls.Load()
	if v := rendered(t, c, r, "k", store.GetOptions{}); v != "rendered 4" || r.calls.Load() != before {
		t.Errorf("hit after a consistent read: %v after %d renders, want rendered 4 after none",
			v, r.calls.Load()-before)
	}

	// A read with another strategy is rendered, never kept.
	rendered(t, c, r, "k", store.GetOptions{Resolve: store.Union})
	rendered(t, c, r, "k", store.GetOptions{Resolve: store.Union})
	if n := r.calls.Load() - before; n != 2 {
		t.Errorf("two reads with ?resolve= rendered %d times, want 2", n)
	}
}

func TestNilRenderingsAreNotKept(t *testing.T) {
	b := newBackend()
	b.set("ns", "k", 1)
	c := newCache(t, b, cache.Options{})
	calls := 0
	none := func(store.Entry) any { calls++; return nil }
	for range 3 {
		if _, v, err := c.GetRendered(context.Background(), "ns", "k", store.GetOptions{}, none); err != nil || v != nil {
			t.Fatalf("got %v, %v; want nil, nil", v, err)
		}
	}
	if calls != 3 || b.reads() != 1 {
		t.Errorf("%d renders and %d backend reads, want 3 and 1: the entry is kept, not its nil rendering", calls, b.reads())
	}
}

func TestRenderingWithoutACache(t *testing.T) {
	b := newBackend()
	b.set("ns", "k", 1)
	c := newCache(t, b, cache.Options{Size: -1})
	r := &renderer{}
	rendered(t, c, r, "k", store.GetOptions{})
	rendered(t, c, r, "k", store.GetOptions{})
	if r.calls.Load() != 2 || b.reads() != 2 {
		t.Errorf("%d renders, %d reads; want 2 and 2", r.calls.Load(), b.reads())
	}
}
