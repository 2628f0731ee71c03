// Package glob matches '/'-separated keys against patterns, as used by watch
// subscriptions, cache invalidation and strategy rules (CONTRACT §3, §7).
//
// A pattern is one or more segments joined by '/':
//
//	**        any number of whole segments, zero included
//	*         exactly one segment, whatever it holds
//	task-*    one segment; each '*' is any run of characters other than '/'
//	T1        anything else matches itself, byte for byte
//
// So "tasks/*/state" matches "tasks/T1/state" but not "tasks/T1/x/state", and
// "tasks/**" matches "tasks/T1", "tasks/T1/state" and "tasks" itself: "**"
// may stand for no segment at all, which is what a subtree pattern should mean
// when the subtree's root is a key too.
//
// Matching runs in O(len(pattern) × len(key)) segment comparisons at worst
// and allocates nothing: patterns come from clients (watch ?pattern=), so a
// pattern like "**/a/**/a/**/b" must not be able to make a server spin.
package glob

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidPattern is returned by Compile for an empty pattern, an empty
// segment ("a//b", "a/", "/a"), or "**" sharing a segment with other
// characters ("a**", "***").
var ErrInvalidPattern = errors.New("glob: invalid pattern")

// Pattern is a compiled pattern. It is immutable and safe for concurrent use.
type Pattern struct {
	text string
	segs []segment
}

type kind uint8

const (
	literal kind = iota // matches itself
	one                 // "*": any single segment
	deep                // "**": zero or more segments
	wild                // a segment with '*' among other characters
)

type segment struct {
	kind kind
	text string // the segment as written
	// For wild segments, text split at each '*': the segment must start with
	// prefix, end with suffix and hold the middles in order between them.
	prefix, suffix string
	middles        []string
	min            int // the shortest segment that can match
}

// Compile parses pattern. Errors wrap ErrInvalidPattern.
func Compile(pattern string) (*Pattern, error) {
	if pattern == "" {
		return nil, fmt.Errorf("%w: empty pattern", ErrInvalidPattern)
	}
	p := &Pattern{text: pattern}
	for s := range strings.SplitSeq(pattern, "/") {
		seg := segment{kind: literal, text: s}
		switch {
		case s == "":
			return nil, fmt.Errorf("%w: %q has an empty segment", ErrInvalidPattern, pattern)
		case s == "**":
			// "**/**" means what "**" means; keeping one makes matching cheaper.
			if n := len(p.segs); n > 0 && p.segs[n-1].kind == deep {
				continue
			}
			seg.kind = deep
		case strings.Contains(s, "**"):
			return nil, fmt.Errorf("%w: %q: \"**\" must be a whole segment", ErrInvalidPattern, pattern)
		case s == "*":
			seg.kind = one
		case strings.Contains(s, "*"):
			parts := strings.Split(s, "*")
			seg.kind = wild
			seg.prefix, seg.suffix = parts[0], parts[len(parts)-1]
			seg.middles = parts[1 : len(parts)-1]
			for _, part := range parts {
				seg.min += len(part)
			}
		}
		p.segs = append(p.segs, seg)
	}
	return p, nil
}

// String returns the pattern as it was written.
func (p *Pattern) String() string { return p.text }

// Literal returns the longest leading run of literal segments, joined by
// '/': "tasks/T1" for "tasks/T1/*", "tasks/T1/state" for itself, "" for
// "**" or "task-*/x". Every key the pattern matches is prefix itself or
// starts with prefix+"/", so an index lookup can be narrowed to it.
func (p *Pattern) Literal() (prefix string) {
	end := 0
	for i, s := range p.segs {
		if s.kind != literal {
			break
		}
		if i > 0 {
			end++
		}
		end += len(s.text)
	}
	// The literal segments are the start of the text: "**" collapsing only
	// ever removes segments after the first non-literal one.
	return p.text[:end]
}

// Match reports whether key matches the pattern. The key is not validated:
// it is split at every '/', "" being no segment at all.
//
// This is the classic wildcard algorithm lifted from bytes to segments: every
// segment but "**" consumes exactly one key segment, so on a mismatch only
// the latest "**" needs to absorb one more key segment and matching resumes
// after it; earlier "**"s never need revisiting. Key positions are byte
// offsets, so nothing is allocated.
func (p *Pattern) Match(key string) bool {
	segs := p.segs
	end := len(key) + 1 // the offset past the last segment
	k := 0              // the offset of the current key segment
	if key == "" {
		k = end
	}
	i := 0                // the current pattern segment
	starI, starK := -1, 0 // after the latest "**": its pattern resume point and key offset
	for k < end {
		if i < len(segs) {
			s := &segs[i]
			if s.kind == deep {
				starI, starK = i+1, k
				i++
				continue
			}
			cur, next := cut(key, k)
			if s.match(cur) {
				i, k = i+1, next
				continue
			}
		}
		if starI < 0 {
			return false
		}
		_, starK = cut(key, starK)
		i, k = starI, starK
	}
	for i < len(segs) && segs[i].kind == deep {
		i++
	}
	return i == len(segs)
}

// cut returns the key segment starting at offset k and the offset of the
// next one (len(key)+1 after the last).
func cut(key string, k int) (seg string, next int) {
	if j := strings.IndexByte(key[k:], '/'); j >= 0 {
		return key[k : k+j], k + j + 1
	}
	return key[k:], len(key) + 1
}

// match reports whether the single key segment cur matches s.
func (s *segment) match(cur string) bool {
	switch s.kind {
	case literal:
		return cur == s.text
	case one:
		return true
	case wild:
		if len(cur) < s.min || !strings.HasPrefix(cur, s.prefix) || !strings.HasSuffix(cur, s.suffix) {
			return false
		}
		// Taking each middle at its leftmost place leaves the most room for
		// the rest, so a greedy scan finds a match whenever there is one.
		rest := cur[len(s.prefix) : len(cur)-len(s.suffix)]
		for _, m := range s.middles {
			j := strings.Index(rest, m)
			if j < 0 {
				return false
			}
			rest = rest[j+len(m):]
		}
		return true
	}
	return false
}
