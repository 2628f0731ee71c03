package main

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/redistest"
)

// A resharding moves a slot to another master while memsync runs: the first
// command for it meets MOVED, which followMoved sends again once the slot
// map is reloaded, so a write, a lock acquire, a read and an atomic batch
// on a moved slot are each answered as if nothing had moved (before: 503
// once).
func TestClusterMovedSlotsAreFollowed(t *testing.T) {
	nodes := redistest.StartCluster(t, 3)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, "redis://"+n.Addr)
	}
	base := startServer(t, nil, "--redis-url", strings.Join(urls, ","))
	put := func(key, value string) (int, string) {
		return httpDo(t, "PUT", base+"/v1/kv/"+key, `{"value":`+value+`}`)
	}
	for _, key := range []string{"tasks/T1/state", "tasks/T3/state"} {
		if status, body := put(key, `"before"`); status != 200 {
			t.Fatalf("PUT %s = %d %s", key, status, body)
		}
	}

	moveSlot(t, nodes, "ms:{task-sentinel/tasks/T1}/state")
	if status, body := put("tasks/T1/state", `"after"`); status != 200 {
		t.Errorf("PUT on a moved slot = %d %s, want 200", status, body)
	}
	if status, body := httpDo(t, "GET", base+"/v1/kv/tasks/T1/state?consistent=true", ""); status != 200 || !strings.Contains(body, `"value":"after"`) {
		t.Errorf("GET after the PUT = %d %s", status, body)
	}

	moveSlot(t, nodes, "ms:{task-sentinel/tasks/T2}#lock")
	status, body := httpDo(t, "POST", base+"/v1/locks/tasks/T2", `{"ttl_ms":30000}`)
	if status != 200 {
		t.Errorf("lock acquire on a moved slot = %d %s, want 200", status, body)
	}

	moveSlot(t, nodes, "ms:{task-sentinel/tasks/T3}/state")
	if status, body := httpDo(t, "GET", base+"/v1/kv/tasks/T3/state?consistent=true", ""); status != 200 || !strings.Contains(body, `"value":"before"`) {
		t.Errorf("GET on a moved slot = %d %s, want 200 with the value", status, body)
	}

	// An atomic batch WATCHes its keys on the node its slot map names,
	// which the store tries again itself.
	moveSlot(t, nodes, "ms:{task-sentinel/jobs/J5}/a")
	atomic := `{"atomic":true,"ops":[{"op":"put","key":"jobs/J5/a","value":1},{"op":"put","key":"jobs/J5/b","value":2}]}`
	if status, body := httpDo(t, "POST", base+"/v1/batch", atomic); status != 200 || strings.Count(body, `"status":200`) != 2 {
		t.Errorf("atomic batch on a moved slot = %d %s, want 200 with both puts", status, body)
	}
}

// moveSlot moves the hash slot of key, with the keys in it, from its master
// to another one, as a resharding does (CLUSTER SETSLOT … IMPORTING and
// MIGRATING, MIGRATE, then SETSLOT … NODE on every master).
func moveSlot(t *testing.T, nodes []*redistest.Server, key string) {
	t.Helper()
	ctx := context.Background()
	slot, err := nodes[0].Client(t).ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	slots, err := nodes[0].Client(t).ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var from, to *redistest.Server
	for _, r := range slots {
		if int64(r.Start) <= slot && slot <= int64(r.End) {
			for _, n := range nodes {
				if n.Addr == r.Nodes[0].Addr {
					from = n
				}
			}
		}
	}
	for _, n := range nodes {
		if n != from {
			to = n
			break
		}
	}
	if from == nil {
		t.Fatalf("no master found for slot %d in %v", slot, slots)
	}
	id := func(n *redistest.Server) string {
		id, err := n.Client(t).Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	fromID, toID := id(from), id(to)
	do := func(n *redistest.Server, args ...any) {
		t.Helper()
		if err := n.Client(t).Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%s: %v: %v", n.Addr, args, err)
		}
	}
	do(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID)
	do(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID)
	host, port, _ := net.SplitHostPort(to.Addr)
	for {
		ks, err := from.Client(t).ClusterGetKeysInSlot(ctx, int(slot), 100).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(ks) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range ks {
			args = append(args, k)
		}
		do(from, args...)
	}
	do(to, "CLUSTER", "SETSLOT", slot, "NODE", toID)
	do(from, "CLUSTER", "SETSLOT", slot, "NODE", toID)
	for _, n := range nodes {
		if n != from && n != to {
			do(n, "CLUSTER", "SETSLOT", slot, "NODE", toID)
		}
	}
	t.Logf("slot %d of %s moved from %s to %s", slot, key, from.Addr, to.Addr)
}
