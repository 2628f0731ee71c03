package clock_test

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/memsync/memsync/internal/clock"
)

// benchPair returns two concurrent clocks over the same eight writers, the
// shape of a contended key: each is ahead on half the writers, so Compare
// must look at every id and Merge must take from both.
func benchPair(tb testing.TB) (a, b clock.Vector) {
	tb.Helper()
	a, b = clock.Vector{}, clock.Vector{}
	for i := range 8 {
		id := "worker-" + strconv.Itoa(i)
		a[id] = uint64(1000 + i)
		b[id] = uint64(1000 + i)
		if i%2 == 0 {
			a[id] += 5
		} else {
			b[id] += 5
		}
	}
	if o := a.Compare(b); o != clock.Concurrent {
		tb.Fatalf("bench clocks are %v, want concurrent", o)
	}
	return a, b
}

var (
	sinkOrdering clock.Ordering
	sinkVector   clock.Vector
	sinkString   string
	sinkBytes    []byte
)

func BenchmarkCompare(b *testing.B) {
	x, y := benchPair(b)
	b.ReportAllocs()
	for b.Loop() {
		sinkOrdering = x.Compare(y)
	}
}

func BenchmarkMerge(b *testing.B) {
	x, y := benchPair(b)
	b.ReportAllocs()
	for b.Loop() {
		sinkVector = x.Merge(y)
	}
}

func BenchmarkString(b *testing.B) {
	x, _ := benchPair(b)
	b.ReportAllocs()
	for b.Loop() {
		sinkString = x.String()
	}
}

func BenchmarkParse(b *testing.B) {
	x, _ := benchPair(b)
	s := x.String()
	b.ReportAllocs()
	for b.Loop() {
		v, err := clock.Parse(s)
		if err != nil {
			b.Fatal(err)
		}
		sinkVector = v
	}
}

func BenchmarkMarshalJSON(b *testing.B) {
	x, _ := benchPair(b)
	b.ReportAllocs()
	for b.Loop() {
		js, err := x.MarshalJSON()
		if err != nil {
			b.Fatal(err)
		}
		sinkBytes = js
	}
}

func BenchmarkUnmarshalJSON(b *testing.B) {
	x, _ := benchPair(b)
	js, err := json.Marshal(x)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		var v clock.Vector
		if err := v.UnmarshalJSON(js); err != nil {
			b.Fatal(err)
		}
		sinkVector = v
	}
}
