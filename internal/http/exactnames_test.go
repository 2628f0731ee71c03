package http

import (
	"errors"
	"strings"
	"testing"
)

// Member names are the API's, exactly: encoding/json alone would take
// "wAit_ms" for wait_ms. A put's value and a context are the client's, and
// their members are not looked at.
func TestDecodeTakesExactNamesOnly(t *testing.T) {
	type lockBody struct {
		TTLMs  *int64 `json:"ttl_ms"`
		WaitMs int64  `json:"wait_ms"`
	}
	for _, tt := range []struct {
		name, body string
		into       func() any
		wrong      string // the name refused, "" for none
	}{
		{"lock", `{"ttl_ms":1,"wait_ms":0}`, func() any { return new(lockBody) }, ""},
		{"lock, a name in other case", `{"ttl_ms":1,"wAit_ms":0}`, func() any { return new(lockBody) }, "wAit_ms"},
		{"put", `{"value":{"Status":1,"TTL":[{"X":1}]},"context":{"W1":1},"ttl":5}`, func() any { return new(putBody) }, ""},
		{"put, escaped name", `{"tt\u006c":5, "value" : 1}`, func() any { return new(putBody) }, ""},
		{"put, a name in other case", `{"value":1,"TTL":5}`, func() any { return new(putBody) }, "TTL"},
		{"batch", `{"ops":[{"op":"put","key":"a","value":{"OP":1}},{"op":"get","key":"b","context":null}],"atomic":true}`, func() any { return new(batchRequest) }, ""},
		{"batch of null ops", `{"ops":null}`, func() any { return new(batchRequest) }, ""},
		{"batch, an op's name in other case", `{"ops":[{"op":"get","key":"a"},{"Op":"get","key":"b"}]}`, func() any { return new(batchRequest) }, "Op"},
		{"batch, a name in other case", `{"Ops":[]}`, func() any { return new(batchRequest) }, "Ops"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := decodeBody([]byte(tt.body), DefaultMaxDepth, tt.into())
			switch {
			case tt.wrong == "" && err != nil:
				t.Errorf("decode %s: %v", tt.body, err)
			case tt.wrong != "" && (!errors.Is(err, errInvalidJSON) || !strings.Contains(err.Error(), `unknown field "`+tt.wrong+`"`)):
				t.Errorf("decode %s: %v, want invalid JSON naming %q", tt.body, err, tt.wrong)
			}
		})
	}
}
