// Package mcpserver exposes a memsync server to AI agents as Model Context
// Protocol tools, through the Go client: an agent's MCP host (Claude Code,
// say) runs cmd/mcp on stdio, and the agent reads and writes shared keys,
// takes locks, claims queue messages and counts, as any worker does.
//
// The tool memory_usage answers the calls of the design document's
// client (claude-flow's memory tool: store, retrieve, list, delete,
// search), so that an agent written for it works against memsync as is.
//
// Locks and claimed messages live as long as the MCP session: the server
// keeps what each tool call was granted, by token and receipt, so that a
// later call releases or acks it, and a lock acquired with "keep" is
// refreshed until it is released or the session ends (the agent's process
// gone, its lease lapses by itself).
package mcpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/memsync/memsync/client"
)

// Version is the implementation version the server reports.
const Version = "1.0.0"

// tools is the state of one server: the client, and what its calls hold.
type tools struct {
	c  *client.Client
	ns string

	mu    sync.Mutex
	locks map[string]*client.Lock         // by token
	msgs  map[string]*client.QueueMessage // by receipt
}

// New returns an MCP server whose tools act through c; ns is c's
// namespace, which memory_usage strips from keys that start with it.
// Close what the returned stop function says when the session ends: it
// releases the locks still held.
func New(c *client.Client, ns string) (*mcp.Server, func(context.Context)) {
	t := &tools{c: c, ns: ns, locks: map[string]*client.Lock{}, msgs: map[string]*client.QueueMessage{}}
	s := mcp.NewServer(&mcp.Implementation{Name: "memsync", Version: Version}, &mcp.ServerOptions{
		Instructions: "Shared memory and coordination for a fleet of agents: keys with versions and " +
			"compare-and-set, locks with fencing tokens, semaphores, work queues, counters, barriers. Keys are paths of " +
			"1-8 segments like tasks/T1/state. Writes made without having read a key are kept " +
			"as siblings, not lost.",
	})
	mcp.AddTool(s, &mcp.Tool{Name: "memory_usage", Description: "Store, retrieve, list, delete or search keys, " +
		"as claude-flow's memory tool does. action: store (key, value, ttl seconds), retrieve (key), list (key as a " +
		"prefix, optional), delete (key), search (key as a glob: * one segment, ** any depth)."}, t.memoryUsage)
	mcp.AddTool(s, &mcp.Tool{Name: "kv_get", Description: "Read a key: its value, version (vector clock) and etag. " +
		"resolve picks how siblings (concurrent writes) combine: lww, union, merge, max, siblings. With wait_ms " +
		"the read waits for a change instead of polling: for the key to leave the state if_none_match (an etag " +
		"read before) names, or, without it, for a missing key to be written; unchanged after wait_ms, it " +
		"answers unchanged: true."}, t.get)
	mcp.AddTool(s, &mcp.Tool{Name: "kv_put", Description: "Write a key. if_match (an etag read before) makes it a " +
		"compare-and-set: it fails with precondition_failed when the key changed. context (a version read " +
		"before) supersedes what that read saw. ttl in seconds, 0 never expires."}, t.put)
	mcp.AddTool(s, &mcp.Tool{Name: "kv_patch", Description: "Change part of a key's object value with a JSON merge " +
		"patch (members replace members, null removes), applied atomically to the current value."}, t.patch)
	mcp.AddTool(s, &mcp.Tool{Name: "kv_delete", Description: "Delete a key; if_match makes it conditional."}, t.delete)
	mcp.AddTool(s, &mcp.Tool{Name: "kv_list", Description: "List the keys under a prefix."}, t.list)
	mcp.AddTool(s, &mcp.Tool{Name: "lock_acquire", Description: "Take a lock for ttl_ms, waiting up to wait_ms for " +
		"its holder. Returns a token (to release it) and a fence that increases with every grant. keep: refresh " +
		"the lease until released or this session ends. Fails with lock_held when someone else holds it."}, t.lockAcquire)
	mcp.AddTool(s, &mcp.Tool{Name: "semaphore_acquire", Description: "Take one of limit permits of a counting " +
		"semaphore for ttl_ms (at most limit holders at once), waiting up to wait_ms in line for one. Returns a " +
		"token to release it with lock_release. keep: refresh it until released or this session ends. Fails with " +
		"semaphore_full when every permit is taken."}, t.permitAcquire)
	mcp.AddTool(s, &mcp.Tool{Name: "lock_release", Description: "Release a lock or a semaphore permit this session " +
		"holds, by its token."}, t.lockRelease)
	mcp.AddTool(s, &mcp.Tool{Name: "queue_enqueue", Description: "Add a message to a work queue. max_attempts " +
		"sends it to the dead letters after that many claims; idempotency_key makes sending it twice add one; " +
		"max_length fails with queue_full while the queue holds that many messages."}, t.enqueue)
	mcp.AddTool(s, &mcp.Tool{Name: "queue_claim", Description: "Claim up to max messages of a queue for " +
		"visibility_ms, waiting up to wait_ms for one. Ack each one done (queue_ack with its receipt); one neither " +
		"acked nor released in time goes to another claim."}, t.claim)
	mcp.AddTool(s, &mcp.Tool{Name: "queue_ack", Description: "Ack a claimed message (its work is done) by its " +
		"receipt, or release it for another claim with release: true."}, t.ack)
	mcp.AddTool(s, &mcp.Tool{Name: "queue_stats", Description: "Count a queue's messages: visible (claimable " +
		"now), delayed, in_flight (claimed) and dead (dead letters). Without queue: every queue whose name starts " +
		"with prefix."}, t.queueStats)
	mcp.AddTool(s, &mcp.Tool{Name: "queue_dead_letters", Description: "Read a queue's dead letters, the messages " +
		"claimed max_attempts times without an ack, oldest first, with their last claimant (owner); cursor reads " +
		"the next page."}, t.deadLetters)
	mcp.AddTool(s, &mcp.Tool{Name: "queue_redrive", Description: "Give a queue's dead letters back to it, all " +
		"or those ids, claimable at once with their attempts counted from 0."}, t.redrive)
	mcp.AddTool(s, &mcp.Tool{Name: "counter_increment", Description: "Add by (default 1) to a counter atomically " +
		"and return its value; idempotency_key makes sending it twice count once."}, t.increment)
	mcp.AddTool(s, &mcp.Tool{Name: "barrier_arrive", Description: "Arrive at a barrier that waits for parties " +
		"workers, and wait up to wait_ms for the others: the last to arrive trips it and all pass together " +
		"(tripped: true), for the next phase of the work. Not tripped when the wait ends: call again to wait on."}, t.arrive)
	mcp.AddTool(s, &mcp.Tool{Name: "workers_active", Description: "The workers with a live heartbeat, and " +
		"heartbeat: true first beats for this session's worker (ttl seconds)."}, t.workers)
	return s, t.stop
}

// stop releases the locks the session still holds.
func (t *tools) stop(ctx context.Context) {
	t.mu.Lock()
	locks := t.locks
	t.locks = map[string]*client.Lock{}
	t.mu.Unlock()
	for _, l := range locks {
		_ = l.Release(ctx) // best effort: the lease ends by itself anyway
	}
}

// entry is a key's state as the tools answer it.
type entry struct {
	Key       string            `json:"key"`
	Value     any               `json:"value"`
	Version   map[string]uint64 `json:"version,omitempty"`
	ETag      string            `json:"etag,omitempty"`
	Writer    string            `json:"writer,omitempty"`
	Conflict  bool              `json:"conflict,omitempty"`
	Siblings  int               `json:"siblings,omitempty"`
	ExpiresAt string            `json:"expires_at,omitempty"`
}

func newEntry(e *client.Entry) (entry, error) {
	out := entry{Key: e.Key, Version: e.Version, ETag: e.ETag, Writer: e.Writer, Conflict: e.Conflict, Siblings: e.Siblings}
	if !e.ExpiresAt.IsZero() {
		out.ExpiresAt = e.ExpiresAt.UTC().Format(time.RFC3339)
	}
	if e.Value != nil {
		if err := json.Unmarshal(e.Value, &out.Value); err != nil {
			return entry{}, fmt.Errorf("key %s: value: %w", e.Key, err)
		}
	}
	return out, nil
}

// ttlOption converts a TTL in seconds (nil: the server's default).
func ttlOption(secs *int64) []client.PutOption {
	if secs == nil {
		return nil
	}
	return []client.PutOption{client.TTL(time.Duration(*secs) * time.Second)}
}

type memoryUsageIn struct {
	Action    string `json:"action" jsonschema:"store, retrieve, list, delete or search"`
	Key       string `json:"key,omitempty" jsonschema:"the key; it may start with the namespace and a slash (task-sentinel/tasks/T1/state)"`
	Value     any    `json:"value,omitempty" jsonschema:"store: the value, any JSON"`
	Namespace string `json:"namespace,omitempty" jsonschema:"must be the session's namespace when given"`
	TTL       *int64 `json:"ttl,omitempty" jsonschema:"store: seconds until the key expires; 0 never"`
}

type memoryUsageOut struct {
	Action string   `json:"action"`
	Found  *bool    `json:"found,omitempty"`
	Entry  *entry   `json:"entry,omitempty"`
	Keys   []string `json:"keys,omitempty"`
}

func (t *tools) memoryUsage(ctx context.Context, _ *mcp.CallToolRequest, in memoryUsageIn) (*mcp.CallToolResult, memoryUsageOut, error) {
	out := memoryUsageOut{Action: in.Action}
	if in.Namespace != "" && in.Namespace != t.ns {
		return nil, out, fmt.Errorf("this session works in namespace %q, not %q", t.ns, in.Namespace)
	}
	key := strings.TrimPrefix(in.Key, t.ns+"/")
	switch in.Action {
	case "store":
		e, err := t.c.Put(ctx, key, in.Value, ttlOption(in.TTL)...)
		if err != nil {
			return nil, out, err
		}
		got, err := newEntry(e)
		out.Entry = &got
		return nil, out, err
	case "retrieve":
		e, err := t.c.Get(ctx, key)
		found := err == nil
		out.Found = &found
		if errors.Is(err, client.ErrNotFound) {
			return nil, out, nil
		}
		if err != nil {
			return nil, out, err
		}
		got, err := newEntry(e)
		out.Entry = &got
		return nil, out, err
	case "list":
		ks, err := t.c.Keys(ctx, key)
		out.Keys = ks
		return nil, out, err
	case "delete":
		err := t.c.Delete(ctx, key)
		found := !errors.Is(err, client.ErrNotFound)
		out.Found = &found
		if !found {
			err = nil
		}
		return nil, out, err
	case "search":
		// The literal segments before the first wildcard are the prefix
		// to list; the glob then picks.
		var prefix []string
		for _, seg := range strings.Split(key, "/") {
			if strings.ContainsAny(seg, "*?[") {
				break
			}
			prefix = append(prefix, seg)
		}
		ks, err := t.c.Keys(ctx, strings.Join(prefix, "/"))
		if err != nil {
			return nil, out, err
		}
		out.Keys = slices.DeleteFunc(ks, func(k string) bool { return !globMatch(key, k) })
		return nil, out, nil
	}
	return nil, out, fmt.Errorf("action %q: want store, retrieve, list, delete or search", in.Action)
}

// globMatch matches key against pattern segment by segment: * (and ?,
// [...]) within one segment, ** any number of segments.
func globMatch(pattern, key string) bool {
	return matchSegments(strings.Split(pattern, "/"), strings.Split(key, "/"))
}

func matchSegments(pat, segs []string) bool {
	if len(pat) == 0 {
		return len(segs) == 0
	}
	if pat[0] == "**" {
		for i := 0; i <= len(segs); i++ {
			if matchSegments(pat[1:], segs[i:]) {
				return true
			}
		}
		return false
	}
	if len(segs) == 0 {
		return false
	}
	ok, err := path.Match(pat[0], segs[0])
	return err == nil && ok && matchSegments(pat[1:], segs[1:])
}

type getIn struct {
	Key         string `json:"key"`
	Resolve     string `json:"resolve,omitempty" jsonschema:"lww, union, merge, max or siblings; default: the key's strategy"`
	Consistent  bool   `json:"consistent,omitempty" jsonschema:"read Redis, not the server's cache"`
	IfNoneMatch string `json:"if_none_match,omitempty" jsonschema:"an etag read before: answer unchanged while the key is still in that state"`
	WaitMs      int64  `json:"wait_ms,omitempty" jsonschema:"wait up to this long (at most 60000) for a change rather than answer unchanged or not found at once"`
}

type getOut struct {
	entry
	// Unchanged: the key is still in the state if_none_match names (no
	// entry then).
	Unchanged bool `json:"unchanged,omitempty"`
}

func (t *tools) get(ctx context.Context, _ *mcp.CallToolRequest, in getIn) (*mcp.CallToolResult, getOut, error) {
	var opts []client.GetOption
	if in.Resolve != "" {
		opts = append(opts, client.Resolve(in.Resolve))
	}
	if in.Consistent {
		opts = append(opts, client.Consistent())
	}
	if in.WaitMs > 0 {
		opts = append(opts, client.WaitForChange(time.Duration(in.WaitMs)*time.Millisecond))
	}
	var e *client.Entry
	var err error
	if in.IfNoneMatch != "" {
		var changed bool
		e, changed, err = t.c.GetIfChanged(ctx, in.Key, in.IfNoneMatch, opts...)
		if err == nil && !changed {
			return nil, getOut{entry: entry{Key: in.Key, ETag: in.IfNoneMatch}, Unchanged: true}, nil
		}
	} else {
		e, err = t.c.Get(ctx, in.Key, opts...)
	}
	if err != nil {
		return nil, getOut{}, err
	}
	out, err := newEntry(e)
	return nil, getOut{entry: out}, err
}

type putIn struct {
	Key     string            `json:"key"`
	Value   any               `json:"value" jsonschema:"any JSON"`
	TTL     *int64            `json:"ttl,omitempty" jsonschema:"seconds until the key expires; 0 never; default the server's"`
	IfMatch string            `json:"if_match,omitempty" jsonschema:"an etag: write only if the key is still in that state"`
	Context map[string]uint64 `json:"context,omitempty" jsonschema:"a version read before: the write supersedes what it saw"`
}

func (t *tools) put(ctx context.Context, _ *mcp.CallToolRequest, in putIn) (*mcp.CallToolResult, entry, error) {
	opts := ttlOption(in.TTL)
	if in.IfMatch != "" {
		opts = append(opts, client.IfMatch(in.IfMatch))
	}
	if in.Context != nil {
		opts = append(opts, client.WithContext(in.Context))
	}
	e, err := t.c.Put(ctx, in.Key, in.Value, opts...)
	if err != nil {
		return nil, entry{}, err
	}
	out, err := newEntry(e)
	return nil, out, err
}

type patchIn struct {
	Key   string         `json:"key"`
	Merge map[string]any `json:"merge" jsonschema:"a JSON merge patch (RFC 7386)"`
}

func (t *tools) patch(ctx context.Context, _ *mcp.CallToolRequest, in patchIn) (*mcp.CallToolResult, entry, error) {
	e, err := t.c.Patch(ctx, in.Key, in.Merge)
	if err != nil {
		return nil, entry{}, err
	}
	out, err := newEntry(e)
	return nil, out, err
}

type deleteIn struct {
	Key     string `json:"key"`
	IfMatch string `json:"if_match,omitempty"`
}

type deleteOut struct {
	Deleted bool `json:"deleted"`
}

func (t *tools) delete(ctx context.Context, _ *mcp.CallToolRequest, in deleteIn) (*mcp.CallToolResult, deleteOut, error) {
	var opts []client.DeleteOption
	if in.IfMatch != "" {
		opts = append(opts, client.IfMatch(in.IfMatch))
	}
	err := t.c.Delete(ctx, in.Key, opts...)
	return nil, deleteOut{Deleted: err == nil}, err
}

type listIn struct {
	Prefix string `json:"prefix,omitempty" jsonschema:"e.g. tasks/; empty lists every key"`
}

type listOut struct {
	Keys []string `json:"keys"`
}

func (t *tools) list(ctx context.Context, _ *mcp.CallToolRequest, in listIn) (*mcp.CallToolResult, listOut, error) {
	ks, err := t.c.Keys(ctx, in.Prefix)
	if ks == nil {
		ks = []string{}
	}
	return nil, listOut{Keys: ks}, err
}

type lockIn struct {
	Name   string `json:"name" jsonschema:"the lock's name, a key path (tasks/T1)"`
	TTLMs  int64  `json:"ttl_ms,omitempty" jsonschema:"the lease in ms; default 30000"`
	WaitMs int64  `json:"wait_ms,omitempty" jsonschema:"how long to wait for the holder; default 0"`
	Keep   bool   `json:"keep,omitempty" jsonschema:"refresh the lease until released or this session ends"`
}

type lockOut struct {
	Name      string `json:"name"`
	Token     string `json:"token"`
	Fence     uint64 `json:"fence,omitempty"`
	ExpiresAt string `json:"expires_at"`
}

func (t *tools) lockAcquire(ctx context.Context, _ *mcp.CallToolRequest, in lockIn) (*mcp.CallToolResult, lockOut, error) {
	l, err := t.c.Lock(ctx, in.Name, client.LockOptions{
		TTL: time.Duration(in.TTLMs) * time.Millisecond, Wait: time.Duration(in.WaitMs) * time.Millisecond})
	if err != nil {
		return nil, lockOut{}, err
	}
	return nil, t.hold(l, in.Keep), nil
}

// hold keeps a granted lock or permit for the session, refreshed when
// keep is set, and says what was granted.
func (t *tools) hold(l *client.Lock, keep bool) lockOut {
	if keep {
		// Not the call's context: the keeper outlives the call, until
		// lock_release or the session's end.
		l.Keep(context.Background())
	}
	t.mu.Lock()
	t.locks[l.Token] = l
	t.mu.Unlock()
	return lockOut{Name: l.Name, Token: l.Token, Fence: l.Fence, ExpiresAt: l.ExpiresAt().UTC().Format(time.RFC3339Nano)}
}

type permitIn struct {
	Name   string `json:"name" jsonschema:"the semaphore's name, a key path (apis/search)"`
	Limit  int    `json:"limit" jsonschema:"how many permits the semaphore has, 1 to 1000; every holder asks the same"`
	TTLMs  int64  `json:"ttl_ms,omitempty" jsonschema:"the lease in ms; default 30000"`
	WaitMs int64  `json:"wait_ms,omitempty" jsonschema:"how long to wait in line for a permit; default 0"`
	Keep   bool   `json:"keep,omitempty" jsonschema:"refresh the lease until released or this session ends"`
}

func (t *tools) permitAcquire(ctx context.Context, _ *mcp.CallToolRequest, in permitIn) (*mcp.CallToolResult, lockOut, error) {
	l, err := t.c.AcquirePermit(ctx, in.Name, in.Limit, client.LockOptions{
		TTL: time.Duration(in.TTLMs) * time.Millisecond, Wait: time.Duration(in.WaitMs) * time.Millisecond})
	if err != nil {
		return nil, lockOut{}, err
	}
	return nil, t.hold(l, in.Keep), nil
}

type releaseIn struct {
	Token string `json:"token" jsonschema:"the token lock_acquire returned"`
}

type releaseOut struct {
	Released bool `json:"released"`
}

func (t *tools) lockRelease(ctx context.Context, _ *mcp.CallToolRequest, in releaseIn) (*mcp.CallToolResult, releaseOut, error) {
	t.mu.Lock()
	l := t.locks[in.Token]
	delete(t.locks, in.Token)
	t.mu.Unlock()
	if l == nil {
		return nil, releaseOut{}, errors.New("this session holds no lock with that token")
	}
	err := l.Release(ctx)
	return nil, releaseOut{Released: err == nil}, err
}

type enqueueIn struct {
	Queue          string `json:"queue" jsonschema:"the queue's name, one segment"`
	Value          any    `json:"value" jsonschema:"any JSON"`
	DelayMs        int64  `json:"delay_ms,omitempty"`
	MaxAttempts    int    `json:"max_attempts,omitempty"`
	TTLMs          int64  `json:"ttl_ms,omitempty" jsonschema:"how long the message lives unclaimed; default until acked"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	MaxLength      int    `json:"max_length,omitempty" jsonschema:"add it only while the queue holds fewer messages, else queue_full"`
}

type messageOut struct {
	ID       string `json:"id"`
	Value    any    `json:"value,omitempty"`
	Attempts int    `json:"attempts"`
	Receipt  string `json:"receipt,omitempty"`
}

func newMessageOut(m *client.QueueMessage) (messageOut, error) {
	out := messageOut{ID: m.ID, Attempts: m.Attempts, Receipt: m.Receipt}
	if m.Value != nil {
		if err := m.Decode(&out.Value); err != nil {
			return messageOut{}, err
		}
	}
	return out, nil
}

func (t *tools) enqueue(ctx context.Context, _ *mcp.CallToolRequest, in enqueueIn) (*mcp.CallToolResult, messageOut, error) {
	m, err := t.c.Enqueue(ctx, in.Queue, in.Value, client.EnqueueOptions{
		Delay: time.Duration(in.DelayMs) * time.Millisecond, MaxAttempts: in.MaxAttempts,
		TTL: time.Duration(in.TTLMs) * time.Millisecond, IdempotencyKey: in.IdempotencyKey, MaxLength: in.MaxLength})
	if err != nil {
		return nil, messageOut{}, err
	}
	out, err := newMessageOut(m)
	return nil, out, err
}

type claimIn struct {
	Queue        string `json:"queue"`
	VisibilityMs int64  `json:"visibility_ms" jsonschema:"how long the messages stay yours unless acked or released"`
	WaitMs       int64  `json:"wait_ms,omitempty"`
	Max          int    `json:"max,omitempty" jsonschema:"default 1, at most 100"`
}

type claimOut struct {
	Messages []messageOut `json:"messages"`
}

func (t *tools) claim(ctx context.Context, _ *mcp.CallToolRequest, in claimIn) (*mcp.CallToolResult, claimOut, error) {
	msgs, err := t.c.Claim(ctx, in.Queue, client.ClaimOptions{Visibility: time.Duration(in.VisibilityMs) * time.Millisecond,
		Wait: time.Duration(in.WaitMs) * time.Millisecond, Max: in.Max})
	if err != nil {
		return nil, claimOut{}, err
	}
	out := claimOut{Messages: make([]messageOut, 0, len(msgs))}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range msgs {
		mo, err := newMessageOut(m)
		if err != nil {
			return nil, claimOut{}, err
		}
		t.msgs[m.Receipt] = m
		out.Messages = append(out.Messages, mo)
	}
	return nil, out, nil
}

type ackIn struct {
	Receipt string `json:"receipt" jsonschema:"the receipt queue_claim returned"`
	Release bool   `json:"release,omitempty" jsonschema:"give the message back for another claim instead"`
}

type ackOut struct {
	ID string `json:"id"`
}

func (t *tools) ack(ctx context.Context, _ *mcp.CallToolRequest, in ackIn) (*mcp.CallToolResult, ackOut, error) {
	t.mu.Lock()
	m := t.msgs[in.Receipt]
	delete(t.msgs, in.Receipt)
	t.mu.Unlock()
	if m == nil {
		return nil, ackOut{}, errors.New("this session claimed no message with that receipt")
	}
	var err error
	if in.Release {
		err = m.Release(ctx, 0)
	} else {
		err = m.Ack(ctx)
	}
	return nil, ackOut{ID: m.ID}, err
}

type queueStatsIn struct {
	Queue  string `json:"queue,omitempty" jsonschema:"a queue; empty: every queue under prefix"`
	Prefix string `json:"prefix,omitempty"`
}

type queueStatsOut struct {
	Queues []client.QueueStats `json:"queues"`
}

func (t *tools) queueStats(ctx context.Context, _ *mcp.CallToolRequest, in queueStatsIn) (*mcp.CallToolResult, queueStatsOut, error) {
	if in.Queue == "" {
		qs, err := t.c.Queues(ctx, in.Prefix)
		return nil, queueStatsOut{Queues: qs}, err
	}
	q, err := t.c.QueueStats(ctx, in.Queue)
	return nil, queueStatsOut{Queues: []client.QueueStats{q}}, err
}

type deadLettersIn struct {
	Queue  string `json:"queue"`
	Limit  int    `json:"limit,omitempty" jsonschema:"default 100, at most 1000"`
	Cursor string `json:"cursor,omitempty" jsonschema:"from the previous page"`
}

type deadLetterOut struct {
	ID       string `json:"id"`
	Value    any    `json:"value,omitempty"`
	Attempts int    `json:"attempts"`
	Owner    string `json:"owner,omitempty" jsonschema:"the worker that claimed it last"`
	DeadAt   string `json:"dead_at"`
}

type deadLettersOut struct {
	Dead     int             `json:"dead" jsonschema:"the queue's dead letters in all"`
	Messages []deadLetterOut `json:"messages"`
	Cursor   string          `json:"cursor,omitempty" jsonschema:"reads the next page when not empty"`
}

func (t *tools) deadLetters(ctx context.Context, _ *mcp.CallToolRequest, in deadLettersIn) (*mcp.CallToolResult, deadLettersOut, error) {
	page, err := t.c.DeadLetters(ctx, in.Queue, in.Cursor, in.Limit)
	if err != nil {
		return nil, deadLettersOut{}, err
	}
	out := deadLettersOut{Dead: page.Dead, Cursor: page.Cursor, Messages: make([]deadLetterOut, 0, len(page.Messages))}
	for _, m := range page.Messages {
		mo, err := newMessageOut(m)
		if err != nil {
			return nil, deadLettersOut{}, err
		}
		out.Messages = append(out.Messages, deadLetterOut{ID: mo.ID, Value: mo.Value, Attempts: mo.Attempts, Owner: m.Owner,
			DeadAt: m.DeadAt.UTC().Format(time.RFC3339Nano)})
	}
	return nil, out, nil
}

type redriveIn struct {
	Queue string   `json:"queue"`
	IDs   []string `json:"ids,omitempty" jsonschema:"the dead letters to give back; empty: all"`
}

type redriveOut struct {
	Redriven int `json:"redriven"`
	Left     int `json:"left" jsonschema:"dead letters still there"`
}

func (t *tools) redrive(ctx context.Context, _ *mcp.CallToolRequest, in redriveIn) (*mcp.CallToolResult, redriveOut, error) {
	n, left, err := t.c.Redrive(ctx, in.Queue, in.IDs...)
	return nil, redriveOut{Redriven: n, Left: left}, err
}

type incrementIn struct {
	Name           string `json:"name" jsonschema:"the counter's name, a key path"`
	By             *int64 `json:"by,omitempty" jsonschema:"default 1; negative subtracts"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

type counterOut struct {
	Name  string `json:"name"`
	Value int64  `json:"value"`
}

func (t *tools) increment(ctx context.Context, _ *mcp.CallToolRequest, in incrementIn) (*mcp.CallToolResult, counterOut, error) {
	by := int64(1)
	if in.By != nil {
		by = *in.By
	}
	var opts []client.PutOption
	if in.IdempotencyKey != "" {
		opts = append(opts, client.IdempotencyKey(in.IdempotencyKey))
	}
	c, err := t.c.Increment(ctx, in.Name, by, opts...)
	if err != nil {
		return nil, counterOut{}, err
	}
	return nil, counterOut{Name: c.Name, Value: c.Value}, nil
}

type arriveIn struct {
	Name    string `json:"name" jsonschema:"the barrier's name, a key path (phases/p1)"`
	Parties int    `json:"parties" jsonschema:"how many workers the barrier waits for"`
	WaitMs  int64  `json:"wait_ms,omitempty" jsonschema:"how long to wait for the others, at most 60000"`
}

func (t *tools) arrive(ctx context.Context, _ *mcp.CallToolRequest, in arriveIn) (*mcp.CallToolResult, *client.BarrierState, error) {
	st, err := t.c.Arrive(ctx, in.Name, in.Parties, client.BarrierOptions{Wait: time.Duration(in.WaitMs) * time.Millisecond})
	return nil, st, err
}

type workersIn struct {
	Heartbeat bool  `json:"heartbeat,omitempty" jsonschema:"beat for this session's worker first"`
	TTL       int64 `json:"ttl,omitempty" jsonschema:"the heartbeat's TTL in seconds; default the server's"`
}

type workersOut struct {
	Workers []string `json:"workers"`
}

func (t *tools) workers(ctx context.Context, _ *mcp.CallToolRequest, in workersIn) (*mcp.CallToolResult, workersOut, error) {
	if in.Heartbeat {
		var opts []client.HeartbeatOption
		if in.TTL > 0 {
			opts = append(opts, client.HeartbeatTTL(time.Duration(in.TTL)*time.Second))
		}
		if _, err := t.c.Heartbeat(ctx, opts...); err != nil {
			return nil, workersOut{}, err
		}
	}
	ws, err := t.c.ActiveWorkers(ctx)
	out := workersOut{Workers: []string{}}
	for _, w := range ws {
		out.Workers = append(out.Workers, w.ID)
	}
	return nil, out, err
}
