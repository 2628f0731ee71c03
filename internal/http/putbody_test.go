package http

// An internal test: it compares the unexported hand scanner of write
// bodies with the encoding/json path it stands in for.

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// putBodies are write bodies the scanner should take, and some it must
// leave to encoding/json.
var putBodies = []string{
	// Taken by the scanner.
	`{"value":{"status":"running","progress":42}}`,
	`{"value":null}`,
	`{"value":1,"ttl":60}`,
	`{"value":"x","ttl":0}`,
	`{"value":"x","ttl":-5}`,
	`{"value":"x","ttl":-0}`,
	`{"value":"x","ttl":null}`,
	`{"value":"x","ttl":999999999999999999}`,
	`{"ttl":60,"value":[1,2,{"a":"}]\"{["}]}`,
	`{"value":{"a":1},"context":{"w1":3,"w2":1}}`,
	`{"value":{"a":1},"context":{}}`,
	`{"value":{"a":1},"context":null}`,
	`{"context":{"w1":0},"value":true,"ttl":1}`,
	` { "value" : { "a" : [ 1 , 2 ] } , "ttl" : 7 , "context" : { "w1" : 1 } } ` + "\n",
	"\t{\r\n\"value\"\t:\n\"a\\\"b\\\\\"}\n",
	`{"value":"\u00e9\ud83d\ude00","ttl":1}`,
	`{"value":-1.5e3}`,
	`{"value":"é日本"}`,
	`{"value":false}`,
	`{"value":{}}`,
	`{"value":[]}`,
	`{}`,
	`{"ttl":3}`,
	// Left to encoding/json, which accepts them...
	`{"Value":1}`,
	`{"VALUE":1,"TTL":3}`,
	`{"value":1,"value":2}`,
	`{"value":1,"ttl":5,"ttl":null}`,
	`{"va\u006cue":1}`,
	`{"value":1,"ttl":1e3}`,
	`{"value":1,"ttl":1000000000000000000}`,
	`{"value":1,"context":{"w1":1},"context":{"w2":2}}`,
	// ...or refuses them.
	``,
	`   `,
	`null`,
	`[]`,
	`"value"`,
	`{`,
	`{"value":1`,
	`{"value":1}}`,
	`{"value":1} {"value":2}`,
	`{"value":1}x`,
	`{"value":01}`,
	`{"value":nul}`,
	`{"value":1,}`,
	`{"value":1,"other":2}`,
	`{"ctx":{}}`,
	`{"value":1,"ttl":1.5}`,
	`{"value":1,"ttl":"60"}`,
	`{"value":1,"ttl":99999999999999999999}`,
	`{"value":1,"ttl":true}`,
	`{"value":1,"context":5}`,
	`{"value":1,"context":{"bad id":1}}`,
	`{"value":1,"context":{"w1":-1}}`,
	`{"value":1,"context":{"w1":1.5}}`,
	`{"value":1,"context":[]}`,
	`{"value":"` + "\x00" + `"}`,
	`{"value":"` + "\xff" + `"}`,
	`{"value":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}`,
	`{"value":` + strings.Repeat("[", 63) + strings.Repeat("]", 63) + `}`,
	`{"value":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + `}`,
}

// checkPutBody fails t unless decodePut and the encoding/json path agree
// on body, field for field and error for error.
func checkPutBody(t *testing.T, body string) {
	t.Helper()
	got, want, ok := decodeBoth(t, "/v1/kv/k", body, decodePut)
	if !ok {
		return
	}
	if !bytes.Equal(got.Value, want.Value) || (got.Value == nil) != (want.Value == nil) {
		t.Fatalf("%q: value %q, encoding/json: %q", body, got.Value, want.Value)
	}
	if (got.TTL == nil) != (want.TTL == nil) || got.TTL != nil && *got.TTL != *want.TTL {
		t.Fatalf("%q: ttl %v, encoding/json: %v", body, deref(got.TTL), deref(want.TTL))
	}
	if (got.Context == nil) != (want.Context == nil) || got.Context != nil && !reflect.DeepEqual(*got.Context, *want.Context) {
		t.Fatalf("%q: context %v, encoding/json: %v", body, deref(got.Context), deref(want.Context))
	}
}

// decodeBoth decodes body with decode (a hand scanner's path) and with the
// encoding/json path, fails t unless both fail alike or both succeed, and
// returns both results and whether they are to be compared (no error).
func decodeBoth[T any](t *testing.T, path, body string, decode func(*http.Request, int, *T) error) (got, want T, ok bool) {
	t.Helper()
	const maxDepth = DefaultMaxDepth
	wantErr := decodeBody([]byte(body), maxDepth, &want)
	gotErr := decode(httptest.NewRequest("POST", path, strings.NewReader(body)), maxDepth, &got)
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Fatalf("%q: error %v, encoding/json: %v", body, gotErr, wantErr)
	case gotErr != nil:
		if gotErr.Error() != wantErr.Error() || !errors.Is(gotErr, errInvalidJSON) {
			t.Fatalf("%q: error %q, encoding/json: %q", body, gotErr, wantErr)
		}
		return got, want, false
	}
	return got, want, true
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestDecodePutMatchesEncodingJSON(t *testing.T) {
	for _, body := range putBodies {
		checkPutBody(t, body)
	}
}

// TestScanPutBodyTakesTheUsualBodies makes sure the fast path is the one
// taken for the bodies clients send, so that the comparison above is not
// passing by falling back every time.
func TestScanPutBodyTakesTheUsualBodies(t *testing.T) {
	for _, body := range []string{
		`{"value":{"status":"running","progress":42}}`,
		`{"value":null}`,
		`{"value":1,"ttl":60,"context":{"w1":3}}`,
		` { "context" : null , "value" : [ ] } `,
		`{}`,
	} {
		var req putBody
		if !scanPutBody([]byte(body), DefaultMaxDepth, &req) {
			t.Errorf("%q went to encoding/json", body)
		}
	}
}

func FuzzDecodePut(f *testing.F) {
	for _, body := range putBodies {
		f.Add(body)
	}
	f.Fuzz(checkPutBody)
}

// BenchmarkDecodePut compares the load generator's write body through the
// hand scanner and through encoding/json.
func BenchmarkDecodePut(b *testing.B) {
	const body = `{"value":{"status":"running","progress":42}}`
	for _, bc := range []struct {
		name   string
		decode func(*http.Request, int, *putBody) error
	}{
		{"scan", decodePut},
		{"encoding-json", func(r *http.Request, maxDepth int, req *putBody) error { return decode(r, maxDepth, req) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rd := strings.NewReader(body)
			r := httptest.NewRequest("PUT", "/v1/kv/k", rd)
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(body)
				var req putBody
				if err := bc.decode(r, DefaultMaxDepth, &req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
