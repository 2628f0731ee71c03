package main

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/redistest"
)

// A resharding moves a slot to another master while memsync runs: the first
// command for it meets MOVED, which followMoved sends again once the slot
// map is reloaded, so a write, a lock acquire, a read and an atomic batch
// on a moved slot are each answered as if nothing had moved (before: 503
// once).
func TestClusterMovedSlotsAreFollowed(t *testing.T) {
	nodes := redistest.StartCluster(t, 3)
	base := startServer(t, nil, "--redis-url", clusterURL(nodes))
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

// clusterURL is the --redis-url of the Redis Cluster of nodes.
func clusterURL(nodes []*redistest.Server) string {
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = "redis://" + n.Addr
	}
	return strings.Join(urls, ",")
}

// moveSlot moves the hash slot of key, with the keys in it, from its master
// to another one, as a resharding does.
func moveSlot(t *testing.T, nodes []*redistest.Server, key string) {
	t.Helper()
	beginMigration(t, nodes, key, nil).finish()
}

// slotMigration is a hash slot being moved from one master to another, as
// a resharding moves it: CLUSTER SETSLOT … IMPORTING on the new master and
// MIGRATING on the old one (beginMigration), MIGRATE of its keys a few at
// a time (migrate), then SETSLOT … NODE on every master (finish).
type slotMigration struct {
	t              *testing.T
	nodes          []*redistest.Server // every master, the new one included
	slot           int64
	from, to       *redistest.Server
	fromID, toID   string
	toHost, toPort string
}

// beginMigration starts moving the hash slot of key from its master to
// to, or when to is nil to another of nodes.
func beginMigration(t *testing.T, nodes []*redistest.Server, key string, to *redistest.Server) *slotMigration {
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
	var from *redistest.Server
	for _, r := range slots {
		if int64(r.Start) <= slot && slot <= int64(r.End) {
			for _, n := range nodes {
				if n.Addr == r.Nodes[0].Addr {
					from = n
				}
			}
		}
	}
	if from == nil {
		t.Fatalf("no master found for slot %d in %v", slot, slots)
	}
	if to == nil {
		for _, n := range nodes {
			if n != from {
				to = n
				break
			}
		}
	} else if !slices.Contains(nodes, to) {
		nodes = append(slices.Clone(nodes), to)
	}
	m := &slotMigration{t: t, nodes: nodes, slot: slot, from: from, to: to}
	m.fromID, m.toID = m.id(from), m.id(to)
	m.toHost, m.toPort, _ = net.SplitHostPort(to.Addr)
	m.do(to, "CLUSTER", "SETSLOT", slot, "IMPORTING", m.fromID)
	m.do(from, "CLUSTER", "SETSLOT", slot, "MIGRATING", m.toID)
	t.Logf("slot %d of %s migrating from %s to %s", slot, key, from.Addr, to.Addr)
	return m
}

func (m *slotMigration) id(n *redistest.Server) string {
	m.t.Helper()
	id, err := n.Client(m.t).Do(context.Background(), "CLUSTER", "MYID").Text()
	if err != nil {
		m.t.Fatal(err)
	}
	return id
}

func (m *slotMigration) do(n *redistest.Server, args ...any) {
	m.t.Helper()
	if err := n.Client(m.t).Do(context.Background(), args...).Err(); err != nil {
		m.t.Fatalf("%s: %v: %v", n.Addr, args, err)
	}
}

// migrate moves the Redis keys ks of the slot to the new master.
func (m *slotMigration) migrate(ks ...string) {
	m.t.Helper()
	args := []any{"MIGRATE", m.toHost, m.toPort, "", 0, 5000, "KEYS"}
	for _, k := range ks {
		args = append(args, k)
	}
	m.do(m.from, args...)
}

// finish moves the slot's remaining keys and gives the slot to the new
// master on every node.
func (m *slotMigration) finish() {
	m.t.Helper()
	for {
		ks, err := m.from.Client(m.t).ClusterGetKeysInSlot(context.Background(), int(m.slot), 100).Result()
		if err != nil {
			m.t.Fatal(err)
		}
		if len(ks) == 0 {
			break
		}
		m.migrate(ks...)
	}
	m.do(m.to, "CLUSTER", "SETSLOT", m.slot, "NODE", m.toID)
	m.do(m.from, "CLUSTER", "SETSLOT", m.slot, "NODE", m.toID)
	for _, n := range m.nodes {
		if n != m.from && n != m.to {
			m.do(n, "CLUSTER", "SETSLOT", m.slot, "NODE", m.toID)
		}
	}
	m.t.Logf("slot %d moved from %s to %s", m.slot, m.from.Addr, m.to.Addr)
}

// A resharding onto a master new to the cluster, caught in mid-migration:
// keys that have moved already are asked for (ASK) on the new master, which
// has cached no script yet, and a write that needs keys on both masters,
// or that creates a key, meets TRYAGAIN until the migration ends, as an
// atomic batch's WATCH meets ASK. Each is answered as if nothing were
// moving (before: 503 until the slot had moved, but for the atomic batch),
// and applied once.
func TestClusterMigratingSlotsAreFollowed(t *testing.T) {
	nodes := redistest.StartCluster(t, 3)
	base := startServer(t, nil, "--redis-url", clusterURL(nodes))
	put := func(key, value string) (int, string) {
		return httpDo(t, "PUT", base+"/v1/kv/"+key, `{"value":`+value+`}`)
	}
	for _, key := range []string{"jobs/J1/a", "jobs/J1/b"} {
		if status, body := put(key, `"before"`); status != 200 {
			t.Fatalf("PUT %s = %d %s", key, status, body)
		}
	}
	fresh := redistest.AddClusterMaster(t, nodes)
	const data, index = "ms:{task-sentinel/jobs/J1}/a", "ms:{task-sentinel/jobs/J1}#keys"
	m := beginMigration(t, nodes, data, fresh)
	m.migrate(data, index) // jobs/J1/b stays behind for now

	// The key and its subtree's index are on the new master: ASK.
	if status, body := httpDo(t, "GET", base+"/v1/kv/jobs/J1/a?consistent=true", ""); status != 200 || !strings.Contains(body, `"value":"before"`) {
		t.Errorf("GET of a migrated key = %d %s, want 200 with its value", status, body)
	}
	if status, body := put("jobs/J1/a", `"during"`); status != 200 || !strings.Contains(body, `"version":{"anonymous":2}`) {
		t.Errorf("PUT of a migrated key = %d %s, want 200 at version anonymous=2", status, body)
	}

	// The key is on the old master, its subtree's index on the new one, and
	// a new key is on neither: TRYAGAIN until the slot has moved.
	type answer struct {
		status int
		body   string
	}
	answers := make(chan answer, 3)
	for _, key := range []string{"jobs/J1/b", "jobs/J1/c"} {
		go func() {
			status, body := put(key, `"during"`)
			answers <- answer{status, key + ": " + body}
		}()
	}
	go func() {
		atomic := `{"atomic":true,"ops":[{"op":"put","key":"jobs/J1/d","value":"atomic"},{"op":"put","key":"jobs/J1/e","value":"atomic"}]}`
		start := time.Now()
		status, body := httpDo(t, "POST", base+"/v1/batch", atomic)
		t.Logf("atomic batch answered %d after %v", status, time.Since(start))
		if strings.Count(body, `"status":200`) != 2 {
			status = 0
		}
		answers <- answer{status, "atomic batch: " + body}
	}()
	time.Sleep(100 * time.Millisecond)
	m.finish()
	for range 3 {
		if a := <-answers; a.status != 200 {
			t.Errorf("PUT across a migration = %d %s, want 200", a.status, a.body)
		}
	}

	for key, want := range map[string]string{
		"jobs/J1/a": `"value":"during","version":{"anonymous":2}`,
		"jobs/J1/b": `"value":"during","version":{"anonymous":2}`,
		"jobs/J1/c": `"value":"during","version":{"anonymous":1}`,
		"jobs/J1/d": `"value":"atomic","version":{"anonymous":1}`,
		"jobs/J1/e": `"value":"atomic","version":{"anonymous":1}`,
	} {
		status, body := httpDo(t, "GET", base+"/v1/kv/"+key+"?consistent=true", "")
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("GET %s after the migration = %d %s, want %s", key, status, body, want)
		}
	}
}

// followRedirects itself, on the client openRedis makes: during a
// migration to a master new to the cluster, a command and a pipelined
// script on keys that have left, or that do not exist yet, are answered by
// the new master, which is given the script it has not cached.
func TestFollowRedirectsAsksTheImportingMaster(t *testing.T) {
	nodes := redistest.StartCluster(t, 3)
	rdb, closeRedis, err := openRedis(clusterURL(nodes), embeddedData{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeRedis()
	ctx := context.Background()
	if err := rdb.Set(ctx, "{m}moved", "here", 0).Err(); err != nil {
		t.Fatal(err)
	}
	script := redis.NewScript(`return redis.call("INCR", KEYS[1])`)
	if err := script.Load(ctx, rdb).Err(); err != nil { // on the three masters
		t.Fatal(err)
	}

	m := beginMigration(t, nodes, "{m}", redistest.AddClusterMaster(t, nodes))
	m.migrate("{m}moved")
	if got, err := rdb.Get(ctx, "{m}moved").Result(); err != nil || got != "here" {
		t.Errorf("GET of a migrated key = %q, %v; want \"here\"", got, err)
	}
	pipe := rdb.Pipeline()
	incr := script.EvalSha(ctx, pipe, []string{"{m}new"})
	get := pipe.Get(ctx, "{m}moved")
	_, _ = pipe.Exec(ctx)
	if n, err := incr.Int(); err != nil || n != 1 {
		t.Errorf("pipelined EVALSHA creating a key = %d, %v; want 1", n, err)
	}
	if got, err := get.Result(); err != nil || got != "here" {
		t.Errorf("pipelined GET of a migrated key = %q, %v; want \"here\"", got, err)
	}
	m.finish()
	if got, err := m.to.Client(t).Get(ctx, "{m}new").Result(); err != nil || got != "1" {
		t.Errorf("the new key on the new master = %q, %v; want \"1\"", got, err)
	}
}
