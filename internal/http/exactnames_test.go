package http

import (
	"errors"
	"strings"
	"testing"
)

// Member names are the API's, exactly, and each once: encoding/json alone
// would take "wAit_ms" for wait_ms, and the last of two "ttl". A put's
// value and a context are the client's, and their members are not looked
// at.
func TestDecodeTakesExactNamesOnly(t *testing.T) {
	type lockBody struct {
		TTLMs  *int64 `json:"ttl_ms"`
		WaitMs int64  `json:"wait_ms"`
	}
	for _, tt := range []struct {
		name, body string
		into       func() any
		refused    string // the error's words, "" for none
	}{
		{"lock", `{"ttl_ms":1,"wait_ms":0}`, func() any { return new(lockBody) }, ""},
		{"lock, a name in other case", `{"ttl_ms":1,"wAit_ms":0}`, func() any { return new(lockBody) }, `unknown field "wAit_ms"`},
		{"put", `{"value":{"Status":1,"TTL":[{"X":1}]},"context":{"W1":1},"ttl":5}`, func() any { return new(putBody) }, ""},
		{"put, escaped name", `{"tt\u006c":5, "value" : 1}`, func() any { return new(putBody) }, ""},
		{"put, a name in other case", `{"value":1,"TTL":5}`, func() any { return new(putBody) }, `unknown field "TTL"`},
		{"put, a name twice", `{"value":1,"ttl":5,"ttl":6}`, func() any { return new(putBody) }, `duplicate field "ttl"`},
		{"put, a name twice, once escaped", `{"ttl":5,"value":1,"t\u0074l":6}`, func() any { return new(putBody) }, `duplicate field "ttl"`},
		{"put, a value's names twice", `{"value":{"a":1,"a":2}}`, func() any { return new(putBody) }, ""},
		{"batch", `{"ops":[{"op":"put","key":"a","value":{"OP":1}},{"op":"get","key":"b","context":null}],"atomic":true}`, func() any { return new(batchRequest) }, ""},
		{"batch of null ops", `{"ops":null}`, func() any { return new(batchRequest) }, ""},
		{"batch, an op's name in other case", `{"ops":[{"op":"get","key":"a"},{"Op":"get","key":"b"}]}`, func() any { return new(batchRequest) }, `unknown field "Op"`},
		{"batch, an op's name twice", `{"ops":[{"op":"get","key":"a","key":"b"}]}`, func() any { return new(batchRequest) }, `duplicate field "key"`},
		{"batch, a name twice", `{"ops":[],"atomic":true,"ops":[{"op":"get","key":"a"}]}`, func() any { return new(batchRequest) }, `duplicate field "ops"`},
		{"batch, a name in other case", `{"Ops":[]}`, func() any { return new(batchRequest) }, `unknown field "Ops"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := decodeBody([]byte(tt.body), DefaultMaxDepth, tt.into())
			switch {
			case tt.refused == "" && err != nil:
				t.Errorf("decode %s: %v", tt.body, err)
			case tt.refused != "" && (!errors.Is(err, errInvalidJSON) || !strings.Contains(err.Error(), tt.refused)):
				t.Errorf("decode %s: %v, want invalid JSON saying %s", tt.body, err, tt.refused)
			}
		})
	}
}
