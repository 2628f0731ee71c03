package http

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

// A listed key that is gone by the time its entry is read (deleted or
// expired in between) is left out of the keys and the entries alike, so
// that entries[i] stays keys[i]'s, across the chunks of a page.
func TestReadEntriesLeavesOutKeysGoneSinceListed(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		st, err := store.New(b.Client, store.Config{})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		var listed, live []string
		written := map[string]string{}
		for i := range entriesChunk + 8 {
			k := fmt.Sprintf("k/%02d", i)
			listed = append(listed, k)
			if i%5 == 0 {
				continue // listed, never written: as if deleted since
			}
			live = append(live, k)
			written[k] = fmt.Sprint(i)
			if _, err := st.Put(ctx, "ns", k, store.PutRequest{Value: []byte(written[k]), Writer: "w1"}); err != nil {
				t.Fatal(err)
			}
		}
		page, err := readEntries(ctx, st, "ns", keyPage{Keys: listed, Cursor: "next"}, entriesWanted{entries: true})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(page.Keys, live) || page.Cursor != "next" {
			t.Fatalf("keys %v cursor %q, want %v and the listing's cursor", page.Keys, page.Cursor, live)
		}
		for i, e := range page.Entries {
			if e.Key != page.Keys[i] || string(e.Value) != written[e.Key] {
				t.Errorf("entry %d = %s %s, listed as %s", i, e.Key, e.Value, page.Keys[i])
			}
		}
	})
}
