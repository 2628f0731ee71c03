// Package store keeps memsync's vector-clocked keys in Redis.
//
// A key holds one or more siblings (see Envelope); every read-modify-write
// is one atomic Lua script (scripts.go), and siblings are resolved on read
// by the key's strategy (resolve.go, rules.go). Listing walks an index kept
// by the writes, never the Redis keyspace.
package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/pipeline"
	"github.com/memsync/memsync/internal/rediserr"
)

// Errors returned by the store. Callers match them with errors.Is.
var (
	ErrNotFound           = errors.New("store: not found")
	ErrPreconditionFailed = errors.New("store: precondition failed")
	ErrInvalidArgument    = errors.New("store: invalid argument")
	// ErrInvalidKey is keys.ErrInvalidKey, so one errors.Is covers both.
	ErrInvalidKey = keys.ErrInvalidKey
	// ErrUnavailable wraps any failure to reach Redis.
	ErrUnavailable = errors.New("store: backend unavailable")
	// ErrClosed is returned by writes to a closed Store.
	ErrClosed = errors.New("store: closed")
)

// Defaults of Config.
const (
	DefaultTTL        = time.Hour           // the seed's default
	DefaultMaxTTL     = 30 * 24 * time.Hour // a month
	DefaultSiblingCap = 32
	// AnonymousWriter writes when a request names no writer.
	AnonymousWriter = "anonymous"
)

// Config tunes a Store. Zero fields take the defaults above.
type Config struct {
	DefaultTTL time.Duration // TTL of a write that names none
	MaxTTL     time.Duration // the largest TTL a write may ask for
	SiblingCap int           // siblings past this are merged into one
	Rules      *Rules        // strategy per key; nil means the built-in defaults
	// Now is the clock for timestamps and expiries; nil means time.Now.
	Now func() time.Time
	// EventLogLen bounds the replayable event log (DefaultEventLogLen).
	EventLogLen int64
	// Committers is how many pipelines of writes may be in flight at once
	// (DefaultCommitters); MaxCommitBatch bounds the writes in one
	// (DefaultMaxCommitBatch).
	Committers     int
	MaxCommitBatch int
	// OnCommit, if set, hears the size of every pipeline of writes the
	// group committer sends (for a metrics histogram). It must be quick.
	OnCommit func(writes int)
	// PerKeyScripts runs every write in a script of its own and publishes
	// the events in a second call, as on Redis Cluster, where one script
	// cannot span the keys of a group of writes. New sets it for a
	// *redis.ClusterClient; otherwise a group of writes and its events go
	// in one script call (commitScript).
	PerKeyScripts bool
}

// Store reads and writes keys. It is safe for concurrent use.
type Store struct {
	rdb    redis.UniversalClient
	cfg    Config
	commit *committer
	count  counters
	reads  pipeline.Group // coalesces Get's reads into pipelines
	// scripts tracks the script cache for batches (batch.go).
	scripts scriptState
	memo    indexMemo // index scores recently raised (memo.go)
}

// New returns a Store on rdb.
func New(rdb redis.UniversalClient, cfg Config) (*Store, error) {
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = DefaultTTL
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.SiblingCap <= 0 {
		cfg.SiblingCap = DefaultSiblingCap
	}
	if cfg.DefaultTTL > cfg.MaxTTL {
		return nil, fmt.Errorf("%w: default TTL %s is above the maximum %s", ErrInvalidArgument, cfg.DefaultTTL, cfg.MaxTTL)
	}
	if cfg.Rules == nil {
		r, err := NewRules(nil)
		if err != nil {
			return nil, err
		}
		cfg.Rules = r
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.EventLogLen <= 0 {
		cfg.EventLogLen = DefaultEventLogLen
	}
	if cfg.Committers <= 0 {
		cfg.Committers = DefaultCommitters
	}
	if cfg.MaxCommitBatch <= 0 {
		cfg.MaxCommitBatch = DefaultMaxCommitBatch
	}
	if _, ok := rdb.(*redis.ClusterClient); ok {
		cfg.PerKeyScripts = true
	}
	s := &Store{rdb: rdb, cfg: cfg}
	s.commit = newCommitter(s)
	return s, nil
}

// Close stops the group committer after the writes it holds are done.
// Writes after Close fail with ErrClosed.
func (s *Store) Close() error {
	s.commit.close()
	return nil
}

// Config returns the configuration in force, defaults filled in.
func (s *Store) Config() Config { return s.cfg }

// Entry is a key's state as a reader sees it: its siblings and their
// resolution.
type Entry struct {
	Namespace string
	Key       string
	// Value is the resolved value; nil when Resolved is false.
	Value json.RawMessage
	// Version merges every sibling's clock: the causal context to send back.
	Version clock.Vector
	ETag    string
	// Timestamp and Writer are the newest sibling's.
	Timestamp int64
	Writer    string
	// ExpiresAt is the expiry in Unix ms, 0 for none.
	ExpiresAt int64
	Strategy  Strategy
	// Resolved is false when the strategy left several siblings to the client.
	Resolved bool
	// Siblings are every live sibling, oldest first; Discarded[i] tells
	// whether Siblings[i] did not contribute to Value.
	Siblings  []Envelope
	Discarded []bool
}

// Conflict reports whether the entry has concurrent siblings.
func (e Entry) Conflict() bool { return len(e.Siblings) > 1 }

// PutRequest is one write.
type PutRequest struct {
	Value json.RawMessage
	// ValueValid says that Value is known to be valid JSON (it was cut
	// from a request body validated whole), so the store only compacts it
	// rather than validating it again.
	ValueValid bool
	// Context is the version the writer last read; nil for none.
	Context clock.Vector
	// TTL is the lifetime; nil means the configured default, 0 no expiry.
	TTL *time.Duration
	// Writer names the writer; "" means AnonymousWriter.
	Writer string
	// IfMatch makes the write conditional on the current ETag.
	IfMatch string
	// IfNoneMatch makes the write create the key only.
	IfNoneMatch bool
	// IdempotencyKey, when set, makes the write safe to send again: a key
	// remembers the idempotency keys of its last IdempotencyKeep writes
	// that carried one, and a write whose key it remembers is not applied
	// again but answered with the key's current entry (Replayed). The same
	// idempotency key on a different request (value, context, TTL,
	// writer or conditions) is ErrInvalidArgument. 1-128 characters of
	// [A-Za-z0-9._:@-]. Put, and the puts of a Batch that is not atomic.
	IdempotencyKey string
	// IdempotencySubject, when set, is what tells this request from another
	// under the same IdempotencyKey, in place of its value, context, TTL
	// and conditions: for a write derived from another request (a PATCH,
	// whose value, context and kept TTL change from one try to the next),
	// a digest of that request. The writer still counts.
	IdempotencySubject string
}

// IdempotencyKeep is how many idempotency keys a key remembers: those of
// its latest writes that carried one.
const IdempotencyKeep = 8

// PutResult is what a write did.
type PutResult struct {
	Entry
	// Superseded counts the siblings the write replaced.
	Superseded int
	// Conflicted is true when the write left concurrent siblings.
	Conflicted bool
	// Written is the envelope this write stored, with its own version.
	Written Envelope
	// EventID is the id of the put event announcing the write.
	EventID uint64
	// Replayed is true when the write had been applied already under its
	// IdempotencyKey: nothing was written, no event sent, and Entry is the
	// key's current state (Written and EventID are zero).
	Replayed bool
}

// replay answers a write that had been applied already under its
// idempotency key: with what the key holds now, the write and anything
// after it. A key deleted since then is gone.
func (s *Store) replay(ctx context.Context, ns, key string) (PutResult, error) {
	s.count.replayed.Add(1)
	e, err := s.Get(ctx, ns, key, GetOptions{})
	if err != nil {
		return PutResult{}, err
	}
	return PutResult{Entry: e, Replayed: true}, nil
}

// Put writes a value to key in namespace ns. It returns ErrInvalidKey,
// ErrInvalidArgument, ErrPreconditionFailed or ErrUnavailable.
func (s *Store) Put(ctx context.Context, ns, key string, req PutRequest) (PutResult, error) {
	ttl, err := s.checkPut(ns, key, &req)
	if err != nil {
		return PutResult{}, err
	}
	now := s.cfg.Now()
	res, err := s.put(ctx, ns, key, req, now.UnixMilli(), expiry(now, ttl), idempotencyArg(req, ttl))
	if err != nil {
		return PutResult{}, err
	}
	if res.Replayed {
		return s.replay(ctx, ns, key)
	}
	if len(res.Siblings) > s.cfg.SiblingCap {
		if compacted, ok := s.compact(ctx, ns, key, req.Writer); ok {
			res.Entry = compacted.Entry
		}
	}
	return res, nil
}

// expiry is when a write at `at` with ttl expires, in Unix ms; 0 for no
// ttl. A TTL of a minute or more is rounded up to a whole second: a key
// rewritten within the same second then keeps its expiry, and the write
// script leaves its TTL and indexes alone (settle) instead of moving them
// by a few milliseconds. Shorter TTLs, heartbeats among them, stay exact.
func expiry(at time.Time, ttl time.Duration) int64 {
	if ttl <= 0 {
		return 0
	}
	exp := at.Add(ttl).UnixMilli()
	if ttl >= time.Minute {
		exp = (exp + 999) / 1000 * 1000
	}
	return exp
}

// compact merges a key's siblings into one once they pass the cap: the
// strategy's resolution (LWW for the siblings strategy) is written back by
// the writer that tipped it over, with the merged version as context, so it
// supersedes every sibling; nothing is dropped from the merge. It gives up
// after a few lost races: the next write past the cap tries again.
func (s *Store) compact(ctx context.Context, ns, key, writer string) (PutResult, bool) {
	for range 3 {
		cur, err := s.Get(ctx, ns, key, GetOptions{})
		if err != nil || len(cur.Siblings) <= s.cfg.SiblingCap {
			return PutResult{}, false
		}
		if !cur.Resolved {
			if cur, err = s.Get(ctx, ns, key, GetOptions{Resolve: LWW}); err != nil {
				return PutResult{}, false
			}
		}
		last := cur.Siblings[len(cur.Siblings)-1]
		res, err := s.put(ctx, ns, key, PutRequest{
			Value: cur.Value, Context: cur.Version, Writer: writer, IfMatch: cur.ETag,
		}, max(s.cfg.Now().UnixMilli(), last.Timestamp), cur.ExpiresAt, "")
		if err == nil {
			return res, true
		}
		if !errors.Is(err, ErrPreconditionFailed) {
			return PutResult{}, false
		}
	}
	return PutResult{}, false
}

// GetOptions tune a read.
type GetOptions struct {
	// Resolve overrides the key's strategy for this read; "" keeps it.
	Resolve Strategy
	// Consistent asks a read cache in front of the store to read Redis
	// instead of serving its copy. The store itself always reads Redis and
	// ignores it.
	Consistent bool
}

// Get reads key in namespace ns and resolves its siblings. It returns
// ErrInvalidKey, ErrNotFound or ErrUnavailable.
func (s *Store) Get(ctx context.Context, ns, key string, opt GetOptions) (Entry, error) {
	if err := validate(ns, key); err != nil {
		return Entry{}, err
	}
	s.count.reads.Add(1)
	var read *redis.MapStringStringCmd
	err := s.reads.Do(ctx, s.rdb, func(ctx context.Context, p redis.Pipeliner) {
		read = p.HGetAll(ctx, keys.Redis(ns, key))
	})
	if err == nil {
		err = read.Err()
	}
	if err != nil {
		return Entry{}, s.wrap("get", key, err)
	}
	fields := read.Val()
	return s.decode(ns, key, fields, opt.Resolve)
}

// GetMany reads several keys of namespace ns in one round trip. The result
// has one entry per key, in order; a key that does not exist gets an Entry
// with an empty Key. It returns ErrInvalidKey or ErrUnavailable.
func (s *Store) GetMany(ctx context.Context, ns string, ks []string, opt GetOptions) ([]Entry, error) {
	for _, k := range ks {
		if err := validate(ns, k); err != nil {
			return nil, err
		}
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ks))
	for i, k := range ks {
		cmds[i] = pipe.HGetAll(ctx, keys.Redis(ns, k))
	}
	s.count.reads.Add(uint64(len(ks)))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, s.wrap("get", strings.Join(ks, ","), err)
	}
	out := make([]Entry, len(ks))
	for i, cmd := range cmds {
		e, err := s.decode(ns, ks[i], cmd.Val(), opt.Resolve)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

// decode turns a key's hash fields into its Entry; ErrNotFound when empty.
func (s *Store) decode(ns, key string, fields map[string]string, override Strategy) (Entry, error) {
	etag, ok := fields["etag"]
	if !ok {
		return Entry{}, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	exp, _ := strconv.ParseInt(fields["exp"], 10, 64)
	sibs, err := StoredSiblings(fields)
	if err != nil {
		return Entry{}, fmt.Errorf("store: get %q: %w", key, err)
	}
	if len(sibs) == 0 {
		return Entry{}, fmt.Errorf("%w: %q", ErrNotFound, key)
	}
	return s.entry(ns, key, etag, exp, sibs, override)
}

// StoredSiblings decodes the siblings of a key's Redis hash, as HGETALL
// returns its fields (see the layout in scripts.go): for tests and tools
// that check what Redis holds rather than what the store serves.
func StoredSiblings(fields map[string]string) ([]Envelope, error) {
	clocks := fields["clocks"]
	sibs := make([]Envelope, 0, 1)
	for f, blob := range fields {
		id, ok := strings.CutPrefix(f, "s:")
		if !ok {
			continue
		}
		e, err := decodeSibling(blob, siblingClock(clocks, id))
		if err != nil {
			return nil, fmt.Errorf("corrupt sibling %s: %w", f, err)
		}
		sibs = append(sibs, e)
	}
	return sibs, nil
}

// siblingClock returns the text of sibling id's clock from the hash's
// "clocks" field ("id|writer|clock;…"; the last entry of an id counts), or
// "" when it has none. A key has few siblings, so a scan beats building a
// map.
func siblingClock(field, id string) string {
	var text string
	for field != "" {
		var entry string
		entry, field, _ = strings.Cut(field, ";")
		eid, rest, ok := strings.Cut(entry, "|")
		if !ok || eid != id {
			continue
		}
		if _, c, ok := strings.Cut(rest, "|"); ok {
			text = c
		}
	}
	return text
}

// decodeSibling decodes a stored envelope. Its version is taken from the
// clock text the scripts keep (clockText), which parses far faster than the
// JSON object, and the rest is sliced out of the layout putScript writes;
// anything else goes through encoding/json. The scripts store an envelope
// without its version (`,"timestamp":…}`, see writeLib), whose version
// only clockText has; memsync once stored it whole (`{"version":…}`).
func decodeSibling(blob, clockText string) (Envelope, error) {
	v, verr := clock.Parse(clockText)
	if clockText != "" && verr == nil {
		if e, ok := sliceEnvelope(blob); ok {
			e.Version = v
			return e, nil
		}
	}
	var e Envelope
	if tail, ok := strings.CutPrefix(blob, ","); ok {
		if clockText == "" || verr != nil {
			return Envelope{}, fmt.Errorf("envelope without a version, and no clock for it (%q)", clockText)
		}
		err := json.Unmarshal([]byte("{"+tail), &e)
		e.Version = v
		return e, err
	}
	err := json.Unmarshal([]byte(blob), &e)
	return e, err
}

// sliceEnvelope reads the fields after the version of an envelope in the
// exact layout putScript writes: ,"timestamp":N,"writer":"W","value":V}
// (or once, after {"version":{…}), where W is a valid writer id (never
// escaped) and V comes last. The value is still checked to be valid JSON.
func sliceEnvelope(blob string) (Envelope, bool) {
	const tsTag, writerTag, valueTag = `,"timestamp":`, `,"writer":"`, `","value":`
	if !strings.HasSuffix(blob, "}") {
		return Envelope{}, false
	}
	rest, ok := strings.CutPrefix(blob, tsTag)
	if !ok {
		if !strings.HasPrefix(blob, `{"version":{`) {
			return Envelope{}, false
		}
		if _, rest, ok = strings.Cut(blob, "}"+tsTag); !ok {
			return Envelope{}, false
		}
	}
	tsText, rest, ok := strings.Cut(rest, writerTag)
	if !ok {
		return Envelope{}, false
	}
	writer, rest, ok := strings.Cut(rest, valueTag)
	if !ok || !clock.ValidID(writer) {
		return Envelope{}, false
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	value := json.RawMessage(rest[:len(rest)-1])
	if err != nil || !json.Valid(value) {
		return Envelope{}, false
	}
	return Envelope{Value: value, Timestamp: ts, Writer: writer}, true
}

// entry resolves sibs into the Entry a reader sees.
func (s *Store) entry(ns, key, etag string, exp int64, sibs []Envelope, override Strategy) (Entry, error) {
	rule := s.cfg.Rules.For(key)
	strategy := rule.Strategy
	if override != "" {
		strategy = override
	}
	sortOldestFirst(sibs)
	res, err := Resolve(sibs, strategy, rule.Field)
	if err != nil {
		return Entry{}, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	version := mergedVersion(sibs)
	newest := sibs[len(sibs)-1]
	return Entry{
		Namespace: ns, Key: key,
		Value: res.Value, Version: version, ETag: etag,
		Timestamp: newest.Timestamp, Writer: newest.Writer, ExpiresAt: exp,
		Strategy: strategy, Resolved: res.Resolved,
		Siblings: sibs, Discarded: res.Discarded,
	}, nil
}

// mergedVersion is the merge of every sibling's clock. Vectors are values
// shared freely once built, so a lone sibling's clock is the merge itself
// when it has no zero counter (Merge drops those).
func mergedVersion(sibs []Envelope) clock.Vector {
	if len(sibs) == 1 && len(sibs[0].Version) > 0 && !hasZero(sibs[0].Version) {
		return sibs[0].Version
	}
	version := make(clock.Vector, len(sibs[0].Version))
	for _, e := range sibs {
		for id, n := range e.Version {
			if n > version[id] {
				version[id] = n
			}
		}
	}
	return version
}

func hasZero(v clock.Vector) bool {
	for _, n := range v {
		if n == 0 {
			return true
		}
	}
	return false
}

// DeleteIdempotencyKeep is how long a key remembers the deletes of it that
// carried an idempotency key (DeleteRequest.IdempotencyKey), after the
// latest of them.
const DeleteIdempotencyKeep = 24 * time.Hour

// DeleteRequest is a delete's conditions.
type DeleteRequest struct {
	// IfMatch, when set, removes only an unchanged key: its etag must be
	// this one ("*": the key must exist).
	IfMatch string
	// IdempotencyKey, when set, makes the delete safe to send again: the
	// key remembers the IdempotencyKeep latest deletes of it that carried
	// one, each with a digest of its IfMatch, for DeleteIdempotencyKeep
	// after the latest, and such a delete sent again is not applied again
	// (DeleteResult.Replayed), even if the key was written since; one that
	// found no key is answered ErrNotFound again, even if the key was
	// created since. The same
	// idempotency key with another IfMatch is ErrInvalidArgument. 1-128
	// characters of [A-Za-z0-9._:@-].
	IdempotencyKey string
}

// checkDelete validates a delete's request.
func checkDelete(req DeleteRequest) error {
	if req.IdempotencyKey != "" && !clock.ValidID(req.IdempotencyKey) {
		return fmt.Errorf("%w: idempotency key %q must be 1-128 characters of [A-Za-z0-9._:@-]", ErrInvalidArgument, req.IdempotencyKey)
	}
	return nil
}

// DeleteResult is what a delete did.
type DeleteResult struct {
	// Replayed: the delete had been applied before under its
	// IdempotencyKey; nothing changed, and no event was sent. Delete's
	// error is then ErrNotFound when the key was absent the first time.
	Replayed bool
}

// Delete removes key. It returns ErrInvalidKey, ErrInvalidArgument,
// ErrNotFound, ErrPreconditionFailed or ErrUnavailable.
func (s *Store) Delete(ctx context.Context, ns, key string, req DeleteRequest) (DeleteResult, error) {
	if err := validate(ns, key); err != nil {
		return DeleteResult{}, err
	}
	if err := checkDelete(req); err != nil {
		return DeleteResult{}, err
	}
	if s.oneScript() {
		return s.deleteOne(ctx, ns, key, req)
	}
	d := newDeleteOp(ns, key, req, s.cfg.Now().UnixMilli())
	d.n, d.err = deleteScript.Run(ctx, s.rdb,
		[]string{keys.Redis(ns, key), keys.SubtreeIndex(ns, key), keys.Aux(ns, key, "deleted")}, key, d.ifMatchArg()).Int64()
	if err := d.result(s); err != nil || d.replayed() {
		return DeleteResult{Replayed: d.replayed()}, err
	}
	if d.emptied() {
		s.markEmptied(ctx, []keyRef{{ns, key}})
	}
	return DeleteResult{}, s.Publish(ctx, &Event{Type: EventDelete, Namespace: ns, Key: key, Timestamp: d.ts})
}

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		s.count.redisErrors.Add(1)
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

func validate(ns, key string) error {
	if err := keys.ValidateNamespace(ns); err != nil {
		return err
	}
	return keys.Validate(key)
}

// wrap is the package-level wrap that also counts the failure.
func (s *Store) wrap(op, key string, err error) error {
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		s.count.redisErrors.Add(1)
	}
	return wrap(op, key, err)
}

// wrap names the operation and classifies a Redis failure: a reply error
// from the server is a bug or misuse (internal), anything else means Redis
// could not be reached.
func wrap(op, key string, err error) error {
	return rediserr.Wrap("store", ErrUnavailable, op, key, err)
}

// newETag returns a fresh opaque etag. It is random rather than derived from
// the content so that a key deleted and written again never repeats an
// etag a client may still hold. 96 bits of math/rand/v2's generator
// (ChaCha8, seeded from the system per thread) make a repeat as unlikely
// as crypto/rand's would, at a tenth of the cost: an etag need not be
// unguessable, only new.
func newETag() string {
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint32(b[8:], rand.Uint32())
	return hex.EncodeToString(b[:])
}

func asString(v any) string {
	s, _ := v.(string)
	return s
}

// inf scores index entries of keys that never expire.
var inf = math.Inf(1)

// compactJSON strips insignificant whitespace from v so that stored values
// are canonical in layout (not in key order: values are opaque), and
// reports whether v is valid JSON: one pass for both; none when v is
// known to be valid and compact already.
func compactJSON(v json.RawMessage, valid bool) (json.RawMessage, bool) {
	if bytes.IndexAny(v, " \t\r\n") < 0 {
		return v, valid || json.Valid(v) // nothing to take out: the common case, no copy
	}
	var b bytes.Buffer
	if err := json.Compact(&b, v); err != nil {
		return nil, false
	}
	return b.Bytes(), true
}

// sortOldestFirst orders siblings by timestamp, then writer, then version:
// the order every instance resolves in.
func sortOldestFirst(sibs []Envelope) {
	slices.SortFunc(sibs, func(a, b Envelope) int {
		return cmp.Or(
			cmp.Compare(a.Timestamp, b.Timestamp),
			cmp.Compare(a.Writer, b.Writer),
			cmp.Compare(a.Version.String(), b.Version.String()),
		)
	})
}
