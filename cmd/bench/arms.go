package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// keySpace is how many keys the key-addressed arms cycle over. Every key is
// written before the first round, so every GET hits; a bounded set keeps
// Redis's memory (and the expiry index memsync keeps) the same size in
// every round, however long the run.
const keySpace = 1000

// Request bodies, the same bytes for memsync and for the naive arm it is
// compared with, so that both read and write as much.
const (
	// value is what a key holds: a small JSON object, as a worker's task
	// state would be.
	value = `{"status":"running","progress":42}`
	// putBody is memsync's write of value; the naive SET stores it as is.
	putBody = `{"value":` + value + `}`
	// lockBody asks for a 5 s lease, the same PX the naive lock sets.
	lockBody = `{"ttl_ms":5000}`
	// incrBody adds 1 to a counter, as the naive INCRBY does.
	incrBody = `{"by":1}`
)

// Servers an arm can address; the orchestrator maps each to a base URL.
const (
	srvCeiling   = "ceiling"
	srvNaiveGet  = "naive-get"
	srvNaiveSet  = "naive-set"
	srvNaiveLock = "naive-lock"
	srvMemsync   = "memsync"
	srvEtcd      = "etcd"
)

// batchOps is how many puts one request of the batch arm carries, and
// batchBodies how many distinct requests it cycles over: 100 × 100 keys
// bench/b<i>/k<j>, distinct within a request.
const (
	batchOps    = 100
	batchBodies = 100
)

// An arm is one server under one load shape. Every round measures each
// selected arm once, in the order of the arms list, so that each memsync
// arm runs right after its baseline: A B A B …
type arm struct {
	name   string // what -only names
	server string // one of the srv constants
	unit   string // "req/s", or "pairs/s" for the lock arms
	what   string // one line in the table

	// One-request arms: method, path = prefix + i + suffix with i cycling
	// over keySpace (or n), body (empty for none). wrk and the Go generator
	// send the same requests.
	method, prefix, suffix, body string
	// n, when set, is how many distinct requests the arm cycles over
	// instead of keySpace.
	n int
	// fixedPath: every request's path is prefix alone.
	fixedPath bool
	// bodyOf, when set, is request i's body (body is then unused).
	bodyOf func(i int) string
	// perReq is how many operations one request counts for (1 when 0):
	// the batch arm reports key writes, 100 per request.
	perReq int
	// check, when set, vets every 2xx response's body on the Go generator
	// (wrk counts statuses only; prefill checks those arms once).
	check func(body []byte) error
	// needs names the optional program that is the arm's server ("etcd"):
	// without it the arm is skipped, not failed.
	needs string
	// warmCache: before each measurement, read every key once without
	// ?consistent so that the instance cache holds them all, and count the
	// cache's hits and misses during the measurement.
	warmCache bool
	// fanout marks the watch fan-out arm, which has its own generator
	// (fanout.go) and is measured by delivery, latency and memory.
	fanout bool

	// goOnly arms run on the Go generator even when wrk is installed: the
	// lock pair must send the token of its first response in its second
	// request, on the same connection, and wrk's Lua request() is not told
	// which connection it writes to. The arms the lock pairs are compared
	// with then run on the same generator, so that the generator's own cost
	// is the same on both sides of the ratio.
	goOnly bool
	// op, when set, is one operation of the Go generator instead of the
	// single request; worker numbers the connection, from 0.
	op func(c *client, worker int) error
}

// path is the i-th request path of a one-request arm.
func (a *arm) path(i int) string {
	if a.fixedPath {
		return a.prefix
	}
	return a.prefix + strconv.Itoa(i) + a.suffix
}

// cycle is how many distinct requests a one-request arm cycles over.
func (a *arm) cycle() int {
	if a.n > 0 {
		return a.n
	}
	return keySpace
}

// bodyFor is the i-th request body of a one-request arm.
func (a *arm) bodyFor(i int) string {
	if a.bodyOf != nil {
		return a.bodyOf(i)
	}
	return a.body
}

// perRequest is how many operations one request counts for.
func (a *arm) perRequest() float64 {
	if a.perReq > 0 {
		return float64(a.perReq)
	}
	return 1
}

// batchBody is request i of the batch arm: batchOps puts of value to the
// distinct keys bench/b<i>/k<j>.
func batchBody(i int) string {
	var b strings.Builder
	b.WriteString(`{"ops":[`)
	for j := range batchOps {
		if j > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"op":"put","key":"bench/b%d/k%d","value":%s}`, i, j, value)
	}
	b.WriteString(`]}`)
	return b.String()
}

// checkBatch fails a batch response unless every op was answered 200.
func checkBatch(body []byte) error {
	if n := bytes.Count(body, []byte(`{"status":200`)); n != batchOps {
		return fmt.Errorf("batch: %d of %d ops answered 200: %.300s", n, batchOps, body)
	}
	return nil
}

// etcdKey is the etcd key of memsync's key i, base64 as the gateway wants.
func etcdKey(i int) string {
	return base64.StdEncoding.EncodeToString([]byte("tasks/T" + strconv.Itoa(i) + "/state"))
}

// etcdValue is value, base64.
var etcdValue = base64.StdEncoding.EncodeToString([]byte(value))

// etcdPutBody and etcdRangeBody are request i of the etcd arms.
func etcdPutBody(i int) string   { return `{"key":"` + etcdKey(i) + `","value":"` + etcdValue + `"}` }
func etcdRangeBody(i int) string { return `{"key":"` + etcdKey(i) + `"}` }

// checkRange fails an etcd range that found nothing.
func checkRange(body []byte) error {
	if !bytes.Contains(body, []byte(`"kvs"`)) {
		return fmt.Errorf("etcd range: no kvs in %.200s", body)
	}
	return nil
}

// arms lists every arm, in the order a round runs them.
var arms = []*arm{
	{
		name: "ceiling", server: srvCeiling, unit: "req/s",
		what:   "chi handler, constant JSON (the most any endpoint can do)",
		method: "GET", prefix: "/ceiling/T", suffix: "/state",
	},
	{
		name: "memsync-get-cached", server: srvMemsync, unit: "req/s", warmCache: true,
		what:   "GET /v1/kv/tasks/T<i>/state (instance cache; every key read once first)",
		method: "GET", prefix: "/v1/kv/tasks/T", suffix: "/state",
	},
	{
		name: "etcd-range", server: srvEtcd, unit: "req/s", needs: "etcd",
		what:   "etcd JSON gateway POST /v3/kv/range of tasks/T<i>/state",
		method: "POST", prefix: "/v3/kv/range", fixedPath: true, bodyOf: etcdRangeBody, check: checkRange,
	},
	{
		name: "naive-get", server: srvNaiveGet, unit: "req/s",
		what:   "chi + go-redis, one GET",
		method: "GET", prefix: "/kv/tasks/T", suffix: "/state",
	},
	{
		name: "memsync-get", server: srvMemsync, unit: "req/s",
		what:   "GET /v1/kv/tasks/T<i>/state?consistent=true",
		method: "GET", prefix: "/v1/kv/tasks/T", suffix: "/state?consistent=true",
	},
	{
		name: "naive-set", server: srvNaiveSet, unit: "req/s",
		what:   "chi + go-redis, one SET of the body",
		method: "PUT", prefix: "/kv/tasks/T", suffix: "/state", body: putBody,
	},
	{
		name: "memsync-put", server: srvMemsync, unit: "req/s",
		what:   "PUT /v1/kv/tasks/T<i>/state " + putBody,
		method: "PUT", prefix: "/v1/kv/tasks/T", suffix: "/state", body: putBody,
	},
	{
		name: "etcd-put", server: srvEtcd, unit: "req/s", needs: "etcd",
		what:   "etcd JSON gateway POST /v3/kv/put of tasks/T<i>/state, the same value",
		method: "POST", prefix: "/v3/kv/put", fixedPath: true, bodyOf: etcdPutBody,
	},
	{
		name: "memsync-batch100", server: srvMemsync, unit: "writes/s", perReq: batchOps,
		what:   "POST /v1/batch of 100 puts to distinct keys bench/b<i>/k<j>; key writes/s",
		method: "POST", prefix: "/v1/batch", fixedPath: true, n: batchBodies, bodyOf: batchBody, check: checkBatch,
	},
	{
		name: "naive-incr", server: srvNaiveSet, unit: "req/s",
		what:   "chi + go-redis, one INCRBY, its value answered",
		method: "POST", prefix: "/incr/bench/c", body: incrBody,
	},
	{
		name: "memsync-incr", server: srvMemsync, unit: "req/s",
		what:   "POST /v1/counters/bench/c<i> " + incrBody,
		method: "POST", prefix: "/v1/counters/bench/c", body: incrBody,
	},
	{
		// The naive GET again, on the generator the lock arms use, so that
		// "pairs/s ≥ 0.45 × naive GET" compares like with like.
		name: "naive-get-go", server: srvNaiveGet, unit: "req/s", goOnly: true,
		what:   "naive-get, on the Go generator (base of the lock target)",
		method: "GET", prefix: "/kv/tasks/T", suffix: "/state",
	},
	{
		name: "naive-lock", server: srvNaiveLock, unit: "pairs/s", goOnly: true,
		what: "chi + go-redis, SET NX PX 5000 + DEL in one request",
		op: func(c *client, w int) error {
			return c.expect(204, "POST", "/lock/bench/L"+strconv.Itoa(w), nil, lockBody)
		},
	},
	{
		name: "memsync-lock", server: srvMemsync, unit: "pairs/s", goOnly: true,
		what: "POST /v1/locks/bench/L<conn> + DELETE with X-Lock-Token",
		op:   memsyncLockPair,
	},
	{
		name: "watch-fanout", server: srvMemsync, unit: "events/s", goOnly: true, fanout: true, warmCache: true,
		what: "SSE watchers on /v1/watch?pattern=fan/<run>/*, open-loop PUTs; delivered events/s",
	},
}

// memsyncLockPair acquires and releases the connection's own lock. Every
// connection has its own lock name, so no acquire ever waits: this measures
// the cost of a lock, not contention, as the naive SET NX + DEL does.
func memsyncLockPair(c *client, w int) error {
	path := "/v1/locks/bench/L" + strconv.Itoa(w)
	status, body, err := c.do("POST", path, nil, lockBody)
	if err != nil {
		return err
	}
	if status != 200 {
		return fmt.Errorf("POST %s: status %d: %.200s", path, status, body)
	}
	// A search rather than a JSON decode: the generator shares the CPUs with
	// the server it measures, so it should spend as little as it can.
	token, ok := jsonString(body, "token")
	if !ok {
		return fmt.Errorf("POST %s: no token in %.200s", path, body)
	}
	return c.expect(204, "DELETE", path, []string{"X-Lock-Token", token}, "")
}

// jsonString finds "name":"…" in a flat JSON object and returns the string,
// which must need no unescaping (a lock token is hex).
func jsonString(body []byte, name string) (string, bool) {
	tag := `"` + name + `":"`
	i := bytes.Index(body, []byte(tag))
	if i < 0 {
		return "", false
	}
	rest := body[i+len(tag):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return "", false
	}
	return string(rest[:j]), true
}

// armByName returns the arm called name, or nil.
func armByName(name string) *arm {
	for _, a := range arms {
		if a.name == name {
			return a
		}
	}
	return nil
}

// armNames lists the arms for usage and error messages.
func armNames() string {
	names := make([]string, len(arms))
	for i, a := range arms {
		names[i] = a.name
	}
	return strings.Join(names, ",")
}

// A comparison is one line of the report's verdict: arm ÷ base per round,
// or, with no base, the arm's own rate against an absolute target.
type comparison struct {
	what string
	arm  string
	// bases are tried in order: the first measured by the same generator
	// as arm is the base. (Without wrk, naive-get itself runs on the Go
	// generator and naive-get-go is not measured.) None: absolute.
	bases  []string
	target float64 // 0: no target; the ratio is reported for information
}

// comparisons are BENCH.md's targets, plus the lock against its own naive
// baseline, which the locks issue asks for. The watch fan-out's targets
// (delivery, latency, memory) are not rates: report.go checks them.
var comparisons = []comparison{
	{what: "GET (cached) vs ceiling", arm: "memsync-get-cached", bases: []string{"ceiling"}, target: 0.80},
	{what: "GET (cached) vs etcd range", arm: "memsync-get-cached", bases: []string{"etcd-range"}, target: 4},
	{what: "GET ?consistent=true vs naive GET", arm: "memsync-get", bases: []string{"naive-get"}, target: 0.85},
	{what: "PUT vs naive SET", arm: "memsync-put", bases: []string{"naive-set"}, target: 0.90},
	{what: "PUT vs etcd put", arm: "memsync-put", bases: []string{"etcd-put"}, target: 3},
	{what: "POST /v1/batch of 100 puts, key writes/s (absolute)", arm: "memsync-batch100", target: 150_000},
	{what: "lock pairs/s vs naive GET req/s", arm: "memsync-lock", bases: []string{"naive-get-go", "naive-get"}, target: 0.45},
	{what: "lock pairs/s vs naive SET NX PX + DEL", arm: "memsync-lock", bases: []string{"naive-lock"}},
	{what: "counter increments vs naive INCRBY", arm: "memsync-incr", bases: []string{"naive-incr"}},
}
