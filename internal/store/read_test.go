package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

// Concurrent reads share pipelines (package pipeline); each must still get its own
// key's entry, and see every write acknowledged before it was asked for.
func TestConcurrentReadsSeeTheirKeysAndEarlierWrites(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		const readers, rounds = 48, 30
		var wg sync.WaitGroup
		errs := make(chan error, readers)
		for r := range readers {
			wg.Go(func() {
				key := fmt.Sprintf("reads/k%d", r)
				for i := range rounds {
					want := fmt.Sprintf(`{"reader":%d,"round":%d}`, r, i)
					if _, err := s.Put(context.Background(), ns, key, store.PutRequest{Value: []byte(want), Writer: "w"}); err != nil {
						errs <- err
						return
					}
					// A neighbour's key too, whatever it holds now.
					other := fmt.Sprintf("reads/k%d", (r+1)%readers)
					if _, err := s.Get(context.Background(), ns, other, store.GetOptions{}); err != nil && !errors.Is(err, store.ErrNotFound) {
						errs <- err
						return
					}
					e, err := s.Get(context.Background(), ns, key, store.GetOptions{})
					if err != nil {
						errs <- err
						return
					}
					if e.Key != key || string(e.Value) != want {
						errs <- fmt.Errorf("reader %d round %d: read %s = %s, want %s = %s", r, i, e.Key, e.Value, key, want)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}
