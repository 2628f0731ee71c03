package clock_test

import (
	"encoding/json"
	"testing"

	"github.com/memsync/memsync/internal/clock"
)

// fuzzIDs is the writer alphabet the fuzzers build clocks from: few enough
// that random clocks share ids and so are often ordered, not just concurrent.
var fuzzIDs = []string{"w1", "w2", "w3", "a", "B", "x.y:z@1-_"}

// vectorFrom builds a clock from fuzz bytes, two bytes a counter: the first
// picks the id, the second the value. Values stay small so clocks collide,
// except 255, which stands for MaxCounter. Zero counters are kept in the map
// on purpose: a missing id and a zero must behave the same.
func vectorFrom(b []byte) clock.Vector {
	v := clock.Vector{}
	for i := 0; i+1 < len(b); i += 2 {
		id := fuzzIDs[int(b[i])%len(fuzzIDs)]
		n := uint64(b[i+1] % 6)
		if b[i+1] == 255 {
			n = clock.MaxCounter
		}
		v[id] = n
	}
	return v
}

// addVectorSeeds gives every three-clock fuzzer the same seed corpus: the
// design document's example, equal, ordered, concurrent and extreme clocks.
func addVectorSeeds(f *testing.F) {
	f.Helper()
	for _, s := range []struct{ a, b, c []byte }{
		{nil, nil, nil},
		{[]byte{0, 1, 1, 1}, []byte{0, 2, 1, 2}, []byte{0, 3, 1, 3}}, // w1,w2: 1,1 < 2,2 < 3,3
		{[]byte{0, 1}, []byte{1, 1}, []byte{2, 1}},                   // pairwise concurrent
		{[]byte{0, 2, 1, 1}, []byte{0, 1, 1, 2}, []byte{0, 2, 1, 2}}, // crossed, then their merge
		{[]byte{0, 0, 1, 0}, nil, []byte{0, 1}},                      // explicit zeros
		{[]byte{0, 255}, []byte{0, 254}, []byte{0, 255, 1, 255}},     // MaxCounter
		{[]byte{0, 1, 0, 3, 0, 2}, []byte{5, 1}, []byte{3, 4, 4, 5}}, // an id written twice
	} {
		f.Add(s.a, s.b, s.c, byte(0))
	}
}

// requireEqual fails unless a and b are the same clock.
func requireEqual(t *testing.T, what string, a, b clock.Vector) {
	t.Helper()
	if o := a.Compare(b); o != clock.Equal {
		t.Fatalf("%s: %q vs %q: Compare = %v, want equal", what, a, b, o)
	}
	if g, w := a.String(), b.String(); g != w {
		t.Fatalf("%s: canonical %q vs %q", what, g, w)
	}
}

// FuzzMerge checks that Merge is a join: commutative, associative,
// idempotent, the least upper bound of its arguments, and free of aliasing.
func FuzzMerge(f *testing.F) {
	addVectorSeeds(f)
	f.Fuzz(func(t *testing.T, ab, bb, cb []byte, _ byte) {
		a, b, c := vectorFrom(ab), vectorFrom(bb), vectorFrom(cb)
		as, bs := a.String(), b.String()

		ab2 := a.Merge(b)
		requireEqual(t, "commutative", ab2, b.Merge(a))
		requireEqual(t, "associative", ab2.Merge(c), a.Merge(b.Merge(c)))
		requireEqual(t, "idempotent", a.Merge(a), a)
		requireEqual(t, "absorbs its arguments", ab2.Merge(a), ab2)

		if !ab2.Descends(a) || !ab2.Descends(b) {
			t.Fatalf("%q.Merge(%q) = %q does not descend both", a, b, ab2)
		}
		// Least: a clock that descends both descends their merge, and a merge
		// equal to one argument means that argument descends the other.
		if c.Descends(a) && c.Descends(b) && !c.Descends(ab2) {
			t.Fatalf("%q descends %q and %q but not their merge %q", c, a, b, ab2)
		}
		if got, want := ab2.Compare(a) == clock.Equal, a.Descends(b); got != want {
			t.Fatalf("merge equals %q: %v, but %q descends %q: %v", a, got, a, b, want)
		}

		for id := range ab2 {
			ab2[id]++
		}
		ab2["zz"] = 1
		if a.String() != as || b.String() != bs {
			t.Fatalf("Merge's result aliases an argument: %q, %q became %q, %q", as, bs, a, b)
		}
	})
}

// FuzzCompare checks that Compare is a partial order: reflexive,
// antisymmetric and transitive, that Descends agrees with it, and that Tick
// moves a clock strictly forward.
func FuzzCompare(f *testing.F) {
	addVectorSeeds(f)
	f.Fuzz(func(t *testing.T, ab, bb, cb []byte, idb byte) {
		a, b, c := vectorFrom(ab), vectorFrom(bb), vectorFrom(cb)

		if o := a.Compare(a); o != clock.Equal {
			t.Fatalf("%q.Compare(itself) = %v", a, o)
		}
		if o := a.Compare(a.Clone()); o != clock.Equal {
			t.Fatalf("%q.Compare(its clone) = %v", a, o)
		}

		want := map[clock.Ordering]clock.Ordering{
			clock.Equal:      clock.Equal,
			clock.Before:     clock.After,
			clock.After:      clock.Before,
			clock.Concurrent: clock.Concurrent,
		}
		ord, rev := a.Compare(b), b.Compare(a)
		if w, ok := want[ord]; !ok || rev != w {
			t.Fatalf("%q vs %q: %v one way, %v the other", a, b, ord, rev)
		}
		if got, want := a.Descends(b), ord == clock.After || ord == clock.Equal; got != want {
			t.Fatalf("%q.Descends(%q) = %v, but Compare = %v", a, b, got, ord)
		}
		// Equal means the same canonical encoding, and only then.
		if got, want := ord == clock.Equal, a.String() == b.String(); got != want {
			t.Fatalf("%q vs %q: Compare = %v but canonical forms equal: %v", a, b, ord, want)
		}

		if a.Compare(b) == clock.Before && b.Compare(c) == clock.Before {
			if o := a.Compare(c); o != clock.Before {
				t.Fatalf("%q < %q < %q but %q vs %q = %v", a, b, c, a, c, o)
			}
		}
		// Random clocks are rarely chained, so build a chain too.
		id := fuzzIDs[int(idb)%len(fuzzIDs)]
		b2 := a.Merge(b).Tick(id)
		c2 := b2.Merge(c).Tick(fuzzIDs[(int(idb)+1)%len(fuzzIDs)])
		if a.Compare(b2) != clock.Before || b2.Compare(c2) != clock.Before || a.Compare(c2) != clock.Before {
			t.Fatalf("chain %q < %q < %q: got %v, %v, %v", a, b2, c2, a.Compare(b2), b2.Compare(c2), a.Compare(c2))
		}

		ticked := a.Tick(id)
		if o := ticked.Compare(a); o != clock.After {
			t.Fatalf("%q.Tick(%q) = %q: Compare = %v, want after", a, id, ticked, o)
		}
		if got, want := ticked[id], a[id]+1; got != want {
			t.Fatalf("%q.Tick(%q)[%q] = %d, want %d", a, id, id, got, want)
		}
	})
}

// FuzzEncoding checks that both encodings round-trip every clock and are
// canonical: equal clocks encode to equal bytes.
func FuzzEncoding(f *testing.F) {
	addVectorSeeds(f)
	f.Fuzz(func(t *testing.T, ab, bb, _ []byte, _ byte) {
		a, b := vectorFrom(ab), vectorFrom(bb)

		s := a.String()
		parsed, err := clock.Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q) of String: %v", s, err)
		}
		requireEqual(t, "String then Parse", parsed, a)

		js, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("Marshal(%q): %v", a, err)
		}
		var decoded clock.Vector
		if err := json.Unmarshal(js, &decoded); err != nil {
			t.Fatalf("Unmarshal(%s) of MarshalJSON: %v", js, err)
		}
		requireEqual(t, "MarshalJSON then UnmarshalJSON", decoded, a)
		again, _ := json.Marshal(decoded)
		if string(again) != string(js) {
			t.Fatalf("MarshalJSON not canonical: %s then %s", js, again)
		}

		bjs, _ := json.Marshal(b)
		if got, want := string(js) == string(bjs), a.Compare(b) == clock.Equal; got != want {
			t.Fatalf("%s vs %s: same bytes %v, Compare equal %v", js, bjs, got, want)
		}
	})
}

// FuzzParse feeds Parse arbitrary text: it must never panic, and whatever it
// accepts must re-encode canonically and parse back to the same clock.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"", "a=1", "a=1,b=2", "b=2,a=1", "a=0", "a=007", "w1=1,w2=1",
		"a=1,a=2", "a=0,a=1", "a=", "=1", "a", ",", "a=1,", "a=-1", "a=+1",
		"a=1.5", "a=9007199254740992", "a=9007199254740993",
		"a=18446744073709551616", "é=1", "a b=1", "a==1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := clock.Parse(s)
		if err != nil {
			if v != nil {
				t.Fatalf("Parse(%q) returned %v with error %v", s, v, err)
			}
			return
		}
		for id, n := range v {
			if !clock.ValidID(id) || n == 0 || n > clock.MaxCounter {
				t.Fatalf("Parse(%q) accepted %q=%d", s, id, n)
			}
		}
		canon := v.String()
		again, err := clock.Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) = %v, whose String %q does not parse: %v", s, v, canon, err)
		}
		requireEqual(t, "reparsed", again, v)
		if got := again.String(); got != canon {
			t.Fatalf("String not canonical: %q then %q", canon, got)
		}
		js, _ := json.Marshal(v)
		var decoded clock.Vector
		if err := json.Unmarshal(js, &decoded); err != nil {
			t.Fatalf("Parse(%q) = %v, whose JSON %s does not decode: %v", s, v, js, err)
		}
		requireEqual(t, "via JSON", decoded, v)
	})
}

// FuzzUnmarshalJSON feeds UnmarshalJSON arbitrary bytes: it must never panic,
// and whatever it accepts must hold only valid ids and counters and
// round-trip through both encodings.
func FuzzUnmarshalJSON(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"b":2,"a":1}`, `{"a":0}`, `null`, `[]`, `1`,
		`{"a":1.5}`, `{"a":-1}`, `{"a":1e3}`, `{"a":"1"}`, `{"":1}`,
		`{"a,b":1}`, `{"a":9007199254740992}`, `{"a":9007199254740993}`,
		`{"a":1,"a":2}`, ` { "a" : 1 } `, `{"\u0061":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var v clock.Vector
		if err := json.Unmarshal(data, &v); err != nil {
			return
		}
		for id, n := range v {
			if !clock.ValidID(id) || n == 0 || n > clock.MaxCounter {
				t.Fatalf("Unmarshal(%s) accepted %q=%d", data, id, n)
			}
		}
		parsed, err := clock.Parse(v.String())
		if err != nil {
			t.Fatalf("Unmarshal(%s) = %q, which does not parse: %v", data, v, err)
		}
		requireEqual(t, "via String", parsed, v)
		js, _ := json.Marshal(v)
		var again clock.Vector
		if err := json.Unmarshal(js, &again); err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", js, err)
		}
		requireEqual(t, "via JSON", again, v)
	})
}
