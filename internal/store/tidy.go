package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
)

// Tidying the listing indexes. Writes raise the namespaces, roots and
// children indexes (ZADD GT) to the expiry of what they write, and only a
// delete on a single Redis takes anything out (dropParents, for a subtree
// it empties), so without tidying every namespace, first and second
// segment ever written stays listed, its score in the past, long after its
// keys expired: a fleet that names a subtree per task would grow the
// children index of tasks by one member per task, forever.
//
// On Cluster (the per-write path) a delete cannot reach those indexes, in
// other hash slots, and a subtree whose keys never expire would stay
// listed after its last delete, at +inf, forever. There the delete marks
// the entry above the subtree it emptied (markEmptied): member and time,
// by the clock of the Redis node that holds it, in a marks set beside the
// index, "#unlist". Every raise of an entry
// takes its mark away (pipeIndexes), and Tidy removes an entry whose mark
// is more than tidyMargin old when nothing is left below it (unlistMarked).
// That is safe against a write that creates a key below the entry: such a
// write either raised the entry, after the mark, which took the mark away
// (Tidy then keeps the entry; or the raise came after the removal and put
// it back), or skipped the raise because its instance's memo trusted an
// earlier one (indexMemo); a memo is trusted for memoTTL, 5 s, so that
// write created its key within 5 s of the mark (plus its time in flight),
// long before Tidy looks below the entry, and Tidy sees the key.
const (
	// DefaultTidyInterval is how often RunTidier tidies.
	DefaultTidyInterval = time.Minute
	// tidyPage is how many stale entries one read takes from an index.
	tidyPage = 500
)

// tidyMargin is how far in the past, by the Redis clock, an entry's score
// or mark must be before it is removed. A score is at least the expiry of
// every key below it, so every such key died that long ago; a write still
// in flight with a memo of that entry (indexMemo) wrote a key that is dead
// on arrival. A mark is older than any memo that skipped raising it, by
// far (memoTTL). The margin is for writes delayed in flight. A variable
// for tests, which shrink it with memoTTL.
var tidyMargin = time.Minute

// beforeUnlist, when set (by tests), runs between Tidy's reading of stale
// entries and their removal.
var beforeUnlist func(index string)

// namespacesKey lists every namespace written to (member: the namespace,
// score: as roots), so that tidying finds them without SCAN.
var namespacesKey = keys.Global("namespaces")

// Marks sets (see above): member, the entry's member in its index; score,
// when it was marked (Unix ms, by the clock of the Redis node that holds
// the set: markScript, which unlistMarkedScript reads too). Each is in its
// index's hash slot.
var namespaceMarks = keys.Global("unlist") // for namespacesKey

// rootMarks is the marks set of ns's roots index.
func rootMarks(ns string) string { return keys.Namespace(ns, "unlist") }

// childMarks is the marks set of the children index of ns's first segment f.
func childMarks(ns, f string) string { return keys.Aux(ns, f, "unlist") }

// TidyResult counts what one Tidy removed.
type TidyResult struct {
	Namespaces, Roots, Children int
}

// Tidy removes from the listing indexes every entry whose score is more
// than tidyMargin in the past by the Redis clock and under which nothing is
// left: a children entry whose subtree index is empty, then a roots entry
// without children or a single-segment key, then a namespace without roots.
// An entry that a write raises meanwhile stays (unlistPastScript), and one
// a write raises later is added again by it (ZADD GT adds a missing member),
// so a listing never misses a live key. It walks every namespace in
// namespacesKey and, for the indexes written before that key existed, the
// extra namespaces given.
func (s *Store) Tidy(ctx context.Context, extra ...string) (TidyResult, error) {
	var res TidyResult
	now, err := s.rdb.Time(ctx).Result()
	if err != nil {
		return res, s.wrap("tidy", "", err)
	}
	cutoff := strconv.FormatInt(now.Add(-tidyMargin).UnixMilli(), 10)
	nss, err := s.rdb.ZRange(ctx, namespacesKey, 0, -1).Result()
	if err != nil {
		return res, s.wrap("tidy", "", err)
	}
	seen := make(map[string]bool, len(nss)+len(extra))
	for _, ns := range append(nss, extra...) {
		if seen[ns] || keys.ValidateNamespace(ns) != nil {
			continue
		}
		seen[ns] = true
		if err := s.tidyNamespace(ctx, ns, cutoff, &res); err != nil {
			return res, s.wrap("tidy", "", err)
		}
	}
	// A namespace goes when it has no roots left.
	rootsOf := func(ns string) string { return keys.Namespace(ns, "roots") }
	n, err := s.unlist(ctx, namespacesKey, "", namespaceMarks, cutoff, rootsOf)
	res.Namespaces += n
	if err != nil {
		return res, s.wrap("tidy", "", err)
	}
	return res, nil
}

// tidyNamespace tidies the roots of ns and their children.
func (s *Store) tidyNamespace(ctx context.Context, ns, cutoff string, res *TidyResult) error {
	rootsKey, rootNames := keys.Namespace(ns, "roots"), keys.Namespace(ns, "names")
	if err := s.syncNames(ctx, rootsKey, rootNames); err != nil {
		return err
	}
	if err := s.checkRoots(ctx, ns, res); err != nil {
		return err
	}
	// A page at a time: a flat namespace (keys of one segment) has as many
	// roots as keys. Nothing here removes a root, so the pages stay put
	// but for writers' new roots, which a later Tidy sees.
	for start := int64(0); ; start += tidyPage {
		roots, err := s.rdb.ZRange(ctx, rootsKey, start, start+tidyPage-1).Result()
		if err != nil {
			return err
		}
		if err := s.tidyRoots(ctx, ns, roots, cutoff, res); err != nil {
			return err
		}
		if len(roots) < tidyPage {
			break
		}
	}
	// A root goes when it has no children left and no single-segment key.
	n, err := s.unlist(ctx, rootsKey, rootNames, rootMarks(ns), cutoff,
		func(f string) string { return keys.Aux(ns, f, "children") },
		func(f string) string { return keys.SubtreeIndex(ns, f) })
	res.Roots += n
	if err != nil {
		return err
	}
	return s.markIfEmpty(ctx, namespaceMarks, ns, rootsKey)
}

// tidyRoots tidies the children of the roots f of ns. One round trip asks
// what each has to do, and only those with something to do take more: in
// the steady state a page of roots costs one round trip.
func (s *Store) tidyRoots(ctx context.Context, ns string, roots []string, cutoff string, res *TidyResult) error {
	perKey := !s.oneScript()
	type probe struct {
		children, names, stale, marked, own, checked *redis.IntCmd
	}
	probes := make([]probe, len(roots))
	pipe := s.rdb.Pipeline()
	for i, f := range roots {
		p, children := &probes[i], keys.Aux(ns, f, "children")
		p.children, p.names = pipe.ZCard(ctx, children), pipe.ZCard(ctx, keys.Aux(ns, f, "names"))
		p.stale = pipe.ZCount(ctx, children, "-inf", cutoff)
		if perKey {
			// Any mark: whether one is due is its node's clock's to say
			// (unlistMarked), not the cutoff's, which another node told.
			p.marked = pipe.ZCard(ctx, childMarks(ns, f))
			p.own = pipe.ZCard(ctx, keys.SubtreeIndex(ns, f))
		}
	}
	if len(roots) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	// Whether the roots with children had them checked (checkChildren):
	// asked apart, as most roots of a flat namespace have none.
	pipe = s.rdb.Pipeline()
	for i, f := range roots {
		if probes[i].children.Val() > 0 {
			probes[i].checked = pipe.Exists(ctx, checkedKey(ns, f))
		}
	}
	if pipe.Len() > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	// On Cluster nothing else marks a root whose last child went.
	var bare []string
	for i, f := range roots {
		p := probes[i]
		check := p.checked != nil && p.checked.Val() == 0
		if check {
			n, err := s.checkChildren(ctx, ns, f)
			res.Children += n
			if err != nil {
				return err
			}
		}
		if !check && p.children.Val() == p.names.Val() && p.stale.Val() == 0 && (!perKey || p.marked.Val() == 0) {
			if perKey && p.children.Val() == 0 && p.own.Val() == 0 {
				bare = append(bare, f)
			}
			continue
		}
		children, names := keys.Aux(ns, f, "children"), keys.Aux(ns, f, "names")
		if err := s.syncNames(ctx, children, names); err != nil {
			return err
		}
		n, err := s.unlist(ctx, children, names, childMarks(ns, f), cutoff,
			func(c string) string { return keys.SubtreeIndex(ns, f+"/"+c) })
		res.Children += n
		if err != nil {
			return err
		}
		if err := s.markIfEmpty(ctx, rootMarks(ns), f, children, keys.SubtreeIndex(ns, f)); err != nil {
			return err
		}
	}
	return s.mark(ctx, rootMarks(ns), bare...)
}

// recheckEvery is how often Tidy looks below every listing entry scored
// +inf (checkUnexpiring), at least: a check holds for between it and a
// quarter more, so that the checks of entries checked together spread out.
const recheckEvery = 24 * time.Hour

// checkedKey is set while Tidy's look below every child of ns's first
// segment f scored +inf holds (checkChildren).
func checkedKey(ns, f string) string { return keys.Aux(ns, f, "children-checked") }

// checkChildren looks below every child of ns's first segment f scored
// +inf (checkUnexpiring). It returns how many children it took out.
func (s *Store) checkChildren(ctx context.Context, ns, f string) (int, error) {
	return s.checkUnexpiring(ctx, keys.Aux(ns, f, "children"), checkedKey(ns, f),
		func(c string) keyRef { return keyRef{ns, f + "/" + c} },
		func(c string) string { return keys.SubtreeIndex(ns, f+"/"+c) })
}

// checkRoots looks below every root of ns scored +inf (checkUnexpiring),
// unless that was done within recheckEvery: a root with no children and
// no key of one segment goes.
func (s *Store) checkRoots(ctx context.Context, ns string, res *TidyResult) error {
	flag := keys.Namespace(ns, "roots-checked")
	if n, err := s.rdb.Exists(ctx, flag).Result(); err != nil || n == 1 {
		return err
	}
	n, err := s.checkUnexpiring(ctx, keys.Namespace(ns, "roots"), flag,
		func(f string) keyRef { return keyRef{ns, f} },
		func(f string) string { return keys.Aux(ns, f, "children") },
		func(f string) string { return keys.SubtreeIndex(ns, f) })
	res.Roots += n
	return err
}

// checkUnexpiring looks below every member of the listing index scored
// +inf, then sets flag for recheckEvery or a little more, which its
// callers read so as to do it that seldom. Such an entry, above keys
// without expiry, never comes due, so only a delete or an expiry that
// empties its subtree takes it out or marks it. One with nothing below it
// here is one that a version before the marks left, or one whose
// delete's follow-up call (the mark, the unraise) failed with its write
// done, or one marked already: it is taken out, or marked for a later
// Tidy on the per-write path (unraise, of ref(member), a key whose
// subtree the member stands for; a mark already there stays as it is).
// It returns how many entries it took out.
func (s *Store) checkUnexpiring(ctx context.Context, index, flag string, ref func(member string) keyRef, below ...func(member string) string) (int, error) {
	var bare []keyRef
	for offset := int64(0); ; offset += tidyPage {
		members, err := s.rdb.ZRangeByScore(ctx, index, &redis.ZRangeBy{Min: "+inf", Max: "+inf", Offset: offset, Count: tidyPage}).Result()
		if err != nil {
			return 0, err
		}
		emptied, err := s.emptyBelow(ctx, members, below)
		if err != nil {
			return 0, err
		}
		for i, m := range members {
			if emptied[i] {
				bare = append(bare, ref(m))
			}
		}
		if len(members) < tidyPage {
			break
		}
	}
	n := s.unraise(ctx, bare)
	s.count.tidied.Add(uint64(n))
	return n, s.rdb.Set(ctx, flag, "1", recheckEvery+rand.N(recheckEvery/4)).Err()
}

// unlist removes from index (and mirror) the entries under which nothing
// is left: those scored more than tidyMargin in the past (unlistEmpty)
// and, on the per-write path, those marked more than tidyMargin ago
// (unlistMarked). It returns how many it removed.
func (s *Store) unlist(ctx context.Context, index, mirror, marks, cutoff string, below ...func(member string) string) (int, error) {
	n, err := s.unlistEmpty(ctx, index, mirror, cutoff, below...)
	if err != nil || s.oneScript() {
		return n, err
	}
	m, err := s.unlistMarked(ctx, index, mirror, marks, below...)
	return n + m, err
}

// syncNames brings a names index in line with the index it names, a
// root's children or a namespace's roots, when their sizes differ (a
// write adds a child to both, the child first; Tidy and a delete remove it
// from both at once). With fewer names it adds every child's: children
// written before the names index existed. With more, it removes the names
// of children that are gone: a name a write added after a delete dropped
// its child, and whose write then created nothing (a failed condition).
func (s *Store) syncNames(ctx context.Context, children, names string) error {
	pipe := s.rdb.Pipeline()
	nc, nn := pipe.ZCard(ctx, children), pipe.ZCard(ctx, names)
	if _, err := pipe.Exec(ctx); err != nil || nn.Val() == nc.Val() {
		return err
	}
	if nn.Val() > nc.Val() {
		return s.dropStrayNames(ctx, children, names)
	}
	for start := int64(0); ; start += tidyPage {
		kids, err := s.rdb.ZRange(ctx, children, start, start+tidyPage-1).Result()
		if err != nil || len(kids) == 0 {
			return err
		}
		zs := make([]redis.Z, len(kids))
		for i, c := range kids {
			zs[i] = redis.Z{Member: c}
		}
		if err := s.rdb.ZAddNX(ctx, names, zs...).Err(); err != nil {
			return err
		}
	}
}

// dropStrayNames removes the names whose child is not in children.
func (s *Store) dropStrayNames(ctx context.Context, children, names string) error {
	for offset := int64(0); ; {
		page, err := s.rdb.ZRange(ctx, names, offset, offset+tidyPage-1).Result()
		if err != nil || len(page) == 0 {
			return err
		}
		scores, err := s.rdb.ZMScore(ctx, children, page...).Result()
		if err != nil {
			return err
		}
		args := make([]any, 0, len(page))
		for i, c := range page {
			if scores[i] == 0 { // absent (a child's score is an expiry or +inf)
				args = append(args, c)
			}
		}
		removed := 0
		if len(args) > 0 {
			if removed, err = unlistStrayNamesScript.Run(ctx, s.rdb, []string{children, names}, args...).Int(); err != nil {
				return err
			}
		}
		if len(page) < tidyPage {
			return nil
		}
		offset += int64(len(page) - removed)
	}
}

// unlistEmpty removes, from the sorted set index (and from mirror, which
// lists its members too, when not ""), the members scored at or below
// cutoff under which nothing is left: every sorted set below names for the
// member is empty. It returns how many it removed.
func (s *Store) unlistEmpty(ctx context.Context, index, mirror, cutoff string, below ...func(member string) string) (int, error) {
	removed := 0
	for offset := int64(0); ; {
		stale, err := s.rdb.ZRangeByScore(ctx, index, &redis.ZRangeBy{Min: "-inf", Max: cutoff, Offset: offset, Count: tidyPage}).Result()
		if err != nil || len(stale) == 0 {
			return removed, err
		}
		gone, busy, err := s.splitEmpty(ctx, index, stale, below)
		if err != nil {
			return removed, err
		}
		args := append([]any{cutoff}, gone...)
		kept := len(busy)
		if len(args) > 1 {
			ks := []string{index}
			if mirror != "" {
				ks = append(ks, mirror)
			}
			n, err := unlistPastScript.Run(ctx, s.rdb, ks, args...).Int()
			if err != nil && !errors.Is(err, redis.Nil) {
				return removed, err
			}
			removed += n
			s.count.tidied.Add(uint64(n))
			kept += len(args) - 1 - n // raised meanwhile: still there
		}
		if len(stale) < tidyPage {
			return removed, nil
		}
		offset += int64(kept)
	}
}

// keyRef names a key of a namespace.
type keyRef struct{ ns, key string }

// markEmptied marks, for Tidy, the listing entries above the subtrees that
// the deletion or expiry of keys left empty (deleteOp.emptied, and
// sweepScript's "emptied"): the second segment in its first's children
// index, or a single-segment key's first segment in the roots index. An
// entry marked already keeps its earlier mark: no raise took it away
// since. The deletes are done whatever happens here; a mark that Redis
// did not take leaves the entry listed, where a listing skips it at the
// cost of a read.
func (s *Store) markEmptied(ctx context.Context, emptied []keyRef) {
	if len(emptied) == 0 {
		return
	}
	// A batch's deletes mostly share their marks sets: one call per set.
	var sets []string
	members := make(map[string][]string)
	for _, e := range emptied {
		marks, member := rootMarks(e.ns), e.key
		if first, rest, deep := strings.Cut(e.key, "/"); deep {
			second, _, _ := strings.Cut(rest, "/")
			marks, member = childMarks(e.ns, first), second
		}
		if _, ok := members[marks]; !ok {
			sets = append(sets, marks)
		}
		members[marks] = append(members[marks], member)
	}
	pipe := s.rdb.Pipeline()
	for _, marks := range sets {
		queueMarks(ctx, pipe, marks, members[marks])
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.count.redisErrors.Add(1)
	}
}

// queueMarks queues markScript calls on pipe that mark members in marks.
func queueMarks(ctx context.Context, pipe redis.Pipeliner, marks string, members []string) {
	for i := 0; i < len(members); i += tidyPage {
		page := members[i:min(i+tidyPage, len(members))]
		args := make([]any, len(page))
		for j, m := range page {
			args[j] = m
		}
		// EVAL: rare, and a pipeline cannot fall back from EVALSHA.
		markScript.Eval(ctx, pipe, []string{marks}, args...)
	}
}

// mark marks members in marks (markScript).
func (s *Store) mark(ctx context.Context, marks string, members ...string) error {
	if len(members) == 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	queueMarks(ctx, pipe, marks, members)
	_, err := pipe.Exec(ctx)
	return err
}

// unraise takes out of the listing indexes what was raised for writes that
// then created nothing (refusedAbsent, or a refused atomic batch) and has
// nothing below it, as a delete of its last key would: at once on a single
// Redis (dropEmptyScript), through a mark for Tidy on the per-write path
// (markEmptied; Tidy looks below the entry). The writes' own outcome
// stands whatever happens here. It returns how many subtrees it took out
// at once.
func (s *Store) unraise(ctx context.Context, refused []keyRef) int {
	if len(refused) == 0 {
		return 0
	}
	if !s.oneScript() {
		s.markEmptied(ctx, refused)
		return 0
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(refused))
	for i, r := range refused {
		// EVAL: rare, and a pipeline cannot fall back from EVALSHA.
		cmds[i] = dropEmptyScript.Eval(ctx, pipe, []string{keys.SubtreeIndex(r.ns, r.key)}, r.ns, r.key)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		s.count.redisErrors.Add(1)
	}
	n := 0
	for _, c := range cmds {
		if v, _ := c.Int(); v == 1 {
			n++
		}
	}
	return n
}

// markIfEmpty marks member in marks, on the per-write path, when every
// sorted set in below is empty: Tidy's own cascade, from a subtree's
// children to its root, from a namespace's roots to the namespace.
func (s *Store) markIfEmpty(ctx context.Context, marks, member string, below ...string) error {
	if s.oneScript() {
		return nil
	}
	pipe := s.rdb.Pipeline()
	counts := make([]*redis.IntCmd, len(below))
	for i, b := range below {
		counts[i] = pipe.ZCard(ctx, b)
	}
	if _, err := pipe.Exec(ctx); err != nil || !empty(counts) {
		return err
	}
	return s.mark(ctx, marks, member)
}

// unlistMarked removes, from the sorted set index (and from mirror, when
// not ""), the members marked in marks more than tidyMargin ago, by the
// clock of the node that holds them (dueMarksScript), under which
// nothing is left: every sorted set below names for the member is empty.
// Their marks go with them, and so do the marks of such members that are
// not empty (written again: Tidy is done with them). It returns how many
// it removed from index.
func (s *Store) unlistMarked(ctx context.Context, index, mirror, marks string, below ...func(member string) string) (int, error) {
	removed, margin := 0, tidyMargin.Milliseconds()
	for {
		// Every page's marks are gone after it (or have a later time,
		// marked again), so each page is read from the start.
		due, err := dueMarksScript.Run(ctx, s.rdb, []string{marks}, margin, tidyPage).StringSlice()
		if err != nil || len(due) == 0 {
			return removed, err
		}
		gone, busy, err := s.splitEmpty(ctx, index, due, below)
		if err != nil {
			return removed, err
		}
		ks := []string{index, marks}
		if mirror != "" {
			ks = append(ks, mirror)
		}
		args := append(append([]any{margin, len(gone)}, gone...), busy...)
		out, err := unlistMarkedScript.Run(ctx, s.rdb, ks, args...).Int64Slice()
		if err != nil {
			return removed, err
		}
		removed += int(out[0])
		s.count.tidied.Add(uint64(out[0]))
		// None of the page's marks went: raises took them all meanwhile,
		// or the node's clock stepped back between the two scripts. A
		// later Tidy takes what is left.
		if len(due) < tidyPage || out[1] == 0 {
			return removed, nil
		}
	}
}

// splitEmpty splits members of index into those under which nothing is
// left (every sorted set below names for it is empty) and the others, in
// one round trip; then, for tests, it runs beforeUnlist, before the
// caller's removal of the first.
func (s *Store) splitEmpty(ctx context.Context, index string, members []string, below []func(member string) string) (gone, busy []any, err error) {
	emptied, err := s.emptyBelow(ctx, members, below)
	if err != nil {
		return nil, nil, err
	}
	for i, m := range members {
		if emptied[i] {
			gone = append(gone, m)
		} else {
			busy = append(busy, m)
		}
	}
	if beforeUnlist != nil {
		beforeUnlist(index)
	}
	return gone, busy, nil
}

// emptyBelow reports, for each member, whether every sorted set that below
// names for it is empty, in one round trip.
func (s *Store) emptyBelow(ctx context.Context, members []string, below []func(member string) string) ([]bool, error) {
	pipe := s.rdb.Pipeline()
	counts := make([][]*redis.IntCmd, len(members))
	for i, m := range members {
		for _, b := range below {
			counts[i] = append(counts[i], pipe.ZCard(ctx, b(m)))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := make([]bool, len(members))
	for i := range members {
		out[i] = empty(counts[i])
	}
	return out, nil
}

// empty reports whether every count is zero.
func empty(counts []*redis.IntCmd) bool {
	for _, c := range counts {
		if c.Val() != 0 {
			return false
		}
	}
	return true
}

// RunTidier calls Tidy every interval until ctx is done, over the
// namespaces in namespacesKey and extra. Errors (Redis down) are reported
// to onError, if set, and the loop carries on.
func (s *Store) RunTidier(ctx context.Context, interval time.Duration, onError func(error), extra ...string) {
	if interval <= 0 {
		interval = DefaultTidyInterval
	}
	every(ctx, interval, onError, func() error {
		_, err := s.Tidy(ctx, extra...)
		return err
	})
}
