package http

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/store"
)

// A batch's answer is written by hand; it must be what encoding/json
// writes, byte for byte.
func TestBatchResultsMatchEncodingJSON(t *testing.T) {
	entry := newEntryResponse(store.Entry{
		Key: "tasks/T1/state", Namespace: "ns", ETag: `e1`, Value: json.RawMessage(`{"a":"<&>","b":[1,2]}`),
		Version: clock.Vector{"w1": 3}, Timestamp: 1764170000000, Writer: "w1", ExpiresAt: 1764173600000,
		Strategy: store.LWW, Resolved: true,
		Siblings: []store.Envelope{{Value: json.RawMessage(`1`), Version: clock.Vector{"w1": 3}, Timestamp: 1, Writer: "w1"}},
	}, false)
	nf := problemOf(store.ErrNotFound)
	bad := problem{Status: 400, Code: "invalid_argument", Title: "Bad <input> & more", Detail: "ops[2]: \"ttl\" <0>"}
	for _, results := range [][]batchResult{
		{},
		{{Status: 200, Entry: &entry}},
		{{Status: 200, Entry: &entry}, {Status: 204}, {Status: 404, Error: &nf}, {Status: 400, Error: &bad}},
		{{Status: 200, Entry: &entry, Replayed: true}, {Status: 200, Entry: &entry}},
	} {
		rec := httptest.NewRecorder()
		writeBatchResults(rec, results)
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(struct {
			Results []batchResult `json:"results"`
		}{results}); err != nil {
			t.Fatal(err)
		}
		if got := rec.Body.String(); got != want.String() {
			t.Errorf("writeBatchResults:\n got %s\nwant %s", got, want.String())
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
	}
}
