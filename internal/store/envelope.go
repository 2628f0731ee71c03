package store

import (
	"encoding/json"

	"github.com/memsync/memsync/internal/clock"
)

// Envelope is one stored version of a key's value: a sibling. A key holds one
// or more envelopes, none of whose versions happened-before another's.
type Envelope struct {
	Value     json.RawMessage `json:"value"`
	Version   clock.Vector    `json:"version"`
	Timestamp int64           `json:"timestamp"` // Unix milliseconds, set by the instance that took the write
	Writer    string          `json:"writer"`
}

// Strategy names how a key's siblings are resolved into one value on read.
type Strategy string

// The strategies of the contract (§3).
const (
	// LWW keeps the sibling with the highest timestamp; ties go to the
	// greatest writer id.
	LWW Strategy = "lww"
	// Union unions arrays in first-seen order (oldest sibling first),
	// dropping duplicates by JSON equality, or by "id" for objects that have
	// one. Non-arrays fall back to LWW.
	Union Strategy = "union"
	// Merge deep-merges objects oldest first, so later timestamps win on
	// scalar conflicts; arrays inside are unioned. Non-objects fall back to
	// LWW.
	Merge Strategy = "merge"
	// Max keeps the largest number, or for objects the one whose Field is
	// largest. Values it cannot compare fall back to LWW.
	Max Strategy = "max"
	// Siblings resolves nothing: a client sees every sibling and writes the
	// resolution back with the merged version as context.
	Siblings Strategy = "siblings"
)
