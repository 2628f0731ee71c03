package http

import (
	"context"
	"fmt"
	"net/url"

	"github.com/memsync/memsync/internal/store"
)

// keyPage is the body of GET /v1/keys: a page of keys and, with
// ?entries=true, their entries, entries[i] being keys[i]'s.
type keyPage struct {
	Keys    []string        `json:"keys"`
	Entries []entryResponse `json:"entries,omitzero"` // nil: not asked for; empty: none
	Cursor  string          `json:"cursor,omitempty"`
}

// entriesWanted is what a listing asks of the entries it returns.
type entriesWanted struct {
	entries  bool // ?entries=true: read each key's entry
	siblings bool // ?siblings=true: with its sibling list
	opt      store.GetOptions
}

// entriesParams reads ?entries=, ?siblings= and ?resolve= of a listing.
// The last two shape entries, so they are refused without entries=true
// rather than silently ignored.
func entriesParams(q url.Values) (entriesWanted, error) {
	var want entriesWanted
	var err error
	if want.entries, err = boolParam(q.Get("entries"), "entries"); err != nil {
		return want, err
	}
	if want.siblings, err = boolParam(q.Get("siblings"), "siblings"); err != nil {
		return want, err
	}
	if v := q.Get("resolve"); v != "" {
		if want.opt.Resolve, err = store.ParseStrategy(v); err != nil {
			return want, fmt.Errorf("%w: resolve: %v", errInvalidArgument, err)
		}
	}
	if !want.entries && (want.siblings || want.opt.Resolve != "") {
		return want, fmt.Errorf("%w: siblings and resolve shape the entries of a listing: add entries=true", errInvalidArgument)
	}
	return want, nil
}

// Bounds of a listing's entries.
const (
	// entriesChunk is how many keys one round trip reads: the most
	// memory a page holds beyond maxEntriesBytes is this many values.
	entriesChunk = 32
	// maxEntriesBytes ends a page of entries early once their values
	// (siblings' included) add up to this much, so that a page of 1,000
	// large values is not one answer of a gigabyte; the cursor then
	// continues after the last entry given.
	maxEntriesBytes = 4 << 20
)

// readEntries reads the entries of page's keys, from Redis rather than the
// instance cache (forEntries). A key deleted or expired since it was
// listed is left out of both lists, so that they stay aligned.
func readEntries(ctx context.Context, st Store, ns string, page keyPage, want entriesWanted) (keyPage, error) {
	out := keyPage{Keys: []string{}, Entries: []entryResponse{}, Cursor: page.Cursor}
	size := 0
	err := forEntries(ctx, st, ns, page.Keys, want.opt, func(e store.Entry) bool {
		if size >= maxEntriesBytes {
			out.Cursor = store.CursorAfter(out.Keys[len(out.Keys)-1])
			return false
		}
		out.Keys = append(out.Keys, e.Key)
		out.Entries = append(out.Entries, newEntryResponse(e, want.siblings))
		size += entrySize(out.Entries[len(out.Entries)-1])
		return true
	})
	if err != nil {
		return keyPage{}, err
	}
	return out, nil
}

// forEntries reads the entries of ks, entriesChunk keys per round trip, and
// hands each key that still exists to fn, in order, until fn returns
// false.
func forEntries(ctx context.Context, st Store, ns string, ks []string, opt store.GetOptions, fn func(store.Entry) bool) error {
	for start := 0; start < len(ks); start += entriesChunk {
		entries, err := st.GetMany(ctx, ns, ks[start:min(start+entriesChunk, len(ks))], opt)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Key != "" && !fn(e) { // "": gone since it was listed
				return nil
			}
		}
	}
	return nil
}

// entrySize is about how many bytes e's values take in an answer: its
// value, and its siblings' when it lists them.
func entrySize(e entryResponse) int {
	n := len(e.Value)
	for _, sib := range e.SiblingList {
		n += len(sib.Value)
	}
	return n
}
