package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// Patch and PatchOps against a server: a merge patch sets and removes
// members, a JSON Patch appends under a test, a failed test changes
// nothing, and the options that do not apply are refused before sending.
func TestPatchAgainstServer(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	c := mustNew(t, srv.URL, client.WithWorkerID("w1"))
	if _, err := c.Put(ctx, "tasks/T1/state", map[string]any{"status": "running", "step": 1}); err != nil {
		t.Fatal(err)
	}
	e, err := c.Patch(ctx, "tasks/T1/state", map[string]any{"status": "done", "step": nil}, client.TTL(time.Minute))
	if err != nil || string(e.Value) != `{"status":"done"}` {
		t.Fatalf("Patch = %v, %v", e, err)
	}
	if left := time.Until(e.ExpiresAt); left < 55*time.Second || left > 61*time.Second {
		t.Errorf("expires in %v, want the minute asked", left)
	}

	if _, err := c.Put(ctx, "coordination/queue", map[string]any{"pending": []string{"T1"}, "owner": "w1"}); err != nil {
		t.Fatal(err)
	}
	claim := func(owner, task string) ([]client.PatchOp, client.PutOption) {
		return []client.PatchOp{
			{Op: "test", Path: "/owner", Value: owner},
			{Op: "add", Path: "/pending/-", Value: task},
			{Op: "add", Path: "/last", Value: nil},
		}, client.IfMatch("*")
	}
	ops, opt := claim("w1", "T2")
	if e, err = c.PatchOps(ctx, "coordination/queue", ops, opt); err != nil {
		t.Fatal(err)
	}
	var q struct {
		Pending []string `json:"pending"`
		Last    *string  `json:"last"`
	}
	if err := e.Decode(&q); err != nil || len(q.Pending) != 2 || q.Pending[1] != "T2" || q.Last != nil {
		t.Errorf("queue after PatchOps = %s (%v)", e.Value, err)
	}
	ops, opt = claim("w2", "T3")
	if _, err := c.PatchOps(ctx, "coordination/queue", ops, opt); !errors.Is(err, client.ErrPreconditionFailed) {
		t.Errorf("PatchOps with a failing test = %v, want ErrPreconditionFailed", err)
	}

	// Sent twice under one idempotency key: applied once, answered twice.
	add := []client.PatchOp{{Op: "add", Path: "/pending/-", Value: "T9"}}
	if _, err := c.PatchOps(ctx, "coordination/queue", add, client.IdempotencyKey("add-T9")); err != nil {
		t.Fatal(err)
	}
	again, err := c.PatchOps(ctx, "coordination/queue", add, client.IdempotencyKey("add-T9"))
	if err != nil || !again.Replayed || strings.Count(string(again.Value), "T9") != 1 {
		t.Fatalf("PatchOps sent again = %+v, %v; want it replayed, T9 added once", again, err)
	}

	for _, opt := range []client.PutOption{client.IfNoneMatch(), client.WithContext(map[string]uint64{"w1": 1})} {
		if _, err := c.Patch(ctx, "tasks/T1/state", map[string]any{"x": 1}, opt); !errors.Is(err, client.ErrInvalid) {
			t.Errorf("Patch with %T = %v, want ErrInvalid", opt, err)
		}
	}
	if _, err := c.Patch(ctx, "", map[string]any{}); !errors.Is(err, client.ErrInvalid) {
		t.Errorf("Patch of no key = %v, want ErrInvalid", err)
	}
	if e, err := c.Get(ctx, "tasks/T1/state", client.Consistent()); err != nil || string(e.Value) != `{"status":"done"}` {
		t.Errorf("after refused patches: %v, %v", e, err)
	}
}
