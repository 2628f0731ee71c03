package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/rediserr"
)

// MaxBatchOps is the most operations one Batch may carry (CONTRACT §10).
const MaxBatchOps = 1000

// Atomic batches retry this many times when a key they watch changes
// between the read of its etag and EXEC, then give up with ErrContended.
const atomicAttempts = 8

// errWatchMoved stands for the MOVED that go-redis's cluster client drops
// from a WATCH (see runAtomic); rediserr.Moved and Transient know it.
var errWatchMoved = errors.New("MOVED (a WATCH was refused; the slot has another master)")

// ErrContended is returned by an atomic Batch whose keys kept changing under
// it: nothing was applied, and trying again may succeed.
var ErrContended = fmt.Errorf("%w: the keys of the atomic batch kept changing; nothing was applied, retry", ErrUnavailable)

// OpKind names what one operation of a batch does.
type OpKind string

// The operations of a batch.
const (
	OpGet    OpKind = "get"
	OpPut    OpKind = "put"
	OpDelete OpKind = "delete"
)

// BatchOp is one operation of a batch.
type BatchOp struct {
	Kind      OpKind
	Namespace string
	Key       string
	// PutRequest is the write of an OpPut. OpGet and OpDelete read only its
	// IfMatch: the key's etag must be this one ("*": the key must exist).
	PutRequest
	// At is when the op was issued: a put's timestamp and the start of its
	// TTL. Zero means when Batch runs. A queued write sets it when it is
	// accepted, so that last-writer-wins orders it by acceptance.
	At time.Time
}

// BatchResult is what one operation of a batch did.
type BatchResult struct {
	// Entry is the key after a put, or as a get read it; zero for a delete
	// and on error.
	Entry Entry
	// Err is nil when the op succeeded, else ErrInvalidKey,
	// ErrInvalidArgument, ErrNotFound, ErrPreconditionFailed or
	// ErrUnavailable (Redis failed mid-batch: the op may or may not have
	// been applied).
	Err error
	// Replayed is true for a put or delete applied earlier under its
	// IdempotencyKey: not applied again, and a put's Entry is the key as it
	// is now; and for every put and delete of an atomic batch applied
	// earlier under its keys. A replayed delete that found no key when
	// first sent has ErrNotFound again.
	Replayed bool
}

// BatchError is the error of an atomic batch that applied nothing because
// of one of its operations. It wraps that operation's error.
type BatchError struct {
	Index int // of the operation in the batch, from 0
	Err   error
}

func (e *BatchError) Error() string { return fmt.Sprintf("op %d: %v", e.Index, e.Err) }
func (e *BatchError) Unwrap() error { return e.Err }

// scriptState remembers whether the write scripts are known to be in the
// Redis script cache (see Store.loadScripts), so that a batch need not
// load them first.
type scriptState struct{ loaded atomic.Bool }

// batchItem is one op on its way through a batch. Puts reuse the group
// committer's writeOp, so that both paths parse replies the same way.
type batchItem struct {
	op    *BatchOp
	w     writeOp                   // puts: the prepared write and its reply
	get   *redis.MapStringStringCmd // gets
	del   deleteOp                  // deletes
	entry Entry                     // gets: what was read
	err   error                     // validation failure, then the op's outcome
	// replayed: its atomic batch had been applied under its idempotency
	// keys, and was not applied again (runAtomic).
	replayed bool
}

// Batch runs ops, in order, in one Redis round trip, and publishes the
// change events of its writes in one call. It returns one result per op.
//
// Not atomic (atomic false): every op stands alone, as if sent by itself;
// an op that fails (bad key, failed If-Match, …) has its error in its
// result and the others still run. The error return is ErrInvalidArgument
// for more than MaxBatchOps ops, or ErrUnavailable when Redis could not be
// reached at all (then nothing ran).
//
// Atomic: every op's precondition is checked against the state the ops
// before it leave, and either all ops apply or none does. An invalid op, or
// an If-Match that does not hold (an absent key holds none, for a delete
// too), fails the whole batch with a *BatchError naming the op, wrapping
// ErrInvalidKey, ErrInvalidArgument or ErrPreconditionFailed. Keys that
// change while the batch checks them make it start over, up to a few times
// (then ErrContended). On Redis Cluster every key of an atomic batch must be
// in one subtree ({namespace}/{first}/{second}), since a transaction cannot
// span hash slots; otherwise ErrInvalidArgument.
//
// A get in a batch sees the writes of the ops before it.
func (s *Store) Batch(ctx context.Context, ops []BatchOp, atomic bool) ([]BatchResult, error) {
	if len(ops) > MaxBatchOps {
		return nil, fmt.Errorf("%w: a batch holds at most %d operations, not %d", ErrInvalidArgument, MaxBatchOps, len(ops))
	}
	if len(ops) == 0 {
		return []BatchResult{}, nil
	}
	now := s.cfg.Now()
	items := make([]batchItem, len(ops))
	for i := range ops {
		it := &items[i]
		it.op = &ops[i]
		it.err = s.prepareOp(it, now)
		if it.err != nil && atomic {
			return nil, &BatchError{Index: i, Err: it.err}
		}
	}
	if atomic {
		if err := keyAtomic(items); err != nil {
			return nil, err
		}
	}
	var err error
	switch {
	case atomic:
		err = s.runAtomic(ctx, items)
	case s.oneScript():
		err = s.runScripted(ctx, items)
	default:
		err = s.runPipeline(ctx, items)
	}
	if err != nil {
		return nil, err
	}
	return s.finishBatch(ctx, items, !atomic && s.oneScript()), nil
}

// keyAtomic gives the puts and deletes of an atomic batch that carry
// idempotency keys one digest of the whole batch, in place of their own:
// the batch applies whole or not at all, so it is sent again whole, the
// keys it wrote or deleted remember it, and the same keys on another
// batch are told apart whichever op differs (runAtomic). A batch where
// some puts carry keys and others none is refused; its deletes' keys are
// each optional (the HTTP API keys them all).
func keyAtomic(items []batchItem) error {
	h := sha256.New()
	keyed, unkeyed := 0, -1
	for i := range items {
		it := &items[i]
		op := it.op
		var digest string
		switch {
		case op.Kind == OpDelete:
			if op.IdempotencyKey != "" {
				keyed++
			}
		case op.Kind == OpPut && op.IdempotencyKey == "":
			unkeyed = i
		case op.Kind == OpPut:
			keyed++
			_, digest, _ = strings.Cut(it.w.idem, " ")
		}
		for _, part := range []string{string(op.Kind), op.Namespace, op.Key, op.IfMatch, digest} {
			h.Write([]byte(part))
			h.Write([]byte{0})
		}
	}
	if keyed == 0 {
		return nil
	}
	if unkeyed >= 0 {
		return &BatchError{Index: unkeyed, Err: fmt.Errorf("%w: in an atomic batch every put carries an idempotency key, or none does", ErrInvalidArgument)}
	}
	digest := hex.EncodeToString(h.Sum(nil)[:12])
	for i := range items {
		switch it := &items[i]; {
		case it.op.Kind == OpPut:
			it.w.idem = it.op.IdempotencyKey + " " + digest
		case it.op.Kind == OpDelete && it.op.IdempotencyKey != "":
			it.del.idem = it.op.IdempotencyKey + " " + digest
		}
	}
	return nil
}

// rememberedAtomic reports whether the atomic batch of items, whose ops
// carry idempotency keys (keyAtomic), was applied before: whether any of
// its puts' keys remembers that put's idempotency key, in idem, the
// fields read by its position in watched, or any of its deletes' keys
// that delete's, in deleted, by the delete's position in items (see
// runAtomic). The same idempotency key remembered for another batch is a
// *BatchError.
func rememberedAtomic(items []batchItem, index map[string]int, idem []string, deleted map[int]string) (bool, error) {
	replay := false
	for i := range items {
		it := &items[i]
		var arg, done string
		switch it.op.Kind {
		case OpPut:
			arg, done = it.w.idem, idem[index[keys.Redis(it.op.Namespace, it.op.Key)]]
		case OpDelete:
			arg, done = it.del.idem, deleted[i]
		}
		if arg == "" {
			continue
		}
		id, digest, _ := strings.Cut(arg, " ")
		for _, e := range strings.Split(done, ";") {
			f := strings.Fields(e) // a put's id digest etag, a delete's id digest [absent]
			if len(f) < 2 || f[0] != id {
				continue
			}
			if f[1] != digest {
				return false, &BatchError{Index: i, Err: fmt.Errorf("%w: idempotency key %q was used on %q for another request",
					ErrInvalidArgument, it.op.IdempotencyKey, it.op.Key)}
			}
			replay = true
			if it.op.Kind == OpDelete && len(f) == 3 && f[2] == "absent" {
				it.del.n = 4 // answered as when first sent (finishBatch)
			}
		}
	}
	return replay, nil
}

// CheckOp validates op as Batch would, without touching Redis: nil means
// only Redis can still refuse it (a precondition, an outage).
func (s *Store) CheckOp(op BatchOp) error {
	it := batchItem{op: &op}
	return s.prepareOp(&it, s.cfg.Now())
}

// prepareOp validates it.op and, for a put, fills in the write.
func (s *Store) prepareOp(it *batchItem, now time.Time) error {
	op := it.op
	if err := validate(op.Namespace, op.Key); err != nil {
		return err
	}
	switch op.Kind {
	case OpPut:
	case OpDelete:
		req := DeleteRequest{IfMatch: op.IfMatch, IdempotencyKey: op.IdempotencyKey}
		if err := checkDelete(req); err != nil {
			return err
		}
		it.del = newDeleteOp(op.Namespace, op.Key, req, now.UnixMilli())
		return nil
	case OpGet:
		return nil
	default:
		return fmt.Errorf("%w: op must be put, get or delete, not %q", ErrInvalidArgument, op.Kind)
	}
	req := op.PutRequest
	ttl, err := s.checkPut(op.Namespace, op.Key, &req)
	if err != nil {
		return err
	}
	at := now
	if !op.At.IsZero() {
		at = op.At
	}
	it.w = writeOp{ns: op.Namespace, key: op.Key, req: req, value: req.Value,
		ts: at.UnixMilli(), exp: expiry(at, ttl), etag: newETag(), idem: idempotencyArg(req, ttl)}
	return nil
}

// checkPut validates a write as Put does and returns its TTL, the default
// filled in; an empty writer becomes AnonymousWriter, and the value is
// made compact.
func (s *Store) checkPut(ns, key string, req *PutRequest) (time.Duration, error) {
	if err := validate(ns, key); err != nil {
		return 0, err
	}
	if req.Writer == "" {
		req.Writer = AnonymousWriter
	}
	if !clock.ValidID(req.Writer) {
		return 0, fmt.Errorf("%w: writer id %q must be 1-128 characters of [A-Za-z0-9._:@-]", ErrInvalidArgument, req.Writer)
	}
	if req.IdempotencyKey != "" && !clock.ValidID(req.IdempotencyKey) {
		return 0, fmt.Errorf("%w: idempotency key %q must be 1-128 characters of [A-Za-z0-9._:@-]", ErrInvalidArgument, req.IdempotencyKey)
	}
	v, ok := compactJSON(req.Value, req.ValueValid)
	if !ok {
		return 0, fmt.Errorf("%w: value is not valid JSON", ErrInvalidArgument)
	}
	req.Value = v
	ttl := s.cfg.DefaultTTL
	if req.TTL != nil {
		ttl = *req.TTL
	}
	if ttl < 0 || ttl > s.cfg.MaxTTL {
		return 0, fmt.Errorf("%w: ttl must be between 0 and %d seconds", ErrInvalidArgument, int64(s.cfg.MaxTTL/time.Second))
	}
	return ttl, nil
}

// runScripted sends a non-atomic batch in one pipeline: the index updates
// of its puts, then its ops in order, each run of writes between two gets
// as one commitScript call, which also publishes their events. A Redis that
// lost its script cache refuses every call at once: then the script is
// loaded and the whole pipeline sent again (gets included, so that each
// still sees the writes before it). Should it refuse only some calls (its
// cache was flushed or filled mid-pipeline), the writes of those fail with
// ErrUnavailable, since running them later could reorder writes to a key.
func (s *Store) runScripted(ctx context.Context, items []batchItem) error {
	if !s.scripts.loaded.Load() {
		_ = s.loadScripts(ctx) // a failure shows up below as NOSCRIPT, or as the outage it is
	}
	idx := indexWrites(items)
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		confirm := s.pipeIndexes(ctx, pipe, idx, false)
		type call struct {
			cmd    *redis.Cmd
			writes []scriptWrite
		}
		var calls []call
		var run []scriptWrite
		flush := func() {
			if len(run) > 0 {
				calls = append(calls, call{s.pipeCommit(ctx, pipe, run), run})
				run = nil
			}
		}
		sent := 0
		for i := range items {
			it := &items[i]
			if it.err != nil {
				continue
			}
			sent++
			switch it.op.Kind {
			case OpGet:
				flush()
				it.get = pipe.HGetAll(ctx, keys.Redis(it.op.Namespace, it.op.Key))
			case OpPut:
				run = append(run, scriptWrite{put: &it.w})
			case OpDelete:
				run = append(run, scriptWrite{del: &it.del})
			}
		}
		flush()
		if sent == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		refused := 0
		for _, c := range calls {
			if rediserr.NoScript(c.cmd.Err()) {
				refused++
			}
		}
		if refused > 0 && refused == len(calls) && attempt == 0 {
			if err := s.loadScripts(ctx); err == nil {
				continue
			}
		}
		if err != nil && !isReplyError(err) && refused == 0 {
			reached := false // did any command get a reply?
			for _, c := range calls {
				reached = reached || c.cmd.Err() == nil || isReplyError(c.cmd.Err())
			}
			for i := range items {
				if g := items[i].get; items[i].err == nil && g != nil {
					reached = reached || g.Err() == nil || isReplyError(g.Err())
				}
			}
			if !reached {
				return s.wrap("batch", items[0].op.Key, err)
			}
		}
		confirm()
		for _, c := range calls {
			if rediserr.NoScript(c.cmd.Err()) {
				c.cmd.SetErr(fmt.Errorf("%w: Redis lost its scripts in the middle of the batch; this op did not run, retry it", ErrUnavailable))
			}
			s.readCommit(c.cmd, c.writes)
		}
		return nil
	}
}

// runPipeline sends a non-atomic batch on Cluster: the index updates of
// its puts, then every op in order, each in a script of its own, in one
// pipeline; finishBatch publishes the events.
func (s *Store) runPipeline(ctx context.Context, items []batchItem) error {
	if !s.scripts.loaded.Load() {
		// Load both write scripts up front: a pipeline in which only one of
		// them is cached would run a later op on a key before an earlier one.
		// A failure shows up below as NOSCRIPT (or as the outage it is).
		_ = s.loadScripts(ctx)
	}
	pipe := s.rdb.Pipeline()
	confirm := s.pipeIndexes(ctx, pipe, indexWrites(items), true)
	sent := 0
	for i := range items {
		if items[i].err == nil {
			s.pipeOp(ctx, pipe, &items[i], false)
			sent++
		}
	}
	if sent == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !isReplyError(err) && s.allFailed(items) {
		return s.wrap("batch", items[0].op.Key, err)
	}
	confirm()
	return s.rerunNoScript(ctx, items)
}

// rerunNoScript runs again the ops whose script Redis did not have (its
// script cache was flushed, or Redis restarted). A key's ops are run again
// only when every write to it failed so, which keeps their order; a key on
// which some writes ran and others did not (the cache was flushed in the
// middle of the pipeline) gets ErrUnavailable for the ones that did not.
func (s *Store) rerunNoScript(ctx context.Context, items []batchItem) error {
	if !s.anyNoScript(items) {
		return nil
	}
	failed := map[string]bool{} // data key → every write to it failed with NOSCRIPT
	for i := range items {
		it := &items[i]
		if it.err != nil || it.op.Kind == OpGet {
			continue
		}
		rk := keys.Redis(it.op.Namespace, it.op.Key)
		all, seen := failed[rk]
		noScript := rediserr.NoScript(it.scriptErr())
		failed[rk] = noScript && (all || !seen)
	}
	s.scripts.loaded.Store(false)
	loadErr := s.loadScripts(ctx)
	pipe := s.rdb.Pipeline()
	n := 0
	for i := range items {
		it := &items[i]
		if it.err != nil {
			continue
		}
		rk := keys.Redis(it.op.Namespace, it.op.Key)
		switch {
		case failed[rk] && loadErr == nil:
			s.pipeOp(ctx, pipe, it, false)
			n++
		case rediserr.NoScript(it.scriptErr()):
			it.err = fmt.Errorf("%w: batch %q: Redis lost its scripts in the middle of the batch; this op did not run, retry it", ErrUnavailable, it.op.Key)
			if loadErr != nil {
				it.err = s.wrap("batch", it.op.Key, loadErr)
			}
		}
	}
	if n > 0 {
		_, _ = pipe.Exec(ctx) // each command's own error is read later
	}
	return nil
}

func (s *Store) anyNoScript(items []batchItem) bool {
	for i := range items {
		if items[i].err == nil && rediserr.NoScript(items[i].scriptErr()) {
			return true
		}
	}
	return false
}

// allFailed reports whether no op that was sent got a reply.
func (s *Store) allFailed(items []batchItem) bool {
	for i := range items {
		it := &items[i]
		if it.err != nil {
			continue
		}
		var err error
		switch it.op.Kind {
		case OpPut:
			err = it.w.run.Err()
		case OpGet:
			err = it.get.Err()
		case OpDelete:
			err = it.del.run.Err()
		}
		if err == nil || isReplyError(err) {
			return false
		}
	}
	return true
}

// scriptErr is the error of a write's script call; nil for a get.
func (it *batchItem) scriptErr() error {
	switch it.op.Kind {
	case OpPut:
		return it.w.run.Err()
	case OpDelete:
		return it.del.run.Err()
	}
	return nil
}

// LoadScripts puts the write scripts in Redis's script cache now, rather
// than leaving it to the first write that finds them missing. It returns
// ErrUnavailable when Redis does not take them.
func (s *Store) LoadScripts(ctx context.Context) error {
	if err := s.loadScripts(ctx); err != nil {
		return fmt.Errorf("%w: loading scripts: %w", ErrUnavailable, err)
	}
	return nil
}

// loadScripts puts the write scripts in the script cache (of every master,
// on Cluster).
func (s *Store) loadScripts(ctx context.Context) error {
	for _, sc := range []*redis.Script{putScript, deleteScript, commitScript, publishScript} {
		if err := sc.Load(ctx, s.rdb).Err(); err != nil {
			return err
		}
	}
	s.scripts.loaded.Store(true)
	return nil
}

// indexWrites lists the valid puts among items.
func indexWrites(items []batchItem) []indexWrite {
	out := make([]indexWrite, 0, len(items))
	for i := range items {
		if it := &items[i]; it.err == nil && it.op.Kind == OpPut {
			out = append(out, indexWrite{ns: it.w.ns, key: it.w.key, exp: it.w.exp})
		}
	}
	return out
}

// treeRounding is the granularity of the roots and children scores, in ms
// (see pipeIndexes).
const treeRounding = 60_000

// indexWrite is a put whose namespace-wide index entries a pipeline raises.
type indexWrite struct {
	ns, key string
	exp     int64 // Unix ms; 0 never expires
}

// pipeIndexes queues the namespace-wide index updates of the writes, with
// one ZADD per index key: on the roots and children indexes ZADD GT keeps
// the latest expiry of duplicates, and on the expiry index (when expiry is
// set: commitScript writes it itself) the last write of a key wins, as if
// they ran one by one. Roots and children this instance raised high enough
// within memoTTL are skipped. Call the returned function once the pipeline
// ran: it remembers what Redis confirmed.
//
// The namespace-wide indexes, raised before every write's script by
// pipeIndexes: the namespace in the namespaces index, the first segment in
// the roots index, the second in its parent's children index (all three
// scored by the latest expiry below them, so that Tidy may drop only dead
// ones), and "ns/key" in the global expiry index that the sweeper walks. The sweeper trusts only the key's own subtree
// index and hash, which the script keeps in step, and removes an expiry entry only
// while its score is in the past: set before the script (or by it), a
// future score is never lost to a sweep racing the write.
//
// Namespaces, roots and children are scored by the expiry rounded up to a
// whole minute: a subtree may then outlive its keys in them by up to a minute
// (a listing finds it empty), but a key written again and again with a
// TTL leaves them alone, the memo covering it, rather than raising them
// by a few milliseconds every time.
func (s *Store) pipeIndexes(ctx context.Context, pipe redis.Pipeliner, writes []indexWrite, expiry bool) (confirm func()) {
	// How a group's ZADD treats members it has: raise (GT), keep (NX, for
	// the names index, whose scores are all 0) or set; or unmark: ZREM
	// from a marks set, after the raise (see Tidy).
	const (
		set = iota
		raise
		keep
		unmark
	)
	type group struct {
		key     string
		mode    int
		members []redis.Z
		cmd     *redis.IntCmd
	}
	var groups []*group
	at := make(map[string]*group, 4)
	add := func(key string, mode int, member string, score float64) {
		g, ok := at[key]
		if !ok {
			g = &group{key: key, mode: mode}
			at[key] = g
			groups = append(groups, g)
		}
		g.members = append(g.members, redis.Z{Score: score, Member: member})
	}
	now := s.cfg.Now()
	// raiseTree raises a listing entry and, on the per-write path, takes
	// away any mark a delete or Tidy put on it: its group comes after the
	// raise's, so the ZREM runs after the ZADD.
	perKey := !s.oneScript()
	raiseTree := func(index, marks, member string, score float64) {
		add(index, raise, member, score)
		if perKey {
			add(marks, unmark, member, 0)
		}
	}
	// The writes of a batch mostly share their first two segments and, to
	// the minute, their expiry: a write whose roots and children entries
	// are the previous write's was covered or queued with it.
	var prev struct {
		ns, first, second string
		score             float64
		deep, ok          bool
	}
	for _, w := range writes {
		score := float64(w.exp)
		if w.exp == 0 {
			score = inf
		}
		treeScore := score
		if w.exp != 0 {
			treeScore = float64((w.exp + treeRounding - 1) / treeRounding * treeRounding)
		}
		first, rest, deep := strings.Cut(w.key, "/")
		second, _, _ := strings.Cut(rest, "/")
		sameRoot := prev.ok && w.ns == prev.ns && first == prev.first && treeScore == prev.score
		if !sameRoot {
			if !s.memo.covers(namespacesKey+"\x00"+w.ns, treeScore, now) {
				raiseTree(namespacesKey, namespaceMarks, w.ns, treeScore)
			}
			if roots := keys.Namespace(w.ns, "roots"); !s.memo.covers(roots+"\x00"+first, treeScore, now) {
				// As for children below: a root enters the names index
				// after the roots index.
				raiseTree(roots, rootMarks(w.ns), first, treeScore)
				add(keys.Namespace(w.ns, "names"), keep, first, 0)
			}
		}
		if deep && !(sameRoot && prev.deep && second == prev.second) {
			if children := keys.Aux(w.ns, first, "children"); !s.memo.covers(children+"\x00"+second, treeScore, now) {
				// Children first: the names index lists every child (Tidy
				// removes from both at once), so a child enters it after.
				raiseTree(children, childMarks(w.ns, first), second, treeScore)
				add(keys.Aux(w.ns, first, "names"), keep, second, 0)
			}
		}
		prev.ns, prev.first, prev.second, prev.score, prev.deep, prev.ok = w.ns, first, second, treeScore, deep, true
		if expiry && w.exp != 0 {
			add(expiryKey, set, w.ns+"/"+w.key, score)
		}
	}
	for _, g := range groups {
		switch g.mode {
		case raise:
			g.cmd = pipe.ZAddGT(ctx, g.key, g.members...)
		case keep:
			g.cmd = pipe.ZAddNX(ctx, g.key, g.members...)
		case unmark:
			members := make([]any, len(g.members))
			for i, m := range g.members {
				members[i] = m.Member
			}
			g.cmd = pipe.ZRem(ctx, g.key, members...)
		default:
			g.cmd = pipe.ZAdd(ctx, g.key, g.members...)
		}
	}
	return func() {
		for _, g := range groups {
			if g.mode != raise || g.cmd.Err() != nil {
				continue
			}
			for _, m := range g.members {
				s.memo.raised(g.key+"\x00"+m.Member.(string), m.Score, now)
			}
		}
	}
}

// pipeOp queues one op. In a transaction (eval) the scripts go as EVAL, so
// that a script missing from the cache cannot fail one op of an EXEC whose
// others apply.
func (s *Store) pipeOp(ctx context.Context, pipe redis.Pipeliner, it *batchItem, eval bool) {
	op := it.op
	switch op.Kind {
	case OpGet:
		it.get = pipe.HGetAll(ctx, keys.Redis(op.Namespace, op.Key))
	case OpPut:
		w := &it.w
		ks := []string{keys.Redis(w.ns, w.key), keys.SubtreeIndex(w.ns, w.key)}
		args := []any{w.key, w.req.Writer, w.req.Context.String(), envelopeTail(w), w.exp,
			w.ifMatchArg(), boolArg(w.req.IfNoneMatch), w.etag}
		if s.oneScript() {
			args = append(args, w.ns) // the script keeps the listing indexes (ownParents)
		}
		if eval {
			w.run = putScript.Eval(ctx, pipe, ks, args...)
		} else {
			w.run = putScript.EvalSha(ctx, pipe, ks, args...)
		}
	case OpDelete:
		ks := []string{keys.Redis(op.Namespace, op.Key), keys.SubtreeIndex(op.Namespace, op.Key), keys.Aux(op.Namespace, op.Key, "deleted")}
		args := []any{op.Key, it.del.ifMatchArg()}
		if s.oneScript() {
			args = append(args, op.Namespace) // the script keeps the listing indexes (ownParents)
		}
		if eval {
			it.del.run = deleteScript.Eval(ctx, pipe, ks, args...)
		} else {
			it.del.run = deleteScript.EvalSha(ctx, pipe, ks, args...)
		}
	}
}

// runAtomic applies items all or nothing: WATCH every data key, read their
// etags, check every precondition in op order against the state the ops
// before it leave, then run the ops in MULTI/EXEC. EXEC aborts when a
// watched key changed meanwhile; then it starts over.
func (s *Store) runAtomic(ctx context.Context, items []batchItem) error {
	watched := make([]string, 0, len(items))
	index := make(map[string]int, len(items)) // data key → position in watched
	for i := range items {
		rk := keys.Redis(items[i].op.Namespace, items[i].op.Key)
		if _, ok := index[rk]; !ok {
			index[rk] = len(watched)
			watched = append(watched, rk)
		}
	}
	if _, ok := s.rdb.(*redis.ClusterClient); ok {
		first := items[0].op
		tag := keys.Tag(first.Namespace, first.Key)
		for i := range items {
			op := items[i].op
			if t := keys.Tag(op.Namespace, op.Key); t != tag {
				return &BatchError{Index: i, Err: fmt.Errorf(
					"%w: on Redis Cluster an atomic batch must keep its keys in one subtree ({namespace}/{first}/{second}), since a transaction cannot span hash slots: %q is in %s, %q in %s",
					ErrInvalidArgument, first.Key, tag, op.Key, t)}
			}
		}
	}

	// The index updates go first, outside the transaction: they only ever
	// raise scores, so they are harmless if the batch is then refused (as
	// they are for a single write whose If-Match fails).
	pipe := s.rdb.Pipeline()
	confirm := s.pipeIndexes(ctx, pipe, indexWrites(items), true)
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return s.wrap("batch", items[0].op.Key, err)
		}
		confirm()
	}

	type state struct {
		exists bool
		etag   string
	}
	cur := make([]state, len(watched))
	keyed := false // its ops carry idempotency keys (keyAtomic)
	for i := range items {
		keyed = keyed || items[i].op.Kind == OpPut && items[i].w.idem != "" || items[i].op.Kind == OpDelete && items[i].del.idem != ""
	}
	var sent bool // the transaction reached Redis
	txn := func(tx *redis.Tx) error {
		sent = false
		fields := make([]*redis.SliceCmd, len(watched))
		deletes := make(map[int]*redis.StringCmd) // the keyed deletes' "#deleted" keys
		_, _ = tx.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, rk := range watched {
				if keyed {
					fields[i] = p.HMGet(ctx, rk, "etag", "idem")
				} else {
					fields[i] = p.HMGet(ctx, rk, "etag")
				}
			}
			for i := range items {
				if op := items[i].op; op.Kind == OpDelete && items[i].del.idem != "" {
					deletes[i] = p.Get(ctx, keys.Aux(op.Namespace, op.Key, "deleted"))
				}
			}
			return nil
		})
		idem := make([]string, len(watched))
		for i, c := range fields {
			v, err := c.Result()
			if err != nil {
				return err
			}
			etag, ok := v[0].(string)
			cur[i] = state{exists: ok, etag: etag}
			if keyed {
				idem[i], _ = v[1].(string)
			}
		}
		deleted := make(map[int]string, len(deletes))
		for i, c := range deletes {
			v, err := c.Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			deleted[i] = v
		}
		if keyed {
			replay, err := rememberedAtomic(items, index, idem, deleted)
			if err != nil {
				return err
			}
			if replay {
				// Applied before: its conditions, which it may have made
				// false itself, are not checked again, nothing is written,
				// and its gets read the keys as they are now.
				for i := range items {
					items[i].replayed = true
				}
				sent = true
				_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
					for i := range items {
						if items[i].op.Kind == OpGet {
							s.pipeOp(ctx, p, &items[i], true)
						}
					}
					return nil
				})
				return err
			}
		}
		for i := range items {
			it := &items[i]
			k := index[keys.Redis(it.op.Namespace, it.op.Key)]
			st := cur[k]
			if m := it.op.IfMatch; m != "" && (!st.exists || m != "*" && m != st.etag) {
				return &BatchError{Index: i, Err: fmt.Errorf("%w: %q changed, or does not exist", ErrPreconditionFailed, it.op.Key)}
			}
			switch it.op.Kind {
			case OpPut:
				if it.op.IfNoneMatch && st.exists {
					return &BatchError{Index: i, Err: fmt.Errorf("%w: %q exists", ErrPreconditionFailed, it.op.Key)}
				}
				cur[k] = state{exists: true, etag: it.w.etag}
			case OpDelete:
				cur[k] = state{}
			}
		}
		_, err := tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for i := range items {
				s.pipeOp(ctx, p, &items[i], true)
			}
			return nil
		})
		sent = true
		if err != nil && (errors.Is(err, redis.TxFailedErr) || !isReplyError(err)) {
			return err
		}
		return nil // a script's own error is read from its reply
	}

	backoff := time.Millisecond
	for attempt, moved := 1, 0; ; {
		err := s.rdb.Watch(ctx, txn, watched...)
		if err == nil && !sent {
			// go-redis's cluster client answers nil when WATCH met MOVED
			// and it may follow no redirect (MaxRedirects 0, see
			// cmd/server): nothing ran.
			err = errWatchMoved
		}
		if err == nil {
			return nil
		}
		var be *BatchError
		var wait time.Duration
		switch {
		case errors.As(err, &be):
			if errors.Is(be.Err, ErrPreconditionFailed) {
				// Refused whole: the puts' listing entries were raised
				// for keys that may not exist.
				var puts []keyRef
				for i := range items {
					if items[i].op.Kind == OpPut {
						puts = append(puts, keyRef{items[i].op.Namespace, items[i].op.Key})
					}
				}
				s.unraise(ctx, puts)
			}
			return err
		case rediserr.Moved(err) && moved < len(rediserr.MovedPauses):
			// On Cluster, WATCH met a slot that has moved (a failover, a
			// resharding): nothing ran. The client does not reload its
			// slot map for a WATCH by itself.
			if c, ok := s.rdb.(interface{ ReloadState(context.Context) }); ok {
				c.ReloadState(ctx)
			}
			wait = rediserr.MovedPauses[moved]
			moved++
		case !errors.Is(err, redis.TxFailedErr):
			return s.wrap("batch", items[0].op.Key, err)
		case attempt == atomicAttempts:
			return ErrContended
		default:
			wait = backoff
			backoff *= 2
			attempt++
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("store: batch: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// finishBatch reads every op's reply, publishes the events of the writes
// that ran in one call (unless the scripts did: published), and compacts
// keys a put left past the sibling cap.
func (s *Store) finishBatch(ctx context.Context, items []batchItem, published bool) []BatchResult {
	out := make([]BatchResult, len(items))
	var events []*Event
	var owners []*batchItem // owners[i] made events[i]; nil for expire events
	var replayed []*batchItem
	var emptied []keyRef // on the per-write path (deleteOp.emptied)
	var refused []keyRef // puts refused on keys that do not exist (refusedAbsent)
	reads := 0
	for i := range items {
		it := &items[i]
		if it.err != nil {
			continue
		}
		op := it.op
		switch op.Kind {
		case OpGet:
			reads++
			it.err = s.readGet(it)
		case OpPut:
			if it.replayed {
				replayed = append(replayed, it)
				continue
			}
			if it.w.run != nil {
				it.w.setReply(it.w.run.Slice())
			}
			it.w.res, it.err = s.parsePut(&it.w)
			if it.w.refusedAbsent() {
				refused = append(refused, keyRef{op.Namespace, op.Key})
			}
			if it.err != nil {
				continue
			}
			if it.w.res.Replayed {
				// Applied by an earlier batch: answered with the key as
				// it is now (readReplayed), neither counted nor announced.
				replayed = append(replayed, it)
				continue
			}
			if published {
				s.count.wrote(it.w.res)
				s.count.published(&it.w)
				continue
			}
			if it.w.expired {
				events = append(events, &Event{Type: EventExpire, Namespace: op.Namespace, Key: op.Key, Timestamp: it.w.ts})
				owners = append(owners, nil)
			}
			ev := &Event{Type: EventPut, Namespace: op.Namespace, Key: op.Key, Version: it.w.res.Version,
				Timestamp: it.w.ts, Writer: it.w.req.Writer}
			if len(it.w.value) <= maxEventValue {
				ev.Value = it.w.value
			}
			events = append(events, ev)
			owners = append(owners, it)
		case OpDelete:
			if it.replayed {
				if it.del.n == 4 {
					it.err = fmt.Errorf("%w: %q did not exist when this batch was first sent", ErrNotFound, op.Key)
				}
				continue
			}
			if it.err = it.del.result(s); it.err == nil && !published && !it.del.replayed() {
				events = append(events, &Event{Type: EventDelete, Namespace: op.Namespace, Key: op.Key, Timestamp: it.del.ts})
				owners = append(owners, it)
			}
			if it.err == nil && it.del.emptied() {
				emptied = append(emptied, keyRef{op.Namespace, op.Key})
			}
		}
	}
	s.count.reads.Add(uint64(reads))
	s.markEmptied(ctx, emptied)
	s.unraise(ctx, refused)
	if len(replayed) > 0 {
		s.readReplayed(ctx, replayed)
	}
	if len(events) > 0 {
		if err := s.publish(ctx, events...); err != nil {
			// The writes are in Redis but nobody heard of them: fail them,
			// as the group committer does, so that their writers retry.
			for _, it := range owners {
				if it != nil {
					it.err = err
				}
			}
		} else {
			for i, it := range owners {
				if it != nil && it.op.Kind == OpPut {
					it.w.res.EventID = events[i].ID
					s.count.wrote(it.w.res)
				}
			}
		}
	}
	for i := range items {
		it := &items[i]
		out[i].Err = it.err
		if it.op.Kind == OpDelete {
			// A replayed delete that found no key when first sent is
			// answered ErrNotFound again.
			out[i].Replayed = it.replayed || it.del.replayed()
		}
		if it.err != nil {
			continue
		}
		switch it.op.Kind {
		case OpGet:
			out[i].Entry = it.entry
		case OpPut:
			out[i].Entry, out[i].Replayed = it.w.res.Entry, it.w.res.Replayed
			if len(it.w.res.Siblings) > s.cfg.SiblingCap {
				if compacted, ok := s.compact(ctx, it.op.Namespace, it.op.Key, it.w.req.Writer); ok {
					out[i].Entry = compacted.Entry
				}
			}
		}
	}
	return out
}

// readReplayed reads, in one pipeline, the keys of puts that had been
// applied already under their idempotency keys, as their answers.
func (s *Store) readReplayed(ctx context.Context, items []*batchItem) {
	s.count.replayed.Add(uint64(len(items)))
	pipe := s.rdb.Pipeline()
	for _, it := range items {
		it.get = pipe.HGetAll(ctx, keys.Redis(it.op.Namespace, it.op.Key))
	}
	_, _ = pipe.Exec(ctx) // each command's own error is read below
	for _, it := range items {
		fields, err := it.get.Result()
		if err != nil {
			it.err = s.wrap("get", it.op.Key, err)
			continue
		}
		e, err := s.decode(it.op.Namespace, it.op.Key, fields, "")
		it.w.res, it.err = PutResult{Entry: e, Replayed: true}, err
	}
}

// readGet decodes a get's reply into it.entry and checks its If-Match.
func (s *Store) readGet(it *batchItem) error {
	fields, err := it.get.Result()
	if err != nil {
		return s.wrap("get", it.op.Key, err)
	}
	e, err := s.decode(it.op.Namespace, it.op.Key, fields, "")
	if err != nil {
		return err
	}
	if m := it.op.IfMatch; m != "" && m != "*" && m != e.ETag {
		return fmt.Errorf("%w: %q changed", ErrPreconditionFailed, it.op.Key)
	}
	it.entry = e
	return nil
}

// isReplyError reports whether err is an error reply from Redis (the
// command reached it) rather than a failure to reach it.
func isReplyError(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply)
}
