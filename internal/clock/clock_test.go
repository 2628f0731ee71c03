package clock_test

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/clock"
)

// mustParse parses s or fails the test.
func mustParse(tb testing.TB, s string) clock.Vector {
	tb.Helper()
	v, err := clock.Parse(s)
	if err != nil {
		tb.Fatalf("Parse(%q): %v", s, err)
	}
	return v
}

// assertEqual fails the test unless got and want are the same clock: Compare
// says Equal and both encode to the same canonical string.
func assertEqual(tb testing.TB, got, want clock.Vector) {
	tb.Helper()
	if o := got.Compare(want); o != clock.Equal {
		tb.Errorf("got %q, want %q: Compare = %v", got, want, o)
	}
	if g, w := got.String(), want.String(); g != w {
		tb.Errorf("got canonical %q, want %q", g, w)
	}
}

func TestOrderingString(t *testing.T) {
	for _, tc := range []struct {
		o    clock.Ordering
		want string
	}{
		{clock.Equal, "equal"},
		{clock.Before, "before"},
		{clock.After, "after"},
		{clock.Concurrent, "concurrent"},
		{clock.Ordering(7), "Ordering(7)"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got, want := tc.o.String(), tc.want; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b clock.Vector
		want clock.Ordering
	}{
		{"both empty", clock.Vector{}, clock.Vector{}, clock.Equal},
		{"both nil", nil, nil, clock.Equal},
		{"nil and empty", nil, clock.Vector{}, clock.Equal},
		{"same", clock.Vector{"a": 1, "b": 2}, clock.Vector{"a": 1, "b": 2}, clock.Equal},
		{"missing id is zero", clock.Vector{"a": 1}, clock.Vector{"a": 1, "b": 0}, clock.Equal},
		{"zero is missing id", clock.Vector{"a": 1, "b": 0}, clock.Vector{"a": 1}, clock.Equal},
		{"all zero and empty", clock.Vector{"a": 0, "b": 0}, nil, clock.Equal},
		{"empty before anything", clock.Vector{}, clock.Vector{"a": 1}, clock.Before},
		{"anything after empty", clock.Vector{"a": 1}, nil, clock.After},
		{"one counter lower", clock.Vector{"a": 1, "b": 2}, clock.Vector{"a": 2, "b": 2}, clock.Before},
		{"one counter higher", clock.Vector{"a": 3, "b": 2}, clock.Vector{"a": 2, "b": 2}, clock.After},
		{"extra id on the right", clock.Vector{"a": 1}, clock.Vector{"a": 1, "b": 1}, clock.Before},
		{"extra id on the left", clock.Vector{"a": 1, "b": 1}, clock.Vector{"a": 1}, clock.After},
		{"zero on the left, set on the right", clock.Vector{"a": 1, "b": 0}, clock.Vector{"a": 1, "b": 1}, clock.Before},
		{"disjoint ids", clock.Vector{"a": 1}, clock.Vector{"b": 1}, clock.Concurrent},
		{"crossed counters", clock.Vector{"a": 2, "b": 1}, clock.Vector{"a": 1, "b": 2}, clock.Concurrent},
		{"extra id each side", clock.Vector{"a": 1, "b": 1}, clock.Vector{"a": 1, "c": 1}, clock.Concurrent},
		{"higher here, missing there", clock.Vector{"a": 2}, clock.Vector{"a": 1, "b": 1}, clock.Concurrent},
		// The design document's example: a happened-before b.
		{"seed example", clock.Vector{"w1": 1, "w2": 1}, clock.Vector{"w1": 2, "w2": 2}, clock.Before},
		{"seed example reversed", clock.Vector{"w1": 2, "w2": 2}, clock.Vector{"w1": 1, "w2": 1}, clock.After},
		{"max counter", clock.Vector{"a": clock.MaxCounter - 1}, clock.Vector{"a": clock.MaxCounter}, clock.Before},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := tc.a.Compare(tc.b), tc.want; got != want {
				t.Errorf("%v.Compare(%v): got %v, want %v", tc.a, tc.b, got, want)
			}
		})
	}
}

func TestDescends(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b clock.Vector
		want bool
	}{
		{"equal", clock.Vector{"a": 1}, clock.Vector{"a": 1}, true},
		{"equal with zeros", clock.Vector{"a": 1, "b": 0}, clock.Vector{"a": 1}, true},
		{"after", clock.Vector{"a": 2, "b": 1}, clock.Vector{"a": 1}, true},
		{"anything descends empty", clock.Vector{"a": 1}, nil, true},
		{"empty descends empty", nil, clock.Vector{}, true},
		{"before", clock.Vector{"a": 1}, clock.Vector{"a": 2}, false},
		{"empty does not descend", clock.Vector{}, clock.Vector{"a": 1}, false},
		{"concurrent", clock.Vector{"a": 1}, clock.Vector{"b": 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := tc.a.Descends(tc.b), tc.want; got != want {
				t.Errorf("%v.Descends(%v): got %v, want %v", tc.a, tc.b, got, want)
			}
		})
	}
}

func TestTick(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    clock.Vector
		id   string
		want string
	}{
		{"nil vector", nil, "w1", "w1=1"},
		{"new id", clock.Vector{"a": 3}, "b", "a=3,b=1"},
		{"existing id", clock.Vector{"a": 3, "b": 1}, "a", "a=4,b=1"},
		{"zero counter", clock.Vector{"a": 0}, "a", "a=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.v.String()
			got := tc.v.Tick(tc.id)
			if g, w := got.String(), tc.want; g != w {
				t.Errorf("got %q, want %q", g, w)
			}
			if g, w := got.Compare(tc.v), clock.After; g != w {
				t.Errorf("Tick result compared to receiver: got %v, want %v", g, w)
			}
			// The result must not alias the receiver.
			got[tc.id] += 100
			got["zz"] = 1
			if g, w := tc.v.String(), before; g != w {
				t.Errorf("receiver changed through Tick's result: got %q, want %q", g, w)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b clock.Vector
		want string
	}{
		{"both nil", nil, nil, ""},
		{"nil and value", nil, clock.Vector{"a": 1}, "a=1"},
		{"value and nil", clock.Vector{"a": 1}, nil, "a=1"},
		{"disjoint", clock.Vector{"a": 1}, clock.Vector{"b": 2}, "a=1,b=2"},
		{"element-wise max", clock.Vector{"a": 3, "b": 1}, clock.Vector{"a": 1, "b": 5, "c": 2}, "a=3,b=5,c=2"},
		{"zeros dropped", clock.Vector{"a": 0}, clock.Vector{"b": 0}, ""},
		{"seed example", clock.Vector{"w1": 1, "w2": 1}, clock.Vector{"w1": 2, "w2": 2}, "w1=2,w2=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tc.a.String(), tc.b.String()
			got := tc.a.Merge(tc.b)
			if g, w := got.String(), tc.want; g != w {
				t.Errorf("got %q, want %q", g, w)
			}
			if !got.Descends(tc.a) || !got.Descends(tc.b) {
				t.Errorf("%v does not descend both %v and %v", got, tc.a, tc.b)
			}
			// The result must alias neither argument.
			for id := range got {
				got[id] += 100
			}
			got["zz"] = 1
			if g, w := tc.a.String(), a; g != w {
				t.Errorf("receiver changed through Merge's result: got %q, want %q", g, w)
			}
			if g, w := tc.b.String(), b; g != w {
				t.Errorf("argument changed through Merge's result: got %q, want %q", g, w)
			}
		})
	}
}

func TestClone(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    clock.Vector
		want string
	}{
		{"nil", nil, ""},
		{"empty", clock.Vector{}, ""},
		{"values", clock.Vector{"a": 1, "b": 2}, "a=1,b=2"},
		{"zeros dropped", clock.Vector{"a": 0, "b": 2}, "b=2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.v.String()
			got := tc.v.Clone()
			if got == nil {
				t.Fatal("Clone returned nil; callers write into the result")
			}
			assertEqual(t, got, tc.v)
			if g, w := got.String(), tc.want; g != w {
				t.Errorf("got %q, want %q", g, w)
			}
			for id := range got {
				got[id]++
			}
			got["zz"] = 7
			if g, w := tc.v.String(), before; g != w {
				t.Errorf("original changed through the clone: got %q, want %q", g, w)
			}
		})
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    clock.Vector
		want string
	}{
		{"nil", nil, ""},
		{"empty", clock.Vector{}, ""},
		{"only zeros", clock.Vector{"a": 0}, ""},
		{"one", clock.Vector{"w1": 3}, "w1=3"},
		{"sorted", clock.Vector{"b": 2, "a": 1}, "a=1,b=2"},
		{"zeros omitted", clock.Vector{"c": 3, "b": 0, "a": 1}, "a=1,c=3"},
		{"byte order", clock.Vector{"b": 1, "B": 2, "a.b": 3, "a": 4, "1": 5}, "1=5,B=2,a=4,a.b=3,b=1"},
		{"every id character", clock.Vector{"Az09._:@-": 9}, "Az09._:@-=9"},
		{"max counter", clock.Vector{"a": clock.MaxCounter}, "a=9007199254740992"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := tc.v.String(), tc.want; got != want {
				t.Errorf("got %q, want %q", got, want)
			}
			// The canonical form parses back to the same clock.
			assertEqual(t, mustParse(t, tc.want), tc.v)
		})
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want clock.Vector
	}{
		{"", clock.Vector{}},
		{"a=1", clock.Vector{"a": 1}},
		{"a=1,b=2", clock.Vector{"a": 1, "b": 2}},
		{"b=2,a=1", clock.Vector{"a": 1, "b": 2}}, // any order
		{"a=0,b=2", clock.Vector{"b": 2}},
		{"a=0", clock.Vector{}},
		{"a=007", clock.Vector{"a": 7}},
		{"Az09._:@-=1", clock.Vector{"Az09._:@-": 1}},
		{strings.Repeat("x", clock.MaxIDLen) + "=1", clock.Vector{strings.Repeat("x", clock.MaxIDLen): 1}},
		{"a=9007199254740992", clock.Vector{"a": clock.MaxCounter}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := mustParse(t, tc.in)
			assertEqual(t, got, tc.want)
			for id, n := range got {
				if n == 0 {
					t.Errorf("Parse kept a zero counter for %q", id)
				}
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	for _, in := range []string{
		",",
		"a=1,",
		",a=1",
		"a=1,,b=2",
		"a",     // missing '='
		"a=1,b", // missing '=' in the second pair
		"=1",    // empty id
		"a=",    // empty counter
		"a==1",  // counter "=1"
		"a=1=2", // counter "1=2"
		"a b=1", // space in the id
		" a=1",  // leading space
		"a=1 ",  // trailing space
		"a= 1",  // space in the counter
		"a/b=1", // '/' is not in the alphabet
		"é=1",   // nor is non-ASCII
		"a#=1",  // nor '#'
		strings.Repeat("x", clock.MaxIDLen+1) + "=1",
		"a=1,a=2",                // repeated id
		"a=1,b=1,a=1",            // repeated id, not adjacent
		"a=0,a=1",                // repeated id whose first counter is zero
		"a=1,a=0",                // repeated id whose second counter is zero
		"a=0,a=0",                // repeated id, both zero
		"a=x",                    // non-numeric
		"a=1.5",                  // fraction
		"a=1e3",                  // exponent
		"a=0x10",                 // hex
		"a=1_000",                // digit separators
		"a=-1",                   // negative
		"a=+1",                   // sign
		"a=9007199254740993",     // above 2^53
		"a=18446744073709551615", // fits uint64 but above 2^53
		"a=18446744073709551616", // overflows uint64
	} {
		t.Run(in, func(t *testing.T) {
			v, err := clock.Parse(in)
			if !errors.Is(err, clock.ErrInvalid) {
				t.Fatalf("Parse(%q) = %v, %v; want an error wrapping ErrInvalid", in, v, err)
			}
			if v != nil {
				t.Errorf("Parse(%q) returned %v with its error; want nil", in, v)
			}
		})
	}
}

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"w1", true},
		{"a", true},
		{"Az09._:@-", true},
		{".", true}, // writer ids are not path segments
		{strings.Repeat("x", clock.MaxIDLen), true},
		{"", false},
		{strings.Repeat("x", clock.MaxIDLen+1), false},
		{"a,b", false},
		{"a=b", false},
		{"a b", false},
		{"a/b", false},
		{"é", false},
		{`a"b`, false},
		{"a\x00", false},
	} {
		t.Run(tc.id, func(t *testing.T) {
			if got, want := clock.ValidID(tc.id), tc.want; got != want {
				t.Errorf("ValidID(%q): got %v, want %v", tc.id, got, want)
			}
		})
	}
}

func TestMarshalJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    clock.Vector
		want string
	}{
		{"nil", nil, `{}`},
		{"empty", clock.Vector{}, `{}`},
		{"only zeros", clock.Vector{"a": 0}, `{}`},
		{"one", clock.Vector{"w1": 3}, `{"w1":3}`},
		{"sorted, zeros omitted", clock.Vector{"c": 3, "b": 0, "a": 1}, `{"a":1,"c":3}`},
		{"every id character", clock.Vector{"Az09._:@-": 1}, `{"Az09._:@-":1}`},
		{"max counter", clock.Vector{"a": clock.MaxCounter}, `{"a":9007199254740992}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.v.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(b), tc.want; got != want {
				t.Errorf("got %s, want %s", got, want)
			}
			// encoding/json must use the same encoding, also inside a struct.
			b, err = json.Marshal(struct {
				V clock.Vector `json:"v"`
			}{tc.v})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := string(b), `{"v":`+tc.want+`}`; got != want {
				t.Errorf("in a struct: got %s, want %s", got, want)
			}
		})
	}
}

func TestUnmarshalJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want clock.Vector
	}{
		{`{}`, clock.Vector{}},
		{`{"w1":3}`, clock.Vector{"w1": 3}},
		{`{"b":2,"a":1}`, clock.Vector{"a": 1, "b": 2}},
		{` { "a" : 1 , "b" : 0 } `, clock.Vector{"a": 1}},
		{`{"a":0}`, clock.Vector{}},
		{`{"Az09._:@-":1}`, clock.Vector{"Az09._:@-": 1}},
		{`{"a":9007199254740992}`, clock.Vector{"a": clock.MaxCounter}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := clock.Vector{"stale": 9} // decoding replaces, never merges
			if err := json.Unmarshal([]byte(tc.in), &got); err != nil {
				t.Fatal(err)
			}
			assertEqual(t, got, tc.want)
			for id, n := range got {
				if n == 0 {
					t.Errorf("UnmarshalJSON kept a zero counter for %q", id)
				}
			}
		})
	}
}

func TestUnmarshalJSONInvalid(t *testing.T) {
	for _, in := range []string{
		``,
		`{`,
		`null`,
		`[]`,
		`[1]`,
		`"a=1"`,
		`1`,
		`true`,
		`{"a":1.5}`,                  // fraction
		`{"a":1.0}`,                  // fraction, even a whole one
		`{"a":1e3}`,                  // exponent
		`{"a":-1}`,                   // negative
		`{"a":-0}`,                   // negative zero
		`{"a":9007199254740993}`,     // 2^53+1
		`{"a":18446744073709551616}`, // overflows uint64
		`{"a":1e400}`,                // overflows float64
		`{"a":"1"}`,                  // a string, not a number
		`{"a":null}`,
		`{"a":true}`,
		`{"a":{}}`,
		`{"a":[1]}`,
		`{"":1}`,    // empty id
		`{"a b":1}`, // space
		`{"a,b":1}`, // ',' would break the text encoding
		`{"a=b":1}`, // so would '='
		`{"é":1}`,   // non-ASCII
		`{"` + strings.Repeat("x", clock.MaxIDLen+1) + `":1}`,
		`{"a":1}x`, // trailing garbage
	} {
		t.Run(in, func(t *testing.T) {
			got := clock.Vector{"keep": 1}
			err := json.Unmarshal([]byte(in), &got)
			if err == nil {
				t.Fatalf("Unmarshal(%s) = %v, want an error", in, got)
			}
			// Called directly, the error wraps ErrInvalid; through
			// json.Unmarshal, syntax errors come from encoding/json itself.
			var direct clock.Vector
			if err := direct.UnmarshalJSON([]byte(in)); !errors.Is(err, clock.ErrInvalid) && json.Valid([]byte(in)) {
				t.Errorf("UnmarshalJSON(%s) = %v, want an error wrapping ErrInvalid", in, err)
			}
			// A failed decode leaves the destination alone.
			if g, w := got.String(), "keep=1"; g != w {
				t.Errorf("destination changed by a failed decode: got %q, want %q", g, w)
			}
		})
	}
}

// Of several bad entries the error names the first in the text, every
// time: a map's order would name any of them (found by FuzzDecodePut,
// which compares the error texts of two decoders). A writer named a second
// time is a bad entry.
func TestUnmarshalJSONNamesTheFirstBadEntry(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{`{"A!":3,"":2,"b c":1}`, `bad writer id "A!"`},
		{`{"a":1,"b":-1,"c":"x","":2}`, `counter for "b" must be`},
		{`{"a":"x","a":1}`, `counter for "a" must be`},
		{`{"a":1,"b":2,"a":3,"c":-1}`, `writer "a" named twice`},
		{`{"c":-1,"a":1,"a":3}`, `counter for "c" must be`},
		{`{"a":1,"b":1,"b":1,"a":1}`, `writer "b" named twice`},
	} {
		for range 50 {
			var v clock.Vector
			if err := v.UnmarshalJSON([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("UnmarshalJSON(%s) = %v, want an error with %s", tt.in, err, tt.want)
			}
		}
	}
	v := clock.Vector{"keep": 1} // a writer named twice: refused, whatever its counters
	if err := v.UnmarshalJSON([]byte(`{"a":4,"a":4,"b":0}`)); !errors.Is(err, clock.ErrInvalid) || v.String() != "keep=1" {
		t.Errorf("UnmarshalJSON of a repeated writer = %q, %v; want ErrInvalid, the vector unchanged", v.String(), err)
	}
}

func TestMarshalJSONRoundTrip(t *testing.T) {
	for _, v := range []clock.Vector{
		nil,
		{"a": 1},
		{"w1": 2, "w2": 2},
		{"x": clock.MaxCounter, "y": 1, "z": 0},
	} {
		t.Run(v.String(), func(t *testing.T) {
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			var got clock.Vector
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("Unmarshal(%s): %v", b, err)
			}
			assertEqual(t, got, v)
		})
	}
}

// TestCounterLimit pins the limit to 2^53 in both encodings.
func TestCounterLimit(t *testing.T) {
	if got, want := uint64(clock.MaxCounter), uint64(1)<<53; got != want {
		t.Fatalf("MaxCounter = %d, want %d", got, want)
	}
	limit := strconv.FormatUint(clock.MaxCounter, 10)
	over := strconv.FormatUint(clock.MaxCounter+1, 10)
	if _, err := clock.Parse("a=" + limit); err != nil {
		t.Errorf("Parse at the limit: %v", err)
	}
	if _, err := clock.Parse("a=" + over); !errors.Is(err, clock.ErrInvalid) {
		t.Errorf("Parse above the limit: got %v, want ErrInvalid", err)
	}
	var v clock.Vector
	if err := v.UnmarshalJSON([]byte(`{"a":` + limit + `}`)); err != nil {
		t.Errorf("UnmarshalJSON at the limit: %v", err)
	}
	if err := v.UnmarshalJSON([]byte(`{"a":` + over + `}`)); !errors.Is(err, clock.ErrInvalid) {
		t.Errorf("UnmarshalJSON above the limit: got %v, want ErrInvalid", err)
	}
}
