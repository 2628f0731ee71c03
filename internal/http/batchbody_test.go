package http

// An internal test: it compares the unexported hand scanner of batch
// bodies with the encoding/json path it stands in for.

import (
	"reflect"
	"strings"
	"testing"
)

// batchBodies are batch bodies the scanner should take, and some it must
// leave to encoding/json.
var batchBodies = []string{
	// Taken by the scanner.
	`{"ops":[{"op":"put","key":"tasks/T1/state","value":{"status":"running"}}]}`,
	`{"ops":[{"op":"put","key":"a","value":1,"ttl":60,"context":{"w1":3},"if_match":"abc"},{"op":"get","key":"b"},{"op":"delete","key":"c"}],"atomic":true}`,
	`{"atomic":false,"ops":[]}`,
	`{"ops":[],"atomic":null}`,
	`{"ops":null}`,
	`{}`,
	`{"ops":[{}]}`,
	`{"ops":[{"op":null,"key":null,"if_match":null,"value":null,"context":null,"ttl":null}]}`,
	` { "ops" : [ { "op" : "put" , "key" : "k" , "value" : [ 1 , { "a" : "}]" } ] } ] } ` + "\n",
	`{"ops":[{"op":"put","key":"k","value":"a\"b\\c"}]}`,
	`{"ops":[{"op":"put","key":"k","value":{},"ttl":-5},{"op":"put","key":"k2","value":[],"ttl":0}]}`,
	`{"ops":[{"op":"bogus","key":"bad key!","value":1}]}`,
	// Left to encoding/json, which accepts them...
	`{"OPS":[]}`,
	`{"ops":[{"OP":"put","key":"k","value":1}]}`,
	`{"ops":[{"op":"put","op":"get","key":"k"}]}`,
	`{"ops":[],"ops":[{"op":"get","key":"k"}]}`,
	`{"ops":[null]}`,
	`{"ops":[{"op":"put","key":"k\u0041","value":1}]}`,
	`{"ops":[{"op":"put","key":"é","value":1}]}`,
	`{"ops":[{"op":"put","key":"` + "\xff" + `","value":1}]}`,
	`{"ops":[{"op":"put","key":"k","value":1,"if_match":"\"etag\""}]}`,
	`{"ops":[{"op":"put","key":"k","value":1,"ttl":1e3}]}`,
	// ...or refuses them.
	``,
	`null`,
	`[]`,
	`{"ops":{}}`,
	`{"ops":"put"}`,
	`{"ops":[1]}`,
	`{"ops":[[]]}`,
	`{"ops":[{"op":1}]}`,
	`{"ops":[{"key":true}]}`,
	`{"ops":[{"if_match":{}}]}`,
	`{"ops":[{"ttl":"60"}]}`,
	`{"ops":[{"ttl":1.5}]}`,
	`{"ops":[{"ttl":99999999999999999999}]}`,
	`{"ops":[{"context":5}]}`,
	`{"ops":[{"context":{"bad id":1}}]}`,
	`{"ops":[{"other":1}]}`,
	`{"ops":[],"atomic":"true"}`,
	`{"ops":[],"atomic":1}`,
	`{"ops":[],"extra":1}`,
	`{"ops":[]}x`,
	`{"ops":[]} {}`,
	`{"ops":[{"op":"put","value":` + strings.Repeat("[", 70) + strings.Repeat("]", 70) + `}]}`,
}

// checkBatchBody fails t unless decodeBatch and the encoding/json path
// agree on body, field for field and error for error.
func checkBatchBody(t *testing.T, body string) {
	t.Helper()
	got, want, ok := decodeBoth(t, "/v1/batch", body, decodeBatch)
	if !ok {
		return
	}
	if got.Atomic != want.Atomic || (got.Ops == nil) != (want.Ops == nil) || len(got.Ops) != len(want.Ops) {
		t.Fatalf("%q: atomic %v, %d ops (nil %v); encoding/json: %v, %d (nil %v)", body,
			got.Atomic, len(got.Ops), got.Ops == nil, want.Atomic, len(want.Ops), want.Ops == nil)
	}
	for i := range got.Ops {
		g, w := got.Ops[i], want.Ops[i]
		if g.Op != w.Op || g.Key != w.Key || g.IfMatch != w.IfMatch ||
			string(g.Value) != string(w.Value) || (g.Value == nil) != (w.Value == nil) ||
			!reflect.DeepEqual(g.TTL, w.TTL) || !reflect.DeepEqual(g.Context, w.Context) {
			t.Fatalf("%q: op %d = %+v, encoding/json: %+v", body, i, g, w)
		}
	}
}

func TestDecodeBatchMatchesEncodingJSON(t *testing.T) {
	for _, body := range batchBodies {
		checkBatchBody(t, body)
	}
}

// TestScanBatchBodyTakesTheUsualBodies makes sure the fast path is the one
// taken for the bodies clients send, so that the comparison above is not
// passing by falling back every time.
func TestScanBatchBodyTakesTheUsualBodies(t *testing.T) {
	for _, body := range batchBodies[:12] {
		var req batchRequest
		if !scanBatchBody([]byte(body), DefaultMaxDepth, &req) {
			t.Errorf("%q went to encoding/json", body)
		}
	}
}

func FuzzDecodeBatch(f *testing.F) {
	for _, body := range batchBodies {
		f.Add(body)
	}
	f.Fuzz(checkBatchBody)
}
