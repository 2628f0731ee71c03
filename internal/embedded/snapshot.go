package embedded

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// entry is one Redis key of a snapshot, with its contents as Redis gave
// them: strings are bytes, so values, fields and members round-trip
// whatever they hold.
type entry struct {
	Key  string
	Type string // string, hash, zset, set, list or stream
	// ExpiresAt is when the key expires (Unix ms), 0 when it does not.
	ExpiresAt int64
	// Items: a string's value alone, a hash's fields and values, a sorted
	// set's members and scores (as Redis writes them: "inf" too), a set's
	// members, a list's items in order.
	Items []string
	// Stream: a stream's entries in order.
	Stream []streamEntry
}

type streamEntry struct {
	ID     string
	Fields []string // field, value, …
}

// snapshot reads every key of rdb's database at one instant, sorted by
// name. Expiries become absolute, by this process's clock.
//
// It reads in a MULTI/EXEC transaction, which Redis runs whole, between
// two other commands: the keys listed and their types are read first,
// then the transaction lists the keys again and reads each by its type,
// and the snapshot holds when the transaction found the same keys with the
// same types. Otherwise (keys created, deleted or retyped in between) it
// tries again, and after snapshotTries it reads with snapshotScript
// instead. The transaction stops the embedded Redis about a fifth as long
// as the script, whose replies gopher-lua converts twice: with 20,000
// keys, 95 ms against 541 ms (BenchmarkSave, 2 CPUs).
func snapshot(ctx context.Context, rdb *redis.Client) ([]entry, error) {
	for range snapshotTries {
		entries, ok, err := snapshotTx(ctx, rdb)
		if err != nil || ok {
			return entries, err
		}
	}
	return snapshotLua(ctx, rdb)
}

// snapshotTries is how many transactions snapshot tries before the script.
const snapshotTries = 3

// readByType is the command that reads a key of each type whole.
var readByType = map[string][]string{
	"string": {"GET"},
	"hash":   {"HGETALL"},
	"zset":   {"ZRANGE", "0", "-1", "WITHSCORES"},
	"set":    {"SMEMBERS"},
	"list":   {"LRANGE", "0", "-1"},
	"stream": {"XRANGE", "-", "+"},
}

// snapshotTx is one try of snapshot's transaction: ok is false when the
// keys changed between the listing and the transaction.
func snapshotTx(ctx context.Context, rdb *redis.Client) (entries []entry, ok bool, err error) {
	names, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		return nil, false, fmt.Errorf("snapshot: %w", err)
	}
	types := make([]*redis.StatusCmd, len(names))
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range names {
			types[i] = p.Type(ctx, k)
		}
		return nil
	}); err != nil {
		return nil, false, fmt.Errorf("snapshot: %w", err)
	}
	type read struct {
		key, typ   string
		pttl, body *redis.Cmd
	}
	reads := make([]read, 0, len(names))
	var listed *redis.StringSliceCmd
	cmds, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		listed = p.Keys(ctx, "*")
		for i, k := range names {
			typ := types[i].Val()
			if typ == "none" { // gone since the listing: the second one tells
				continue
			}
			cmd, known := readByType[typ]
			if !known {
				return fmt.Errorf("snapshot: key %q is a %s, which a snapshot does not keep", k, typ)
			}
			args := []any{cmd[0], k}
			for _, a := range cmd[1:] {
				args = append(args, a)
			}
			reads = append(reads, read{key: k, typ: typ, pttl: p.Do(ctx, "PTTL", k), body: p.Do(ctx, args...)})
		}
		return nil
	})
	now := time.Now().UnixMilli()
	if err != nil {
		var rerr redis.Error
		for _, c := range cmds {
			// WRONGTYPE: a key was retyped since its type was read.
			if e := c.Err(); e != nil && !errors.As(e, &rerr) {
				return nil, false, fmt.Errorf("snapshot: %w", e)
			}
		}
		if !errors.As(err, &rerr) {
			return nil, false, fmt.Errorf("snapshot: %w", err)
		}
		return nil, false, nil
	}
	// The keys the transaction found must be the ones it read.
	if len(listed.Val()) != len(reads) {
		return nil, false, nil
	}
	wasRead := make(map[string]bool, len(reads))
	for _, r := range reads {
		wasRead[r.key] = true
	}
	for _, k := range listed.Val() {
		if !wasRead[k] {
			return nil, false, nil
		}
	}
	entries = make([]entry, 0, len(reads))
	for _, r := range reads {
		body := r.body.Val()
		if r.typ == "string" {
			body = []any{body}
		}
		e, err := decodeEntry([]any{r.key, r.typ, r.pttl.Val(), body}, now)
		if err != nil {
			return nil, false, err
		}
		if e.ExpiresAt >= 0 {
			entries = append(entries, e)
		}
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.Key, b.Key) })
	return entries, true, nil
}

// snapshotScript reads every key of the database in one atomic call, so
// that a snapshot never holds half of a write script's changes (a key
// without its index entry, a message without its queue entry): snapshot's
// way when keys keep changing under its transaction.
//
// KEYS: none declared: it reads every key (KEYS *), which only a single
// Redis allows, as the embedded one is
// ARGV: none
//
// Returns one {name, type, PTTL in ms (-1: no expiry), contents} per key:
// GET's value as a list of one, HGETALL, ZRANGE … WITHSCORES, SMEMBERS,
// LRANGE, or XRANGE's {id, {field, value, …}} entries. A key of another
// type (none that memsync writes) is an error.
var snapshotScript = redis.NewScript(snapshotSource)

const snapshotSource = `
local out = {}
for _, k in ipairs(redis.call('KEYS', '*')) do
  local t = redis.call('TYPE', k)
  if type(t) == 'table' then t = t['ok'] end
  local body
  if t == 'string' then body = {redis.call('GET', k)}
  elseif t == 'hash' then body = redis.call('HGETALL', k)
  elseif t == 'zset' then body = redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')
  elseif t == 'set' then body = redis.call('SMEMBERS', k)
  elseif t == 'list' then body = redis.call('LRANGE', k, 0, -1)
  elseif t == 'stream' then body = redis.call('XRANGE', k, '-', '+')
  else return redis.error_reply('snapshot: key ' .. k .. ' is a ' .. t .. ', which a snapshot does not keep') end
  out[#out + 1] = {k, t, redis.call('PTTL', k), body}
end
return out
`

// snapshotLua is snapshot by snapshotScript.
func snapshotLua(ctx context.Context, rdb redis.Scripter) ([]entry, error) {
	reply, err := snapshotScript.Run(ctx, rdb, nil).Slice()
	now := time.Now().UnixMilli()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	entries := make([]entry, 0, len(reply))
	for _, r := range reply {
		e, err := decodeEntry(r, now)
		if err != nil {
			return nil, err
		}
		if e.ExpiresAt < 0 { // expired while the script ran
			continue
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.Key, b.Key) })
	return entries, nil
}

func decodeEntry(r any, now int64) (entry, error) {
	f, ok := r.([]any)
	if !ok || len(f) != 4 {
		return entry{}, fmt.Errorf("snapshot: unexpected reply %T", r)
	}
	var e entry
	e.Key, _ = f[0].(string)
	e.Type, _ = f[1].(string)
	pttl, ok := f[2].(int64)
	if !ok {
		return entry{}, fmt.Errorf("snapshot: key %q: unexpected PTTL %v", e.Key, f[2])
	}
	switch {
	case pttl > 0:
		e.ExpiresAt = now + pttl
	case pttl != -1:
		e.ExpiresAt = -1
	}
	body, ok := f[3].([]any)
	if !ok {
		return entry{}, fmt.Errorf("snapshot: key %q: unexpected contents %T", e.Key, f[3])
	}
	if e.Type != "stream" {
		e.Items = make([]string, len(body))
		for i, v := range body {
			if e.Items[i], ok = v.(string); !ok {
				return entry{}, fmt.Errorf("snapshot: key %q: unexpected item %T", e.Key, v)
			}
		}
		canonicalOrder(&e)
		return e, nil
	}
	e.Stream = make([]streamEntry, len(body))
	for i, v := range body {
		pair, ok := v.([]any)
		if !ok || len(pair) != 2 {
			return entry{}, fmt.Errorf("snapshot: stream %q: unexpected entry %T", e.Key, v)
		}
		id, _ := pair[0].(string)
		fields, _ := pair[1].([]any)
		se := streamEntry{ID: id, Fields: make([]string, len(fields))}
		for j, fv := range fields {
			if se.Fields[j], ok = fv.(string); !ok {
				return entry{}, fmt.Errorf("snapshot: stream %q: unexpected field %T", e.Key, fv)
			}
		}
		e.Stream[i] = se
	}
	return e, nil
}

// canonicalOrder sorts a set's members and a hash's fields, which Redis
// gives in the order of its hash table: a snapshot of the same data then
// has the same digest.
func canonicalOrder(e *entry) {
	switch e.Type {
	case "set":
		slices.Sort(e.Items)
	case "hash":
		pairs := make([][2]string, len(e.Items)/2)
		for i := range pairs {
			pairs[i] = [2]string{e.Items[2*i], e.Items[2*i+1]}
		}
		slices.SortFunc(pairs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
		for i, p := range pairs {
			e.Items[2*i], e.Items[2*i+1] = p[0], p[1]
		}
	}
}

// restoreBatch is how many keys one pipeline restores.
const restoreBatch = 500

// restore writes entries into rdb, which should be empty: every key with
// its contents, and the time left of its expiry by this process's clock. A
// key that has expired since is left out. It returns how many keys it
// wrote.
func restore(ctx context.Context, rdb redis.Cmdable, entries []entry) (int, error) {
	now := time.Now().UnixMilli()
	written := 0
	for start := 0; start < len(entries); start += restoreBatch {
		pipe := rdb.Pipeline()
		for _, e := range entries[start:min(start+restoreBatch, len(entries))] {
			if e.ExpiresAt != 0 && e.ExpiresAt <= now {
				continue
			}
			args, err := restoreArgs(e)
			if err != nil {
				return written, err
			}
			if args != nil {
				pipe.Do(ctx, args...)
			}
			for _, se := range e.Stream {
				xadd := append([]any{"XADD", e.Key, se.ID}, strs(se.Fields)...)
				pipe.Do(ctx, xadd...)
			}
			if e.ExpiresAt != 0 {
				pipe.PExpireAt(ctx, e.Key, time.UnixMilli(e.ExpiresAt))
			}
			written++
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return written, fmt.Errorf("restore: %w", err)
		}
	}
	return written, nil
}

// restoreArgs is the command that recreates a key of any type but a
// stream (whose entries are added one by one), or nil for a stream.
func restoreArgs(e entry) ([]any, error) {
	var cmd string
	items := e.Items
	switch e.Type {
	case "string":
		if len(items) != 1 {
			return nil, fmt.Errorf("restore: string %q holds %d values", e.Key, len(items))
		}
		cmd = "SET"
	case "hash":
		cmd = "HSET"
	case "set":
		cmd = "SADD"
	case "list":
		cmd = "RPUSH"
	case "zset":
		cmd = "ZADD"
		// ZADD wants score, member; ZRANGE gave member, score.
		swapped := make([]string, len(items))
		for i := 0; i+1 < len(items); i += 2 {
			swapped[i], swapped[i+1] = items[i+1], items[i]
		}
		items = swapped
	case "stream":
		return nil, nil
	default:
		return nil, fmt.Errorf("restore: key %q has unknown type %q", e.Key, e.Type)
	}
	if e.Type != "string" && (len(items) == 0 || (e.Type == "hash" || e.Type == "zset") && len(items)%2 != 0) {
		return nil, fmt.Errorf("restore: %s %q holds %d items", e.Type, e.Key, len(items))
	}
	return append([]any{cmd, e.Key}, strs(items)...), nil
}

func strs(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// digest identifies a snapshot's contents, expiries to the second, so
// that a save can skip writing what the file already holds: an expiry read
// twice differs by the milliseconds between the reads.
func digest(entries []entry) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	put := func(s string) {
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	for _, e := range entries {
		put(e.Key)
		put(e.Type)
		put(strconv.FormatInt((e.ExpiresAt+500)/1000, 10))
		put(strconv.Itoa(len(e.Items)))
		for _, it := range e.Items {
			put(it)
		}
		put(strconv.Itoa(len(e.Stream)))
		for _, se := range e.Stream {
			put(se.ID)
			put(strconv.Itoa(len(se.Fields)))
			for _, f := range se.Fields {
				put(f)
			}
		}
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}
