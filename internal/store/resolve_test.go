package store_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/store"
)

// sib returns a sibling written by writer at ts whose clock has seen only
// writer's own n-th write.
func sib(ts int64, writer string, value string) store.Envelope {
	return store.Envelope{
		Value:     json.RawMessage(value),
		Version:   clock.Vector{writer: uint64(ts)},
		Timestamp: ts,
		Writer:    writer,
	}
}

func TestResolve(t *testing.T) {
	const u, m, x = store.Union, store.Merge, store.Max
	tests := []struct {
		name      string
		strategy  store.Strategy
		field     string
		sibs      []store.Envelope
		want      string // "" for no value
		applied   store.Strategy
		discarded []bool
	}{
		// lww
		{"lww/newest wins", store.LWW, "",
			[]store.Envelope{sib(1, "w1", `"old"`), sib(2, "w2", `"new"`)},
			`"new"`, store.LWW, []bool{true, false}},
		{"lww/newest wins given first", store.LWW, "",
			[]store.Envelope{sib(2, "w2", `"new"`), sib(1, "w1", `"old"`), sib(1, "w3", `"older"`)},
			`"new"`, store.LWW, []bool{false, true, true}},
		{"lww/timestamp tie to the greatest writer", store.LWW, "",
			[]store.Envelope{sib(5, "w2", `"b"`), sib(5, "w10", `"a"`)},
			`"b"`, store.LWW, []bool{false, true}},
		{"lww/writer tie to the greatest version", store.LWW, "",
			[]store.Envelope{
				{Value: json.RawMessage(`"v2"`), Version: clock.Vector{"w1": 2}, Timestamp: 5, Writer: "w1"},
				{Value: json.RawMessage(`"v1"`), Version: clock.Vector{"w1": 1, "w2": 1}, Timestamp: 5, Writer: "w1"},
			},
			`"v2"`, store.LWW, []bool{false, true}},
		{"lww/value kept as stored", store.LWW, "",
			[]store.Envelope{sib(1, "w1", `1`), sib(2, "w2", `{"b": 1, "a": "\u003c"}`)},
			`{"b": 1, "a": "\u003c"}`, store.LWW, []bool{true, false}},

		// union
		{"union/concurrent arrays read back as their union", u, "",
			[]store.Envelope{sib(2, "w2", `["b","c"]`), sib(1, "w1", `["a","b"]`)},
			`["a","b","c"]`, u, []bool{false, false}},
		{"union/first occurrence of an id wins", u, "",
			[]store.Envelope{
				sib(1, "w1", `[{"id":1,"v":"old"}]`),
				sib(2, "w2", `[{"id":2},{"v":"new","id":1}]`),
			},
			`[{"id":1,"v":"old"},{"id":2}]`, u, []bool{false, false}},
		{"union/ids compare as JSON", u, "",
			[]store.Envelope{sib(1, "w1", `[{"id":"1"},{"id":1}]`), sib(2, "w2", `[{"id":1.0},{"id":{"b":1,"a":2}},{"id":{"a":2,"b":1}}]`)},
			`[{"id":"1"},{"id":1},{"id":{"a":2,"b":1}}]`, u, []bool{false, false}},
		{"union/equality ignores key order and number spelling", u, "",
			[]store.Envelope{
				sib(1, "w1", `[{"a":1,"b":[2]}, 1.0, -0]`),
				sib(2, "w2", `[{"b":[2.00],"a":1e0}, 1, 1E0, 10e-1, 0.1e1, 0, 0.0]`),
			},
			`[{"a":1,"b":[2]},1.0,-0]`, u, []bool{false, false}},
		{"union/huge exponents compare exactly", u, "",
			[]store.Envelope{
				sib(1, "w1", `[1e99999999999999999999, 100, -1e99999999999999999999]`),
				sib(2, "w2", `[10e99999999999999999998, 0.1E100000000000000000000, 1e0000000000000000002, 1e99999999999999999998]`),
			},
			`[1e99999999999999999999,100,-1e99999999999999999999,1e99999999999999999998]`, u, []bool{false, false}},
		{"union/duplicates inside one array", u, "",
			[]store.Envelope{sib(1, "w1", `["a","a",null,null]`), sib(2, "w2", `[true,"a",true]`)},
			`["a",null,true]`, u, []bool{false, false}},
		{"union/objects without id by equality", u, "",
			[]store.Envelope{sib(1, "w1", `[{"x":1},{"x":2}]`), sib(2, "w2", `[{"x":1},{"id":null,"x":1}]`)},
			`[{"x":1},{"x":2},{"id":null,"x":1}]`, u, []bool{false, false}},
		{"union/three siblings, empty arrays", u, "",
			[]store.Envelope{sib(3, "w3", `[3]`), sib(1, "w1", `[]`), sib(2, "w2", ` [ 2 , 1 ] `)},
			`[2,1,3]`, u, []bool{false, false, false}},
		{"union/non-array falls back to lww", u, "",
			[]store.Envelope{sib(1, "w1", `["a"]`), sib(2, "w2", `"x"`)},
			`"x"`, store.LWW, []bool{true, false}},
		{"union/invalid JSON falls back to lww", u, "",
			[]store.Envelope{sib(1, "w1", `["a"]`), sib(2, "w2", `["b"`)},
			`["b"`, store.LWW, []bool{true, false}},
		{"union/trailing data falls back to lww", u, "",
			[]store.Envelope{sib(2, "w1", `["a"]`), sib(1, "w2", `["b"] ["c"]`)},
			`["a"]`, store.LWW, []bool{false, true}},

		// merge
		{"merge/deep merge, later timestamps win scalars", m, "",
			[]store.Envelope{
				sib(2, "w2", `{"status":"done","agents":{"a2":"busy","a1":{"load":2}},"tags":["y","x"],"m":2}`),
				sib(1, "w1", `{"status":"running","agents":{"a1":{"load":1,"cpu":4}},"tags":["x"],"n":1}`),
			},
			`{"agents":{"a1":{"cpu":4,"load":2},"a2":"busy"},"m":2,"n":1,"status":"done","tags":["x","y"]}`,
			m, []bool{false, false}},
		{"merge/coordination queue", m, "",
			[]store.Envelope{
				sib(1, "w1", `{"pending":["t1","t2"],"processing":[]}`),
				sib(2, "w2", `{"pending":["t2","t3"],"processing":["t1"]}`),
			},
			`{"pending":["t1","t2","t3"],"processing":["t1"]}`, m, []bool{false, false}},
		{"merge/later scalar replaces an object", m, "",
			[]store.Envelope{sib(1, "w1", `{"a":{"x":1}}`), sib(2, "w2", `{"a":5}`)},
			`{"a":5}`, m, []bool{false, false}},
		{"merge/later object replaces a scalar", m, "",
			[]store.Envelope{sib(1, "w1", `{"a":5,"b":[1]}`), sib(2, "w2", `{"a":{"x":1},"b":{"y":2}}`)},
			`{"a":{"x":1},"b":{"y":2}}`, m, []bool{false, false}},
		{"merge/later null wins", m, "",
			[]store.Envelope{sib(1, "w1", `{"a":1,"b":2}`), sib(2, "w2", `{"a":null}`)},
			`{"a":null,"b":2}`, m, []bool{false, false}},
		{"merge/three siblings oldest first", m, "",
			[]store.Envelope{sib(3, "w1", `{"v":3}`), sib(1, "w3", `{"v":1,"first":true}`), sib(2, "w2", `{"v":2,"l":[1]}`)},
			`{"first":true,"l":[1],"v":3}`, m, []bool{false, false, false}},
		{"merge/non-object falls back to lww", m, "",
			[]store.Envelope{sib(2, "w1", `{"a":1}`), sib(1, "w2", `[1]`)},
			`{"a":1}`, store.LWW, []bool{false, true}},

		// max
		{"max/largest number", x, "",
			[]store.Envelope{sib(1, "w1", `3`), sib(2, "w2", `10`), sib(3, "w3", `7`)},
			`10`, x, []bool{true, false, true}},
		{"max/big integers survive", x, "",
			[]store.Envelope{sib(2, "w1", `12345678901234567889`), sib(1, "w2", `12345678901234567890`)},
			`12345678901234567890`, x, []bool{true, false}},
		{"max/decimals beyond float64", x, "",
			[]store.Envelope{sib(2, "w1", `0.1`), sib(1, "w2", `0.10000000000000001`)},
			`0.10000000000000001`, x, []bool{true, false}},
		{"max/negatives and exponents", x, "",
			[]store.Envelope{sib(1, "w1", `-5`), sib(2, "w2", `-0.3e1`), sib(3, "w3", `-4`)},
			`-0.3e1`, x, []bool{true, false, true}},
		{"max/exponent beats digits", x, "",
			[]store.Envelope{sib(2, "w1", `999`), sib(1, "w2", `1E+3`)},
			`1E+3`, x, []bool{true, false}},
		{"max/huge exponents compare exactly", x, "",
			[]store.Envelope{
				sib(1, "w1", `-1e99999999999999999999999`),
				sib(2, "w2", `-1e99999999999999999999998`),
				sib(3, "w3", `-2`),
			},
			`-2`, x, []bool{true, true, false}},
		{"max/huge exponent beats a long integer", x, "",
			[]store.Envelope{sib(2, "w1", `99999999999999999999999999999`), sib(1, "w2", `1e99999999999999999999999`)},
			`1e99999999999999999999999`, x, []bool{true, false}},
		{"max/equal numbers go to lww order", x, "",
			[]store.Envelope{sib(2, "w1", `1.0`), sib(1, "w2", `1`)},
			`1.0`, x, []bool{false, true}},
		{"max/objects by field, older can win", x, "progress",
			[]store.Envelope{
				sib(2, "w1", `{"progress":40,"status":"late"}`),
				sib(1, "w2", `{"progress":75,"status":"early"}`),
			},
			`{"progress":75,"status":"early"}`, x, []bool{true, false}},
		{"max/field ties go to lww order", x, "progress",
			[]store.Envelope{sib(2, "w2", `{"progress":50.0,"status":"b"}`), sib(2, "w1", `{"progress":50,"status":"a"}`)},
			`{"progress":50.0,"status":"b"}`, x, []bool{false, true}},
		{"max/field missing falls back to lww", x, "progress",
			[]store.Envelope{sib(1, "w1", `{"progress":90}`), sib(2, "w2", `{"status":"x"}`)},
			`{"status":"x"}`, store.LWW, []bool{true, false}},
		{"max/non-numeric field falls back to lww", x, "progress",
			[]store.Envelope{sib(2, "w1", `{"progress":"90"}`), sib(1, "w2", `{"progress":10}`)},
			`{"progress":"90"}`, store.LWW, []bool{false, true}},
		{"max/objects without field fall back to lww", x, "",
			[]store.Envelope{sib(1, "w1", `{"progress":90}`), sib(2, "w2", `{"progress":10}`)},
			`{"progress":10}`, store.LWW, []bool{true, false}},
		{"max/number and object fall back to lww", x, "progress",
			[]store.Envelope{sib(1, "w1", `5`), sib(2, "w2", `{"progress":1}`)},
			`{"progress":1}`, store.LWW, []bool{true, false}},
		{"max/strings fall back to lww", x, "",
			[]store.Envelope{sib(1, "w1", `"9"`), sib(2, "w2", `"10"`)},
			`"10"`, store.LWW, []bool{true, false}},

		// siblings
		{"siblings/two stay unresolved", store.Siblings, "",
			[]store.Envelope{sib(1, "w1", `"a"`), sib(2, "w2", `"b"`)},
			"", store.Siblings, []bool{false, false}},
		{"siblings/one is its value", store.Siblings, "",
			[]store.Envelope{sib(1, "w1", `"a"`)},
			`"a"`, store.Siblings, []bool{false}},

		// a single sibling is returned as it is, whatever the strategy
		{"single/union", u, "", []store.Envelope{sib(1, "w1", `"not an array"`)}, `"not an array"`, u, []bool{false}},
		{"single/merge", m, "", []store.Envelope{sib(1, "w1", `{"b":1, "a":2}`)}, `{"b":1, "a":2}`, m, []bool{false}},
		{"single/max", x, "progress", []store.Envelope{sib(1, "w1", `[1]`)}, `[1]`, x, []bool{false}},

		// text survives: unicode, HTML characters, escapes
		{"unicode/union", u, "",
			[]store.Envelope{
				sib(1, "w1", `["<a>&b","héllo ☃","\u003c\u0026","tab\there"]`),
				sib(2, "w2", `["quote\"\\","\u2028","\u0001","<&>","𝄞"]`),
			},
			`["<a>&b","héllo ☃","<&","tab\there","quote\"\\","\u2028","\u0001","<&>","𝄞"]`,
			u, []bool{false, false}},
		{"unicode/merge keys", m, "",
			[]store.Envelope{sib(1, "w1", `{"ü<>":"&","a":"\n"}`), sib(2, "w2", `{"日本":"語"}`)},
			`{"a":"\n","ü<>":"&","日本":"語"}`, m, []bool{false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resolved := tt.want != ""
			got, err := store.Resolve(tt.sibs, tt.strategy, tt.field)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if string(got.Value) != tt.want {
				t.Errorf("Value = %s, want %s", got.Value, tt.want)
			}
			if got.Resolved != resolved {
				t.Errorf("Resolved = %v, want %v", got.Resolved, resolved)
			}
			if got.Strategy != tt.applied {
				t.Errorf("Strategy = %q, want %q", got.Strategy, tt.applied)
			}
			if !slices.Equal(got.Discarded, tt.discarded) {
				t.Errorf("Discarded = %v, want %v", got.Discarded, tt.discarded)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	sibs := []store.Envelope{sib(1, "w1", `1`), sib(2, "w2", `2`)}
	for _, s := range []store.Strategy{"", "LWW", "custom"} {
		if _, err := store.Resolve(sibs, s, ""); !errors.Is(err, store.ErrUnknownStrategy) {
			t.Errorf("Resolve(%q) error = %v, want ErrUnknownStrategy", s, err)
		}
	}
	if _, err := store.Resolve(sibs[:1], "nope", ""); !errors.Is(err, store.ErrUnknownStrategy) {
		t.Errorf("one sibling, unknown strategy: error = %v, want ErrUnknownStrategy", err)
	}
	if _, err := store.Resolve(nil, store.LWW, ""); err == nil {
		t.Error("Resolve(no siblings) succeeded")
	}
}

// randomValue returns a JSON value of the kind strategies combine, drawn so
// that siblings often share elements, keys and ids.
func randomValue(r *rand.Rand) string {
	scalar := func() string {
		switch r.IntN(6) {
		case 0:
			return fmt.Sprint(r.IntN(4))
		case 1:
			return fmt.Sprintf("%d.0", r.IntN(4))
		case 2:
			return fmt.Sprintf("%q", []string{"a", "<b>", "é"}[r.IntN(3)])
		case 3:
			return fmt.Sprintf(`{"id":%d,"v":%d}`, r.IntN(3), r.IntN(9))
		case 4:
			return fmt.Sprintf(`{"k%d":[%d]}`, r.IntN(2), r.IntN(3))
		}
		return "null"
	}
	list := func() string {
		parts := make([]string, r.IntN(4))
		for i := range parts {
			parts[i] = scalar()
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	switch r.IntN(10) {
	case 0, 1, 2:
		return list()
	case 3, 4, 5:
		var parts []string
		for _, k := range []string{"a", "b", "c", "progress"} {
			switch r.IntN(4) {
			case 0:
				parts = append(parts, fmt.Sprintf("%q:%s", k, list()))
			case 1:
				parts = append(parts, fmt.Sprintf(`%q:{"x":%s,"y":%s}`, k, scalar(), scalar()))
			case 2:
				parts = append(parts, fmt.Sprintf("%q:%s", k, scalar()))
			}
		}
		return "{" + strings.Join(parts, ",") + "}"
	case 6, 7:
		return fmt.Sprintf("%d.%d", r.IntN(100)-50, r.IntN(10))
	}
	return scalar()
}

// TestResolveDeterministic resolves random siblings in many orders: the value
// must be byte-identical and the same siblings discarded, so that every
// instance answers the same whatever order Redis returned the siblings in.
func TestResolveDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	strategies := []store.Strategy{store.LWW, store.Union, store.Merge, store.Max, store.Siblings}
	for round := range 300 {
		sibs := make([]store.Envelope, 1+r.IntN(6))
		for i := range sibs {
			// Few timestamps and writers, so ties are common.
			writer := fmt.Sprintf("w%d", r.IntN(3))
			sibs[i] = store.Envelope{
				Value:     json.RawMessage(randomValue(r)),
				Version:   clock.Vector{writer: uint64(i + 1), "w9": uint64(r.IntN(2))},
				Timestamp: int64(r.IntN(3)),
				Writer:    writer,
			}
		}
		for _, s := range strategies {
			field := ""
			if s == store.Max && r.IntN(2) == 0 {
				field = "progress"
			}
			want, err := store.Resolve(sibs, s, field)
			if err != nil {
				t.Fatal(err)
			}
			if want.Value != nil && !json.Valid(want.Value) {
				t.Fatalf("round %d %s: invalid JSON %s", round, s, want.Value)
			}
			for range 10 {
				perm := r.Perm(len(sibs))
				shuffled := make([]store.Envelope, len(sibs))
				for i, p := range perm {
					shuffled[i] = sibs[p]
				}
				got, err := store.Resolve(shuffled, s, field)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Value, want.Value) || got.Strategy != want.Strategy || got.Resolved != want.Resolved {
					t.Fatalf("round %d %s: %s (%s) in one order, %s (%s) in another; siblings %+v",
						round, s, want.Value, want.Strategy, got.Value, got.Strategy, sibs)
				}
				for i, p := range perm {
					if got.Discarded[i] != want.Discarded[p] {
						t.Fatalf("round %d %s: sibling %d discarded %v in one order, %v in another",
							round, s, p, want.Discarded[p], got.Discarded[i])
					}
				}
			}
		}
	}
}

// TestMaxAgainstBigRat checks max's exact comparison against big.Rat on
// numbers spelt every way JSON allows: leading and trailing zeros, fractions,
// exponents, negative zero.
func TestMaxAgainstBigRat(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	digits := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "0001239"[r.IntN(7)]
		}
		return string(b)
	}
	number := func() string {
		s := ""
		if r.IntN(2) == 0 {
			s = "-"
		}
		if r.IntN(3) == 0 {
			s += "0"
		} else {
			s += string("123456789"[r.IntN(9)]) + digits(r.IntN(4))
		}
		if r.IntN(2) == 0 {
			s += "." + digits(1+r.IntN(4))
		}
		if r.IntN(2) == 0 {
			s += []string{"e", "E", "e+", "e-", "E-0"}[r.IntN(5)] + fmt.Sprint(r.IntN(5))
		}
		return s
	}
	for range 5000 {
		a, b := number(), number()
		ra, _ := new(big.Rat).SetString(a)
		rb, _ := new(big.Rat).SetString(b)
		// b is the newer sibling, so it wins ties.
		want := b
		if ra.Cmp(rb) > 0 {
			want = a
		}
		res, err := store.Resolve([]store.Envelope{sib(1, "w1", a), sib(2, "w2", b)}, store.Max, "")
		if err != nil || res.Strategy != store.Max {
			t.Fatalf("max(%s, %s) = %+v, %v", a, b, res, err)
		}
		if string(res.Value) != want {
			t.Fatalf("max(%s, %s) = %s, want %s", a, b, res.Value, want)
		}
		// Union drops b exactly when it equals a.
		res, err = store.Resolve([]store.Envelope{sib(1, "w1", "["+a+"]"), sib(2, "w2", "["+b+"]")}, store.Union, "")
		if err != nil {
			t.Fatal(err)
		}
		wantUnion := "[" + a + "," + b + "]"
		if ra.Cmp(rb) == 0 {
			wantUnion = "[" + a + "]"
		}
		if string(res.Value) != wantUnion {
			t.Fatalf("union([%s], [%s]) = %s, want %s", a, b, res.Value, wantUnion)
		}
	}
}

// benchSiblings returns 32 concurrent siblings holding what strategy s is
// used for.
func benchSiblings(s store.Strategy) []store.Envelope {
	sibs := make([]store.Envelope, 32)
	for i := range sibs {
		writer := fmt.Sprintf("worker-%02d", i)
		var v string
		switch s {
		case store.Union:
			items := make([]string, 5)
			for j := range items {
				id := (i*3 + j) % 40
				items[j] = fmt.Sprintf(`{"id":"task-%d","priority":%d,"owner":%q}`, id, id%5, writer)
			}
			v = "[" + strings.Join(items, ",") + "]"
		case store.Merge:
			v = fmt.Sprintf(`{"agents":{%q:{"status":"busy","load":%d,"tasks":["t%d","t%d"]}},`+
				`"meta":{"updated":%d,"by":%q},"pending":["t%d","t%d"]}`,
				writer, i%7, i, i+1, 1764170000000+i, writer, i%9, (i+4)%9)
		case store.Max:
			v = fmt.Sprintf(`{"progress":%d,"status":"running","detail":"step %d of 100"}`, (i*37)%101, i)
		default:
			v = fmt.Sprintf(`{"status":"running","step":%d,"writer":%q}`, i, writer)
		}
		sibs[i] = store.Envelope{
			Value:     json.RawMessage(v),
			Version:   clock.Vector{writer: uint64(i + 1), "worker-base": 7},
			Timestamp: 1764170000000 + int64((i*7)%32),
			Writer:    writer,
		}
	}
	return sibs
}

func BenchmarkResolve(b *testing.B) {
	for _, s := range []store.Strategy{store.LWW, store.Union, store.Merge, store.Max, store.Siblings} {
		b.Run(string(s), func(b *testing.B) {
			sibs := benchSiblings(s)
			field := ""
			if s == store.Max {
				field = "progress"
			}
			res, err := store.Resolve(sibs, s, field)
			if err != nil || res.Strategy != s {
				b.Fatalf("Resolve = %+v, %v; want strategy %s applied", res, err, s)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := store.Resolve(sibs, s, field); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEnvelope(b *testing.B) {
	version := clock.Vector{}
	for i := range 8 {
		version[fmt.Sprintf("worker-%d", i)] = uint64(1000 + i*17)
	}
	value := `{"status":"running","assigned_to":"worker-3","priority":5,"attempt":2,` +
		`"started_at":1764170000000,"tags":["gpu","batch","nightly"],` +
		`"progress":{"done":412,"total":1000,"eta_ms":93000},"note":"re-queued after timeout"}`
	env := store.Envelope{Value: json.RawMessage(value), Version: version, Timestamp: 1764170000123, Writer: "worker-3"}
	blob, err := json.Marshal(env)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(env); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var e store.Envelope
			if err := json.Unmarshal(blob, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
