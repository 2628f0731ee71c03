package store

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/memsync/memsync/internal/jsontext"
)

// ErrUnknownStrategy is returned for a strategy name that is none of LWW,
// Union, Merge, Max or Siblings.
var ErrUnknownStrategy = errors.New("store: unknown strategy")

// Resolution is the outcome of resolving a key's siblings into one value.
type Resolution struct {
	// Value is the resolved JSON, compact; nil when not Resolved. When one
	// sibling wins outright (a single sibling, lww, max) it is that sibling's
	// Value itself, not a copy.
	Value json.RawMessage
	// Discarded[i] reports that sibling i (in the order given to Resolve)
	// did not contribute to Value: the losers of lww and max. Union and
	// merge discard nobody, unless they fell back to lww.
	Discarded []bool
	// Resolved is false only for the Siblings strategy with more than one
	// sibling: the client must choose.
	Resolved bool
	// Strategy is the strategy actually applied: LWW when union, merge or
	// max met values they cannot combine.
	Strategy Strategy
}

// Resolve resolves sibs by strategy s; field names the member Max compares
// when the values are objects and is ignored by the other strategies.
//
// Resolution is deterministic, so every instance serves the same bytes: the
// siblings are ordered oldest first by (Timestamp, Writer, canonical version,
// value bytes) whatever order they come in, and lww's winner is the last of
// that order. A single sibling is returned as it is. Numbers keep their exact
// decimal text (they never pass through float64), strings are not
// HTML-escaped, and objects the resolution builds have their keys sorted.
// A sibling whose value is not valid JSON counts as a value the strategy
// cannot combine, so the read falls back to lww rather than failing.
//
// Resolve returns ErrUnknownStrategy for an unknown s, and an error when
// sibs is empty.
func Resolve(sibs []Envelope, s Strategy, field string) (Resolution, error) {
	if !s.valid() {
		return Resolution{}, fmt.Errorf("%w: %q", ErrUnknownStrategy, string(s))
	}
	if len(sibs) == 0 {
		return Resolution{}, errors.New("store: resolve: no siblings")
	}
	res := Resolution{Discarded: make([]bool, len(sibs)), Resolved: true, Strategy: s}
	switch {
	case len(sibs) == 1:
		res.Value = sibs[0].Value
		return res, nil
	case s == Siblings:
		res.Resolved = false
		return res, nil
	}
	order := oldestFirstOrder(sibs)
	switch s {
	case Union:
		if v, ok := resolveUnion(sibs, order); ok {
			res.Value = v
			return res, nil
		}
	case Merge:
		if v, ok := resolveMerge(sibs, order); ok {
			res.Value = v
			return res, nil
		}
	case Max:
		if w, ok := resolveMax(sibs, order, field); ok {
			return res.winner(sibs, w), nil
		}
	}
	res.Strategy = LWW
	return res.winner(sibs, order[len(order)-1]), nil
}

func (s Strategy) valid() bool {
	switch s {
	case LWW, Union, Merge, Max, Siblings:
		return true
	}
	return false
}

// winner makes sibling w the whole resolution and every other one a loser.
func (r Resolution) winner(sibs []Envelope, w int) Resolution {
	r.Value = sibs[w].Value
	for i := range r.Discarded {
		r.Discarded[i] = i != w
	}
	return r
}

// oldestFirstOrder returns the indices of sibs, oldest first. The value
// bytes break the last ties, so only identical siblings are ever left in
// input order, and for them the order cannot change the answer.
func oldestFirstOrder(sibs []Envelope) []int {
	order := make([]int, len(sibs))
	for i := range order {
		order[i] = i
	}
	// Version strings cost a sort and an allocation each, and siblings of
	// one writer at one millisecond are rare: build them only for such ties.
	var versions []string
	version := func(i int) string {
		if versions == nil {
			versions = make([]string, len(sibs))
		}
		if versions[i] == "" {
			versions[i] = "=" + sibs[i].Version.String() // "=": never "" once built
		}
		return versions[i]
	}
	slices.SortFunc(order, func(i, j int) int {
		a, b := &sibs[i], &sibs[j]
		if c := cmp.Compare(a.Timestamp, b.Timestamp); c != 0 {
			return c
		}
		if c := strings.Compare(a.Writer, b.Writer); c != 0 {
			return c
		}
		if c := strings.Compare(version(i), version(j)); c != 0 {
			return c
		}
		return bytes.Compare(a.Value, b.Value)
	})
	return order
}

// resolveUnion concatenates the siblings' arrays oldest first, keeping the
// first occurrence of each element; ok is false unless every value is an
// array.
func resolveUnion(sibs []Envelope, order []int) (json.RawMessage, bool) {
	arrays := make([][]any, len(order))
	for n, i := range order {
		if leadingByte(sibs[i].Value) != '[' {
			return nil, false // before decoding anything: the cheap common refusal
		}
		v, ok := decodeJSON(sibs[i].Value)
		if !ok {
			return nil, false
		}
		arrays[n] = v.([]any)
	}
	var u unionSet
	for _, a := range arrays {
		u.add(a)
	}
	return appendJSON(nil, u.out, false), true
}

// resolveMerge deep-merges the siblings' objects oldest first; ok is false
// unless every value is an object.
func resolveMerge(sibs []Envelope, order []int) (json.RawMessage, bool) {
	objects := make([]map[string]any, len(order))
	for n, i := range order {
		if leadingByte(sibs[i].Value) != '{' {
			return nil, false
		}
		v, ok := decodeJSON(sibs[i].Value)
		if !ok {
			return nil, false
		}
		objects[n] = v.(map[string]any)
	}
	merged := objects[0]
	for _, o := range objects[1:] {
		mergeInto(merged, o)
	}
	return appendJSON(nil, merged, false), true
}

// mergeInto merges src into dst, src being the later: nested objects merge,
// arrays union (dst's elements first), anything else is src's. The decoded
// values belong to this resolution alone, so sharing src's maps and slices
// with dst is safe.
func mergeInto(dst, src map[string]any) {
	for k, sv := range src {
		switch s := sv.(type) {
		case map[string]any:
			if d, ok := dst[k].(map[string]any); ok {
				mergeInto(d, s)
				continue
			}
		case []any:
			if d, ok := dst[k].([]any); ok {
				var u unionSet
				u.add(d)
				u.add(s)
				dst[k] = u.out
				continue
			}
		}
		dst[k] = sv
	}
}

// resolveMax returns the index of the sibling with the largest number, or
// with the largest number in member field when the values are objects; ties
// go to the later sibling in lww order. ok is false when the values are not
// all numbers, nor all objects holding a number in field.
func resolveMax(sibs []Envelope, order []int, field string) (int, bool) {
	best, bestAt := decimal{}, -1
	numbers := isNumberStart(leadingByte(sibs[order[0]].Value))
	if !numbers && field == "" {
		return 0, false
	}
	for _, i := range order {
		num, ok := maxOperand(sibs[i].Value, numbers, field)
		if !ok {
			return 0, false
		}
		d := parseDecimal(string(num))
		if bestAt < 0 || d.cmp(best) >= 0 {
			best, bestAt = d, i
		}
	}
	return bestAt, true
}

// maxOperand returns the number literal max compares in v: v itself when
// numbers, else v's member field. Only the top level is decoded: max runs on
// every read of a busy progress key.
func maxOperand(v []byte, numbers bool, field string) ([]byte, bool) {
	if !numbers {
		if leadingByte(v) != '{' {
			return nil, false
		}
		var members map[string]json.RawMessage
		if err := json.Unmarshal(v, &members); err != nil {
			return nil, false
		}
		v = members[field]
	} else if !json.Valid(v) {
		return nil, false
	}
	// v is valid JSON (Unmarshal checked all of it), so a value that starts
	// like a number is one number literal, give or take whitespace.
	v = bytes.TrimSpace(v)
	if len(v) == 0 || !isNumberStart(v[0]) {
		return nil, false
	}
	return v, true
}

// unionSet builds an array union: elements in first-seen order, each kept
// only the first time it is seen. Objects with an "id" member are the same
// element when their ids are equal; anything else when it is equal as JSON
// (key order and number spelling aside: 1, 1.0 and 1e0 are one number).
type unionSet struct {
	out  []any
	seen map[string]struct{}
	buf  []byte
}

func (u *unionSet) add(elems []any) {
	if u.seen == nil {
		u.seen = make(map[string]struct{}, len(elems))
	}
	for _, e := range elems {
		u.buf = u.buf[:0]
		if o, ok := e.(map[string]any); ok {
			if id, ok := o["id"]; ok {
				u.buf = append(u.buf, 'i') // the id alone is its identity
				u.buf = appendJSON(u.buf, id, true)
			}
		}
		if len(u.buf) == 0 {
			u.buf = append(u.buf, 'v')
			u.buf = appendJSON(u.buf, e, true)
		}
		if _, dup := u.seen[string(u.buf)]; dup {
			continue
		}
		u.seen[string(u.buf)] = struct{}{}
		u.out = append(u.out, e)
	}
}

// leadingByte returns the first byte of v that is not JSON whitespace, or 0.
func leadingByte(v []byte) byte {
	for _, c := range v {
		switch c {
		case ' ', '\t', '\n', '\r':
		default:
			return c
		}
	}
	return 0
}

func isNumberStart(c byte) bool { return c == '-' || c >= '0' && c <= '9' }

// decodeJSON decodes one JSON value, numbers as json.Number so that their
// text survives; ok is false for invalid JSON or trailing data.
func decodeJSON(data []byte) (v any, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return v, true
}

// appendJSON appends v, as decoded by decodeJSON, in compact form with
// object keys sorted and no HTML escaping. With norm, numbers are written in
// the canonical form of decimal.canonical, so equal numbers give equal
// bytes; otherwise they keep their text.
func appendJSON(b []byte, v any, norm bool) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, v)
	case json.Number:
		if norm {
			return parseDecimal(string(v)).appendCanonical(b)
		}
		return append(b, v...)
	case string:
		return jsontext.AppendString(b, v)
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSON(b, e, norm)
		}
		return append(b, ']')
	case map[string]any:
		ks := make([]string, 0, len(v))
		for k := range v {
			ks = append(ks, k)
		}
		slices.Sort(ks)
		b = append(b, '{')
		for i, k := range ks {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsontext.AppendString(b, k)
			b = append(b, ':')
			b = appendJSON(b, v[k], norm)
		}
		return append(b, '}')
	}
	panic(fmt.Sprintf("store: appendJSON: unexpected %T", v)) // decodeJSON makes none other
}

// decimal is a JSON number held exactly: ±0.digits × 10^exp. Comparing two
// needs no arithmetic on their digits, so "1e999999999" costs what "1" does
// (big.Rat would build a billion-digit integer from it).
type decimal struct {
	neg    bool
	digits string   // significant digits, no leading or trailing zeros; "" is zero
	exp    int64    // the power of ten just above the first digit
	bigExp *big.Int // exp when the exponent text is too long for int64
}

// parseDecimal reads a valid JSON number.
func parseDecimal(s string) decimal {
	var d decimal
	if s != "" && s[0] == '-' {
		d.neg, s = true, s[1:]
	}
	mant, expText := s, ""
	for i := 0; i < len(s); i++ {
		if s[i] == 'e' || s[i] == 'E' {
			mant, expText = s[:i], s[i+1:]
			break
		}
	}
	intPart, frac := mant, ""
	for i := 0; i < len(mant); i++ {
		if mant[i] == '.' {
			intPart, frac = mant[:i], mant[i+1:]
			break
		}
	}
	digits := intPart
	if frac != "" {
		digits = intPart + frac
	}
	point := int64(len(intPart))
	for len(digits) > 0 && digits[0] == '0' {
		digits, point = digits[1:], point-1
	}
	for len(digits) > 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
	}
	if digits == "" {
		return decimal{} // every spelling of zero, -0 included
	}
	d.digits = digits
	// A JSON text is at most a few MiB, so point and an exponent of up to 16
	// characters add up well inside int64.
	if len(expText) <= 16 {
		e, _ := strconv.ParseInt(expText, 10, 64) // "" and "+5" parse as 0 and 5
		d.exp = point + e
		return d
	}
	d.bigExp, _ = new(big.Int).SetString(expText, 10)
	if d.bigExp == nil { // not a valid number: cannot happen after decoding
		d.bigExp = new(big.Int)
	}
	d.bigExp.Add(d.bigExp, big.NewInt(point))
	return d
}

func (d decimal) sign() int {
	switch {
	case d.digits == "":
		return 0
	case d.neg:
		return -1
	}
	return 1
}

func (d decimal) exponent() *big.Int {
	if d.bigExp != nil {
		return d.bigExp
	}
	return big.NewInt(d.exp)
}

// cmp compares d and o exactly: -1, 0 or +1.
func (d decimal) cmp(o decimal) int {
	if c := cmp.Compare(d.sign(), o.sign()); c != 0 || d.sign() == 0 {
		return c
	}
	var c int
	if d.bigExp == nil && o.bigExp == nil {
		c = cmp.Compare(d.exp, o.exp)
	} else {
		c = d.exponent().Cmp(o.exponent())
	}
	if c == 0 {
		// Same magnitude: the digit strings compare like the numbers, a
		// prefix being smaller because neither has trailing zeros.
		c = cmp.Compare(d.digits, o.digits)
	}
	if d.neg {
		return -c
	}
	return c
}

// appendCanonical appends a spelling of d that equal numbers share: "0",
// or ["-"] digits "e" exp.
func (d decimal) appendCanonical(b []byte) []byte {
	if d.digits == "" {
		return append(b, '0')
	}
	if d.neg {
		b = append(b, '-')
	}
	b = append(b, d.digits...)
	b = append(b, 'e')
	if d.bigExp != nil {
		return d.bigExp.Append(b, 10)
	}
	return strconv.AppendInt(b, d.exp, 10)
}
