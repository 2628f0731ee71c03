// Package keys holds the rules for memsync key names and how they map onto
// Redis keys.
//
// A key is 1–8 segments joined by '/'; a segment is 1–128 characters of
// [A-Za-z0-9._:@-], never "." or ".."; the whole key is at most 512 bytes.
// A namespace follows the segment rules.
//
// Every Redis key starts with the fixed prefix "ms:" and carries a Redis
// Cluster hash tag made of the namespace and the key's first two segments,
// so that all keys of one subtree (one task, one worker) share a hash slot
// and one Lua script may touch several of them on Cluster too:
//
//	tasks/T1/state   in task-sentinel  →  ms:{task-sentinel/tasks/T1}/state
//	coordination/queue                 →  ms:{task-sentinel/coordination/queue}
//	foo                                →  ms:{task-sentinel/foo}
package keys

import (
	"errors"
	"fmt"
	"strings"
)

// Limits of the contract (§2).
const (
	MaxSegments   = 8
	MaxSegmentLen = 128
	MaxKeyLen     = 512
)

// Prefix starts every Redis key memsync writes.
const Prefix = "ms:"

// ErrInvalidKey is returned for a key or namespace that breaks the rules.
var ErrInvalidKey = errors.New("invalid key")

// ValidSegment reports whether s is a valid key segment or namespace.
func ValidSegment(s string) bool {
	if len(s) == 0 || len(s) > MaxSegmentLen || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// Validate returns nil for a valid key, or an error wrapping ErrInvalidKey
// that says what is wrong.
func Validate(key string) error {
	if key == "" {
		return fmt.Errorf("%w: key is empty", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key is %d bytes, more than %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	n := 0
	for seg := range strings.SplitSeq(key, "/") {
		n++
		if n > MaxSegments {
			return fmt.Errorf("%w: key has more than %d segments", ErrInvalidKey, MaxSegments)
		}
		if !ValidSegment(seg) {
			return fmt.Errorf("%w: segment %q must be 1-%d characters of [A-Za-z0-9._:@-] and not \".\" or \"..\"", ErrInvalidKey, seg, MaxSegmentLen)
		}
	}
	return nil
}

// ValidateNamespace returns nil for a valid namespace name.
func ValidateNamespace(ns string) error {
	if !ValidSegment(ns) {
		return fmt.Errorf("%w: namespace %q must be 1-%d characters of [A-Za-z0-9._:@-] and not \".\" or \"..\"", ErrInvalidKey, ns, MaxSegmentLen)
	}
	return nil
}

// Subtree returns the first two segments of key (or the whole key when it
// has fewer): the unit that shares a hash slot.
func Subtree(key string) string {
	i := strings.IndexByte(key, '/')
	if i < 0 {
		return key
	}
	j := strings.IndexByte(key[i+1:], '/')
	if j < 0 {
		return key
	}
	return key[:i+1+j]
}

// Tag returns the Redis Cluster hash tag of key's subtree, braces included:
// "{ns/tasks/T1}".
func Tag(ns, key string) string {
	return "{" + ns + "/" + Subtree(key) + "}"
}

// Redis returns the Redis key holding key's data: the prefix, the hash tag,
// then the rest of the key after the subtree.
func Redis(ns, key string) string {
	sub := Subtree(key)
	return Prefix + "{" + ns + "/" + sub + "}" + key[len(sub):]
}

// Aux returns a Redis key in the same hash slot as key that holds something
// about key other than its data, named by kind: Aux("ns", "tasks/T1",
// "lock") is "ms:{ns/tasks/T1}#lock". '#' is outside the segment alphabet,
// so no data key can collide with it.
func Aux(ns, key, kind string) string {
	return Redis(ns, key) + "#" + kind
}

// SubtreeIndex returns the sorted set listing the live keys of key's
// subtree (member: the key, score: expiry in Unix ms or +inf).
func SubtreeIndex(ns, key string) string {
	return Prefix + Tag(ns, key) + "#keys"
}

// Namespace returns a Redis key for namespace-wide state named by kind
// ("roots", "expiry", ...): "ms:{ns}#kind". The tag has no '/', so it never
// equals a subtree's.
func Namespace(ns, kind string) string {
	return Prefix + "{" + ns + "}#" + kind
}

// Global returns a Redis key for state shared by all namespaces, named by
// kind: "ms:{#memsync}#kind". Every such key shares one hash slot, so one
// script may touch several; '#' cannot occur in a namespace, so no
// namespace's keys collide with them.
func Global(kind string) string {
	return Prefix + "{#memsync}#" + kind
}
