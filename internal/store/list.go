package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
)

// Listing limits.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// listChunk is how many subtrees one pipelined round trip reads.
const listChunk = 64

// List returns up to limit live keys of namespace ns that start with
// prefix, in path order (segment by segment), after the opaque cursor a
// previous page returned. The returned cursor is "" on the last page.
//
// It walks the indexes the writes keep — the first segments (roots), the
// second segments under each (children, in name order through their names
// index), and each subtree's keys — reading only the branches the prefix
// allows, and only as many children as the page needs, never the Redis
// keyspace. It returns ErrInvalidArgument or ErrUnavailable.
func (s *Store) List(ctx context.Context, ns, prefix, cursor string, limit int) ([]string, string, error) {
	if err := keys.ValidateNamespace(ns); err != nil {
		return nil, "", err
	}
	if err := validPrefix(prefix); err != nil {
		return nil, "", err
	}
	if limit <= 0 {
		limit = DefaultListLimit
	}
	if limit > MaxListLimit {
		return nil, "", fmt.Errorf("%w: limit must be at most %d", ErrInvalidArgument, MaxListLimit)
	}
	after, err := decodeCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	w := walk{s: s, ctx: ctx, ns: ns, prefix: prefix, after: after, want: limit + 1,
		future: &redis.ZRangeBy{Min: "(" + strconv.FormatInt(s.cfg.Now().UnixMilli(), 10), Max: "+inf"}}
	if err := w.run(); err != nil {
		return nil, "", s.wrap("list", prefix, err)
	}
	if len(w.out) <= limit {
		return w.out, "", nil
	}
	page := w.out[:limit]
	return page, encodeCursor(page[limit-1]), nil
}

// walk is one listing in progress.
type walk struct {
	s      *Store
	ctx    context.Context
	ns     string
	prefix string
	after  string // list only keys after this one; "" for all
	want   int
	future *redis.ZRangeBy // roots and children: scores in the future
	out    []string
}

func (w *walk) done() bool { return len(w.out) >= w.want }

func (w *walk) run() error {
	first, _, deep := strings.Cut(w.prefix, "/")
	afterFirst, _, _ := strings.Cut(w.after, "/")
	if deep {
		if w.after != "" && first < afterFirst {
			return nil
		}
		return w.roots([]string{first})
	}
	rootsKey, namesKey := keys.Namespace(w.ns, "roots"), keys.Namespace(w.ns, "names")
	pipe := w.s.rdb.Pipeline()
	nr, nn := pipe.ZCard(w.ctx, rootsKey), pipe.ZCard(w.ctx, namesKey)
	if _, err := pipe.Exec(w.ctx); err != nil {
		return err
	}
	if nn.Val() >= nr.Val() {
		return w.rootsByName(first, afterFirst)
	}
	// Roots written before the namespace's names index existed: every
	// live one, until Tidy has named them all.
	all, err := w.s.rdb.ZRangeByScore(w.ctx, rootsKey, w.future).Result()
	if err != nil {
		return err
	}
	firsts := slices.DeleteFunc(matching(all, first), func(f string) bool { return f < afterFirst })
	for chunk := range slices.Chunk(firsts, listChunk) {
		if err := w.roots(chunk); err != nil || w.done() {
			return err
		}
	}
	return nil
}

// rootsByName walks the live first segments that start with prefix and are
// not before from, in order, a chunk at a time through the namespace's
// names index, as childrenByName walks a root's children: a page of a
// flat namespace (keys of one segment) reads about as many names as it
// lists keys.
func (w *walk) rootsByName(prefix, from string) error {
	rootsKey, namesKey := keys.Namespace(w.ns, "roots"), keys.Namespace(w.ns, "names")
	return w.byName(namesKey, rootsKey, prefix, from, w.roots)
}

// byName pages through the names index namesKey (all scored 0, so in name
// order) from the first name that starts with prefix and is not before
// from, a chunk at a time, and hands visit the names of each chunk that
// index scores in the future (its live members), until the names no
// longer start with prefix or the walk is done.
func (w *walk) byName(namesKey, index, prefix, from string, visit func(names []string) error) error {
	start := max(prefix, from)
	min := "-"
	if start != "" {
		min = "[" + start
	}
	now := float64(w.s.cfg.Now().UnixMilli())
	for offset := int64(0); !w.done(); offset += listChunk {
		names, err := w.s.rdb.ZRangeByLex(w.ctx, namesKey, &redis.ZRangeBy{Min: min, Max: "+", Offset: offset, Count: listChunk}).Result()
		if err != nil {
			return err
		}
		end := len(names)
		for i, c := range names {
			if !strings.HasPrefix(c, prefix) {
				end = i // sorted: none after it starts with prefix either
				break
			}
		}
		if end == 0 {
			return nil
		}
		scores, err := w.s.rdb.ZMScore(w.ctx, index, names[:end]...).Result()
		if err != nil {
			return err
		}
		live := names[:0:0]
		for i, c := range names[:end] {
			if scores[i] > now {
				live = append(live, c)
			}
		}
		if len(live) > 0 {
			if err := visit(live); err != nil {
				return err
			}
		}
		if end < len(names) || len(names) < listChunk {
			return nil
		}
	}
	return nil
}

// roots walks the first segments fs, in order: each one's single-segment
// key, then its subtrees, reading what every one of them has in one round
// trip.
func (w *walk) roots(fs []string) error {
	_, rest, deep := strings.Cut(w.prefix, "/")
	second, _, deeper := strings.Cut(rest, "/")
	afterFirst, afterRest, _ := strings.Cut(w.after, "/")
	afterSecond, _, _ := strings.Cut(afterRest, "/")

	pipe := w.s.rdb.Pipeline()
	selves := make([]*redis.FloatCmd, len(fs))
	nc, nn := make([]*redis.IntCmd, len(fs)), make([]*redis.IntCmd, len(fs))
	for i, f := range fs {
		selves[i] = pipe.ZScore(w.ctx, keys.SubtreeIndex(w.ns, f), f)
		nc[i], nn[i] = pipe.ZCard(w.ctx, keys.Aux(w.ns, f, "children")), pipe.ZCard(w.ctx, keys.Aux(w.ns, f, "names"))
	}
	if _, err := pipe.Exec(w.ctx); err != nil && err != redis.Nil {
		return err
	}
	var own []redis.Z // the single-segment keys among fs
	for i, f := range fs {
		if score, err := selves[i].Result(); err == nil {
			own = append(own, redis.Z{Score: score, Member: f})
		}
	}
	liveOwn, err := w.live(own)
	if err != nil {
		return err
	}
	for i, f := range fs {
		if slices.Contains(liveOwn, f) {
			w.add([]string{f})
		}
		from := ""
		if f == afterFirst {
			from = afterSecond
		}
		switch {
		case deep && deeper: // the prefix names one subtree
			err = w.child(f, second, from)
		case nc[i].Val() == 0: // no subtrees
		case nn[i].Val() >= nc[i].Val():
			err = w.childrenByName(f, second, from)
		default:
			err = w.childrenByScore(f, second, from)
		}
		if err != nil || w.done() {
			return err
		}
	}
	return nil
}

// childrenByName walks the live subtrees f/c whose c starts with prefix
// and is not before from, in order, a chunk at a time through f's names
// index: a page of a listing reads about as many names as it lists keys,
// however many children f has. Their liveness comes from the children
// index (a name may outlive its child there until Tidy removes both).
func (w *walk) childrenByName(f, prefix, from string) error {
	childrenKey, namesKey := keys.Aux(w.ns, f, "children"), keys.Aux(w.ns, f, "names")
	return w.byName(namesKey, childrenKey, prefix, from, func(live []string) error { return w.subtrees(f, live) })
}

// child walks the subtree f/c when it is live and c is not before from.
func (w *walk) child(f, c, from string) error {
	if c < from {
		return nil
	}
	score, err := w.s.rdb.ZScore(w.ctx, keys.Aux(w.ns, f, "children"), c).Result()
	if errors.Is(err, redis.Nil) || err == nil && score <= float64(w.s.cfg.Now().UnixMilli()) {
		return nil
	}
	if err != nil {
		return err
	}
	return w.subtrees(f, []string{c})
}

// childrenByScore walks the live subtrees f/c whose c starts with prefix
// and is not before from, reading every live child of f: while f's names
// index is not filled yet (Tidy fills it).
func (w *walk) childrenByScore(f, prefix, from string) error {
	kids, err := w.s.rdb.ZRangeByScore(w.ctx, keys.Aux(w.ns, f, "children"), w.future).Result()
	if err != nil {
		return err
	}
	children := matching(kids, prefix)
	children = slices.DeleteFunc(children, func(c string) bool { return c < from })
	for chunk := range slices.Chunk(children, listChunk) {
		if w.done() {
			return nil
		}
		if err := w.subtrees(f, chunk); err != nil {
			return err
		}
	}
	return nil
}

// subtrees adds the live keys of the subtrees f/c for every c in children.
func (w *walk) subtrees(f string, children []string) error {
	pipe := w.s.rdb.Pipeline()
	cmds := make([]*redis.ZSliceCmd, len(children))
	for i, c := range children {
		cmds[i] = pipe.ZRangeWithScores(w.ctx, keys.SubtreeIndex(w.ns, f+"/"+c), 0, -1)
	}
	if _, err := pipe.Exec(w.ctx); err != nil {
		return err
	}
	var entries []redis.Z
	for _, cmd := range cmds {
		entries = append(entries, cmd.Val()...)
	}
	live, err := w.live(entries)
	if err != nil {
		return err
	}
	w.add(live)
	return nil
}

// live returns the keys of subtree index entries that are live. An entry
// scored in the future is; one whose score has passed may belong to a key
// that a write has since given a later expiry (a subtree index score is only
// a lower bound, see settle in scripts.go), so its key is asked for, in one
// round trip for all of them. Such entries are few: the sweeper raises or
// removes them within a sweep interval.
func (w *walk) live(entries []redis.Z) ([]string, error) {
	now := float64(w.s.cfg.Now().UnixMilli())
	out := make([]string, 0, len(entries))
	var due []string
	for _, z := range entries {
		k, _ := z.Member.(string)
		if z.Score > now {
			out = append(out, k)
		} else {
			due = append(due, k)
		}
	}
	if len(due) == 0 {
		return out, nil
	}
	pipe := w.s.rdb.Pipeline()
	exists := make([]*redis.IntCmd, len(due))
	for i, k := range due {
		exists[i] = pipe.Exists(w.ctx, keys.Redis(w.ns, k))
	}
	if _, err := pipe.Exec(w.ctx); err != nil {
		return nil, err
	}
	for i, k := range due {
		if exists[i].Val() == 1 {
			out = append(out, k)
		}
	}
	return out, nil
}

// add appends the keys that match the prefix and follow the cursor, in
// path order.
func (w *walk) add(ks []string) {
	ks = slices.DeleteFunc(ks, func(k string) bool {
		return !strings.HasPrefix(k, w.prefix) || (w.after != "" && pathCompare(k, w.after) <= 0)
	})
	slices.SortFunc(ks, pathCompare)
	w.out = append(w.out, ks...)
}

// matching returns the members that start with prefix, sorted.
func matching(members []string, prefix string) []string {
	out := members[:0:0]
	for _, m := range members {
		if strings.HasPrefix(m, prefix) {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}

// pathCompare orders keys segment by segment, so "a/b" sorts before "a-b"
// and "a" before "a/b": the order of a walk down the index tree.
func pathCompare(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if ca == '/' {
			return -1
		}
		if cb == '/' {
			return 1
		}
		return int(ca) - int(cb)
	}
	return len(a) - len(b)
}

// validPrefix accepts the start of a key: key characters and '/', within
// the key length limit.
func validPrefix(p string) error {
	if len(p) > keys.MaxKeyLen {
		return fmt.Errorf("%w: prefix is longer than %d bytes", ErrInvalidArgument, keys.MaxKeyLen)
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg != "" && !keys.ValidSegment(seg) && seg != "." {
			return fmt.Errorf("%w: prefix segment %q has characters outside [A-Za-z0-9._:@-]", ErrInvalidArgument, seg)
		}
	}
	return nil
}

func encodeCursor(key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(key))
}

func decodeCursor(c string) (string, error) {
	if c == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || keys.Validate(string(b)) != nil {
		return "", fmt.Errorf("%w: cursor is not one this server returned", ErrInvalidArgument)
	}
	return string(b), nil
}

// CursorAfter returns the cursor of a listing that goes on after key: a
// caller that stops a page early (GET /v1/keys?entries=true at its size
// bound) hands it on in place of List's.
func CursorAfter(key string) string { return encodeCursor(key) }
