package main

import (
	"bytes"
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
)

// Servers an arm can address; the orchestrator maps each to a base URL.
const (
	srvCeiling   = "ceiling"
	srvNaiveGet  = "naive-get"
	srvNaiveSet  = "naive-set"
	srvNaiveLock = "naive-lock"
	srvMemsync   = "memsync"
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
	// over keySpace, body (empty for none). wrk and the Go generator send
	// the same requests.
	method, prefix, suffix, body string

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
func (a *arm) path(i int) string { return a.prefix + strconv.Itoa(i) + a.suffix }

// arms lists every arm, in the order a round runs them.
var arms = []*arm{
	{
		name: "ceiling", server: srvCeiling, unit: "req/s",
		what:   "chi handler, constant JSON (the most any endpoint can do)",
		method: "GET", prefix: "/ceiling/T", suffix: "/state",
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

// A comparison is one ratio of the report: arm ÷ base, per round.
type comparison struct {
	what string
	arm  string
	// bases are tried in order: the first measured by the same generator
	// as arm is the base. (Without wrk, naive-get itself runs on the Go
	// generator and naive-get-go is not measured.)
	bases  []string
	target float64 // 0: no target; the ratio is reported for information
}

// comparisons are BENCH.md's targets for what memsync has today, plus the
// lock against its own naive baseline, which the locks issue asks for.
var comparisons = []comparison{
	{what: "GET ?consistent=true vs naive GET", arm: "memsync-get", bases: []string{"naive-get"}, target: 0.85},
	{what: "PUT vs naive SET", arm: "memsync-put", bases: []string{"naive-set"}, target: 0.90},
	{what: "lock pairs/s vs naive GET req/s", arm: "memsync-lock", bases: []string{"naive-get-go", "naive-get"}, target: 0.45},
	{what: "lock pairs/s vs naive SET NX PX + DEL", arm: "memsync-lock", bases: []string{"naive-lock"}},
}
