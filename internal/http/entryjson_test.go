package http

// An internal test: it compares the unexported hand encoder with
// encoding/json on the same struct.

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/store"
)

func TestEntryEncodingMatchesEncodingJSON(t *testing.T) {
	// plain has entryResponse's fields and tags but not its MarshalJSON.
	type plain entryResponse
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"a", "tasks/T1", "é", "日本", "\"", "\\", "\n", "\t", "\x00", "\x1f", "<&>", "\u2028", "\xff", "\xc3", ""}
	str := func() string {
		var b []byte
		for range rng.IntN(5) {
			b = append(b, pieces[rng.IntN(len(pieces))]...)
		}
		return string(b)
	}
	values := []string{`null`, `1`, `"x"`, `{"a":[1,2,{"b":null}]}`, `[]`, `"<&>"`, `12345678901234567890`}
	for i := range 2000 {
		e := entryResponse{
			Key: str(), Namespace: str(), ETag: `"` + str() + `"`, Writer: str(),
			Timestamp: rng.Int64(), Strategy: store.Strategy(str()), Conflict: rng.IntN(2) == 0,
			Siblings: rng.IntN(40), Version: clock.Vector{"w1": rng.Uint64N(1 << 53), "w-2": 3},
		}
		if rng.IntN(3) > 0 {
			e.Value = json.RawMessage(values[rng.IntN(len(values))])
		}
		if rng.IntN(2) == 0 {
			e.ExpiresAt = rng.Int64()
		}
		for range rng.IntN(3) {
			e.SiblingList = append(e.SiblingList, siblingJSON{Value: json.RawMessage(values[rng.IntN(len(values))]),
				Version: clock.Vector{"a": 1}, Timestamp: rng.Int64(), Writer: str(), Discarded: rng.IntN(2) == 0})
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(plain(e)); err != nil {
			t.Fatal(err)
		}
		got := append(e.appendJSON(nil), '\n')
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("entry %d:\n got  %s\n want %s", i, got, want.Bytes())
		}
	}
}
