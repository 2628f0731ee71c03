package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
)

func TestBatch(t *testing.T) {
	// The server's answer to the four ops below: a put, a get, a delete
	// and an op with a bad key that fails alone.
	const answerBody = `{"results":[
		{"status":200,"entry":` + entryBody + `},
		{"status":200,"entry":{"key":"jobs/J1/state","namespace":"ns","value":"queued","version":{"w1":1},"etag":"\"e2\"","timestamp":1764170000000,"writer":"w1","strategy":"lww","conflict":false,"siblings":1}},
		{"status":204},
		{"status":400,"error":{"type":"urn:memsync:problem:invalid_key","title":"Invalid key","status":400,"detail":"key \"jobs//bad\": empty segment","code":"invalid_key"}}]}`
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, answerBody)
	})
	c := mustNew(t, f.URL, client.WithWorkerID("w1"))
	results, err := c.Batch(context.Background(), []client.BatchOp{
		{Op: client.OpPut, Key: "tasks/T1/state", Value: map[string]string{"status": "running"},
			Context: map[string]uint64{"w1": 2}, TTL: new(1500 * time.Millisecond), IfMatch: `"e1"`},
		{Op: client.OpGet, Key: "jobs/J1/state"},
		{Op: client.OpDelete, Key: "jobs/J0/state"},
		{Op: client.OpPut, Key: "jobs//bad"}, // a nil value is null
	}, false)
	if err != nil {
		t.Fatal(err)
	}

	req := f.requests()[0]
	if req.Method != http.MethodPost || req.Path != "/v1/batch" || req.Header.Get("X-Worker-Id") != "w1" {
		t.Errorf("request = %s %s (X-Worker-Id %q)", req.Method, req.Path, req.Header.Get("X-Worker-Id"))
	}
	var got, want any
	_ = json.Unmarshal(req.Body, &got)
	_ = json.Unmarshal([]byte(`{"ops":[
		{"op":"put","key":"tasks/T1/state","value":{"status":"running"},"context":{"w1":2},"ttl":2,"if_match":"\"e1\""},
		{"op":"get","key":"jobs/J1/state"},
		{"op":"delete","key":"jobs/J0/state"},
		{"op":"put","key":"jobs//bad","value":null}]}`), &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("body = %s", req.Body)
	}

	if len(results) != 4 {
		t.Fatalf("%d results, want 4", len(results))
	}
	for i, want := range []int{200, 200, 204, 400} {
		if results[i].Status != want {
			t.Errorf("results[%d].Status = %d, want %d", i, results[i].Status, want)
		}
	}
	if e := results[0].Entry; e == nil || e.Key != "tasks/T1/state" || e.ETag != `"e1"` || e.Siblings != 2 || results[0].Err != nil {
		t.Errorf("results[0] = %+v", results[0])
	}
	var v string
	if e := results[1].Entry; e == nil || e.Decode(&v) != nil || v != "queued" || e.Version["w1"] != 1 {
		t.Errorf("results[1] = %+v", results[1])
	}
	if results[2].Entry != nil || results[2].Err != nil {
		t.Errorf("results[2] = %+v, want neither entry nor error", results[2])
	}
	bad := results[3]
	if bad.Entry != nil || bad.Err == nil {
		t.Fatalf("results[3] = %+v, want an error", bad)
	}
	if !errors.Is(bad.Err, client.ErrInvalid) || bad.Err.Code != "invalid_key" || bad.Err.Op != 3 || bad.Err.Status != 400 {
		t.Errorf("results[3].Err = %#v", bad.Err)
	}
	if msg := bad.Err.Error(); !strings.Contains(msg, "POST /v1/batch (op 3): 400 invalid_key") {
		t.Errorf("Error() = %q", msg)
	}
}

func TestBatchAtomicFailure(t *testing.T) {
	for _, tt := range []struct {
		status int
		code   string
		want   error
	}{
		{412, "precondition_failed", client.ErrPreconditionFailed},
		{400, "invalid_argument", client.ErrInvalid},
	} {
		t.Run(tt.code, func(t *testing.T) {
			f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
				problem(w, tt.status, tt.code, map[string]any{"op": 1, "detail": "atomic batch applied nothing: op 1: …"})
			})
			results, err := mustNew(t, f.URL).Batch(context.Background(), []client.BatchOp{
				{Op: client.OpPut, Key: "jobs/J2/state", Value: "running"},
				{Op: client.OpPut, Key: "jobs/J1/state", Value: "running", IfMatch: `"stale"`},
			}, true)
			if results != nil || !errors.Is(err, tt.want) {
				t.Fatalf("Batch = %v, %v; want no results and %v", results, err, tt.want)
			}
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.Op != 1 || ae.Status != tt.status {
				t.Fatalf("error %#v: want an *APIError with Op 1", err)
			}
			var body struct{ Atomic bool }
			_ = json.Unmarshal(f.requests()[0].Body, &body)
			if !body.Atomic {
				t.Errorf("body %s: want atomic", f.requests()[0].Body)
			}
		})
	}
}

func TestBatchTTLs(t *testing.T) {
	f := newFake(t, answer)
	_, err := mustNew(t, f.URL).Batch(context.Background(), []client.BatchOp{
		{Op: client.OpPut, Key: "a", Value: 1, TTL: new(time.Duration(0))},
		{Op: client.OpPut, Key: "b", Value: 1, TTL: new(-time.Millisecond)},
		{Op: client.OpPut, Key: "c", Value: 1},
		{Op: client.OpGet, Key: "d", Value: "not for a get"},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Ops []map[string]json.RawMessage
	}
	if err := json.Unmarshal(f.requests()[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	// 0 is never; a negative TTL goes to the server, which refuses that op
	// alone; none is the server's default; a get's value goes too, for the
	// server to refuse.
	if got := string(body.Ops[0]["ttl"]); got != "0" {
		t.Errorf("ttl 0 sent as %s", got)
	}
	if got := string(body.Ops[1]["ttl"]); got != "-1" {
		t.Errorf("negative ttl sent as %s", got)
	}
	if _, ok := body.Ops[2]["ttl"]; ok {
		t.Errorf("no ttl sent as %s", body.Ops[2]["ttl"])
	}
	if got := string(body.Ops[3]["value"]); got != `"not for a get"` {
		t.Errorf("a get's value sent as %q", got)
	}
}

func TestBatchEdges(t *testing.T) {
	t.Run("no ops", func(t *testing.T) {
		f := newFake(t, answer)
		results, err := mustNew(t, f.URL).Batch(context.Background(), nil, true)
		if err != nil || results == nil || len(results) != 0 || len(f.requests()) != 0 {
			t.Errorf("Batch(nil) = %v, %v after %d requests; want no results, no request", results, err, len(f.requests()))
		}
	})
	t.Run("result count mismatch", func(t *testing.T) {
		f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, `{"results":[{"status":204}]}`)
		})
		_, err := mustNew(t, f.URL).Batch(context.Background(), []client.BatchOp{{Op: "delete", Key: "a"}, {Op: "delete", Key: "b"}}, false)
		if err == nil || !strings.Contains(err.Error(), "1 results for 2 ops") {
			t.Errorf("Batch = %v, want a count mismatch", err)
		}
	})
	t.Run("whole batch refused", func(t *testing.T) {
		f := newFake(t, func(w http.ResponseWriter, r *http.Request) { problem(w, 400, "invalid_argument", nil) })
		_, err := mustNew(t, f.URL).Batch(context.Background(), []client.BatchOp{{Op: "delete", Key: "a"}}, false)
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Op != -1 || !errors.Is(err, client.ErrInvalid) {
			t.Errorf("Batch = %v, want ErrInvalid about no op", err)
		}
	})
	t.Run("unencodable value", func(t *testing.T) {
		f := newFake(t, answer)
		_, err := mustNew(t, f.URL).Batch(context.Background(), []client.BatchOp{{Op: "put", Key: "a", Value: func() {}}}, false)
		if err == nil || len(f.requests()) != 0 {
			t.Errorf("Batch = %v, want an encoding error before any request", err)
		}
	})
}

func TestPutAsync(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusAccepted, map[string]any{"queued": true, "key": "jobs/J3/state", "namespace": "task-sentinel", "pending": 4})
	})
	c := mustNew(t, f.URL, client.WithWorkerID("w1"))
	if err := c.PutAsync(context.Background(), "jobs/J3/state", "queued"); err != nil {
		t.Fatalf("PutAsync on 202: %v", err)
	}
	got := f.requests()[0]
	if got.Method != http.MethodPut || got.Path != "/v1/kv/jobs/J3/state" || got.Query != "async=true" || string(got.Body) != `{"value":"queued"}` {
		t.Errorf("request = %s %s?%s %s", got.Method, got.Path, got.Query, got.Body)
	}

	// A full queue is 503.
	f = newFake(t, func(w http.ResponseWriter, r *http.Request) { problem(w, 503, "backend_unavailable", nil) })
	if err := mustNew(t, f.URL).PutAsync(context.Background(), "k", 1); !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("PutAsync on 503: %v, want ErrUnavailable", err)
	}
}

func TestSync(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]int{"flushed": 100})
	})
	n, err := mustNew(t, f.URL).Sync(context.Background())
	if err != nil || n != 100 {
		t.Fatalf("Sync = %d, %v; want 100", n, err)
	}
	if got := f.requests()[0]; got.Method != http.MethodPost || got.Path != "/v1/sync" || len(got.Body) != 0 {
		t.Errorf("request = %s %s %q", got.Method, got.Path, got.Body)
	}

	f = newFake(t, func(w http.ResponseWriter, r *http.Request) { problem(w, 503, "backend_unavailable", nil) })
	if n, err := mustNew(t, f.URL).Sync(context.Background()); n != 0 || !errors.Is(err, client.ErrUnavailable) {
		t.Errorf("Sync on 503 = %d, %v; want ErrUnavailable", n, err)
	}
}
