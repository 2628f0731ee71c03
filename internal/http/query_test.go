package http

// An internal test: queryValue must read a query exactly as url.ParseQuery
// and Values.Get do.

import (
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

func TestQueryValueMatchesParseQuery(t *testing.T) {
	pieces := []string{"ns", "consistent", "siblings", "resolve", "=", "=", "&", "&", ";", "%", "%6E", "%73", "%zz",
		"+", "true", "x", "", "%3D", "%26", "n", "s"}
	rng := rand.New(rand.NewPCG(3, 4))
	queries := []string{"", "ns=a", "ns=a&ns=b", "ns", "ns=", "&&ns=a", "n%73=b", "ns=a;b", "ns=%zz&ns=c",
		"consistent=true", "consistent=true&ns=x", "x=1&ns=a+b", "ns%3D=1", strings.Repeat("a=1&", 300) + "ns=far"}
	for range 5000 {
		var b strings.Builder
		for range rng.IntN(8) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		queries = append(queries, b.String())
	}
	for _, q := range queries {
		want, _ := url.ParseQuery(q)
		for _, name := range []string{"ns", "consistent", "siblings", "resolve", "x"} {
			if got := queryValue(q, name); got != want.Get(name) {
				t.Errorf("queryValue(%q, %q) = %q, ParseQuery says %q", q, name, got, want.Get(name))
			}
		}
	}
}
