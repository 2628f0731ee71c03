// Package clock implements vector clocks: a counter per writer that orders
// writes causally. It knows nothing of Redis, time or logs.
//
// A Vector is a value type (a map): the methods that change a clock return a
// new Vector and leave their receiver alone, so a Vector can be shared freely
// once built.
package clock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Vector maps a writer id to the number of writes that writer has made to a
// key. A missing id means zero.
type Vector map[string]uint64

// Ordering is how two vectors relate causally.
type Ordering int

const (
	// Equal: the same history.
	Equal Ordering = iota
	// Before: the receiver happened-before the argument.
	Before
	// After: the argument happened-before the receiver.
	After
	// Concurrent: neither happened-before the other; the writes conflict.
	Concurrent
)

func (o Ordering) String() string {
	switch o {
	case Equal:
		return "equal"
	case Before:
		return "before"
	case After:
		return "after"
	case Concurrent:
		return "concurrent"
	}
	return "Ordering(" + strconv.Itoa(int(o)) + ")"
}

// ErrInvalid is returned when a vector's encoding or a writer id is malformed.
var ErrInvalid = errors.New("clock: invalid vector clock")

// MaxIDLen is the longest writer id; ids use the key segment alphabet.
const MaxIDLen = 128

// ValidID reports whether id can name a writer: 1–128 characters of
// [A-Za-z0-9._:@-]. The canonical encoding relies on ids never containing
// ',' or '='.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// Clone returns a copy of v that shares nothing with it.
func (v Vector) Clone() Vector {
	c := make(Vector, len(v))
	for id, n := range v {
		if n > 0 {
			c[id] = n
		}
	}
	return c
}

// Tick returns a copy of v with id's counter raised by one.
func (v Vector) Tick(id string) Vector {
	c := v.Clone()
	c[id]++
	return c
}

// Merge returns the element-wise maximum of v and o: the smallest clock that
// both happened-before or equal. Merge is commutative, associative and
// idempotent.
func (v Vector) Merge(o Vector) Vector {
	c := v.Clone()
	for id, n := range o {
		if n > c[id] {
			c[id] = n
		}
	}
	return c
}

// Compare reports how v relates to o. Missing ids count as zero, so
// {"a":1} and {"a":1,"b":0} are Equal.
func (v Vector) Compare(o Vector) Ordering {
	less, greater := false, false
	for id, n := range v {
		switch m := o[id]; {
		case n < m:
			less = true
		case n > m:
			greater = true
		}
	}
	for id, m := range o {
		if _, seen := v[id]; !seen && m > 0 {
			less = true
		}
	}
	switch {
	case less && greater:
		return Concurrent
	case less:
		return Before
	case greater:
		return After
	}
	return Equal
}

// Descends reports whether v has seen everything o has (o ≤ v).
func (v Vector) Descends(o Vector) bool {
	switch v.Compare(o) {
	case After, Equal:
		return true
	}
	return false
}

// String returns the canonical text encoding: "id=n" pairs sorted by id and
// joined by ',', zero counters left out; the empty vector is "". The Lua
// scripts of the store read and write this form.
func (v Vector) String() string {
	ids := v.ids()
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(id)
		b.WriteByte('=')
		b.WriteString(strconv.FormatUint(v[id], 10))
	}
	return b.String()
}

// Parse decodes the canonical text encoding written by String. It accepts
// ids in any order but rejects repeated ids (even with a zero counter),
// invalid ids and counters that are not decimal integers in [0, MaxCounter],
// so that whatever it returns MarshalJSON and UnmarshalJSON round-trip.
func Parse(s string) (Vector, error) {
	if s == "" {
		return Vector{}, nil
	}
	if strings.IndexByte(s, ',') < 0 {
		// One writer, the commonest clock: no split, and a map sized for one.
		id, n, ok := strings.Cut(s, "=")
		if !ok || !ValidID(id) {
			return nil, fmt.Errorf("%w: bad pair %q", ErrInvalid, s)
		}
		c, err := strconv.ParseUint(n, 10, 64)
		if err != nil || c > MaxCounter {
			return nil, fmt.Errorf("%w: bad counter in %q", ErrInvalid, s)
		}
		v := make(Vector, 1)
		if c > 0 {
			v[id] = c
		}
		return v, nil
	}
	v := Vector{}
	for pair := range strings.SplitSeq(s, ",") {
		id, n, ok := strings.Cut(pair, "=")
		if !ok || !ValidID(id) {
			return nil, fmt.Errorf("%w: bad pair %q", ErrInvalid, pair)
		}
		if _, dup := v[id]; dup {
			return nil, fmt.Errorf("%w: repeated id %q", ErrInvalid, id)
		}
		c, err := strconv.ParseUint(n, 10, 64)
		if err != nil || c > MaxCounter {
			return nil, fmt.Errorf("%w: bad counter in %q", ErrInvalid, pair)
		}
		v[id] = c // zeros too, until the end, so a repeat is still caught
	}
	maps.DeleteFunc(v, func(_ string, n uint64) bool { return n == 0 })
	return v, nil
}

// MarshalJSON encodes v as an object with ids sorted and zero counters left
// out, so equal clocks encode to equal bytes.
func (v Vector) MarshalJSON() ([]byte, error) {
	return v.AppendJSON(make([]byte, 0, 16*len(v)+2))
}

// AppendJSON appends the encoding of MarshalJSON to b.
func (v Vector) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, '{')
	var small [8]string // most clocks have few writers: sort them on the stack
	ids := small[:0]
	for id, n := range v {
		if n > 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, id) // ids are plain ASCII: quoting is JSON-safe
		b = append(b, ':')
		b = strconv.AppendUint(b, v[id], 10)
	}
	return append(b, '}'), nil
}

// UnmarshalJSON decodes an object of writer ids to non-negative integers,
// rejecting invalid ids, fractions, negatives and values above 2^53 (the
// largest integer every JSON client can hold exactly). Of several bad
// entries, the error names the first in the text, so that the same input
// always gets the same error. A writer named twice is refused too: which
// of its counters was meant is not said (encoding/json would keep the
// last).
func (v *Vector) UnmarshalJSON(data []byte) error {
	// RawMessage, not json.Number: json.Number also accepts a quoted "1".
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if raw == nil {
		return fmt.Errorf("%w: not an object", ErrInvalid)
	}
	if err := checkEntries(data, len(raw)); err != nil {
		return err
	}
	out := make(Vector, len(raw))
	for id, num := range raw {
		if n, _ := strconv.ParseUint(string(num), 10, 64); n > 0 {
			out[id] = n
		}
	}
	*v = out
	return nil
}

// checkEntries checks the entries of data, a valid JSON object of
// distinct names, in their order (the decoder meets no error),
// and returns the first bad one's error: a bad writer id, a bad counter,
// or a writer named a second time. Only when data has more entries than
// distinct is some writer named twice, and are the ids met kept, in a
// second pass, to find where.
func checkEntries(data []byte, distinct int) error {
	var first error
	var named map[string]bool
	for pass := 1; ; pass++ {
		dec := json.NewDecoder(bytes.NewReader(data))
		_, _ = dec.Token() // {
		entries := 0
		for dec.More() && (first == nil || pass == 1) {
			tok, _ := dec.Token()
			id, _ := tok.(string)
			var num json.RawMessage
			_ = dec.Decode(&num)
			entries++
			var err error
			switch n, perr := strconv.ParseUint(string(num), 10, 64); {
			case !ValidID(id):
				err = fmt.Errorf("%w: bad writer id %q", ErrInvalid, id)
			case perr != nil || n > MaxCounter:
				err = fmt.Errorf("%w: counter for %q must be an integer in [0, 2^53]", ErrInvalid, id)
			case named[id]:
				err = fmt.Errorf("%w: writer %q named twice", ErrInvalid, id)
			case named != nil:
				named[id] = true
			}
			if first == nil {
				first = err
			}
		}
		if pass == 2 || entries == distinct {
			return first
		}
		first, named = nil, make(map[string]bool, distinct)
	}
}

// MaxCounter is the largest counter a clock may hold: 2^53, beyond which
// JSON clients (and Redis's Lua numbers) lose integer precision.
const MaxCounter = 1 << 53

func (v Vector) ids() []string {
	ids := make([]string, 0, len(v))
	for id, n := range v {
		if n > 0 {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}
