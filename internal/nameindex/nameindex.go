// Package nameindex keeps a namespace's index of the names of one kind of
// thing (counters, barriers), for listings that read neither the keyspace
// (no KEYS, no SCAN) nor every slot of a Cluster.
//
// Redis layout, for kind K in namespace N:
//
//	ms:{N}#K    sorted set: name → when a write last touched it (Unix ms,
//	            this process's clock)
//
// The index lives in the namespace's hash slot, not the thing's, so a
// write touches it in a separate command: touched before or with the
// write, an entry may name a thing gone (expired, deleted, or never
// made), which a listing drops (Prune), but never misses one written.
package nameindex

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
)

// Key is namespace ns's index of kind.
func Key(ns, kind string) string { return keys.Namespace(ns, kind) }

// Touch records name in the index of kind, now, in c (a client or a
// pipeline). An entry's score only rises (GT).
func Touch(ctx context.Context, c redis.Cmdable, ns, kind, name string) *redis.IntCmd {
	return c.ZAddGT(ctx, Key(ns, kind), redis.Z{Score: float64(time.Now().UnixMilli()), Member: name})
}

// Entry is a name in an index, with the score it was read with.
type Entry struct {
	Name  string
	score float64
}

// Names reads the names of kind in namespace ns that start with prefix
// and that valid accepts, sorted.
func Names(ctx context.Context, c redis.Cmdable, ns, kind, prefix string, valid func(string) bool) ([]Entry, error) {
	members, err := c.ZRangeWithScores(ctx, Key(ns, kind), 0, -1).Result()
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, m := range members {
		name, _ := m.Member.(string)
		if strings.HasPrefix(name, prefix) && valid(name) {
			out = append(out, Entry{Name: name, score: m.Score})
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// pruneScript drops the index entries of things a listing found gone,
// unless a write touched them since: an entry goes only while its score is
// the one the listing read.
//
// KEYS[1] the index (sorted set: name → when last touched, ms)
// ARGV pairs: name, the score read
//
// Returns how many entries it dropped.
var pruneScript = redis.NewScript(`
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
`)

// Prune drops gone, entries Names read whose things a listing found gone,
// unless they were touched since. It returns how many it dropped.
func Prune(ctx context.Context, c redis.Scripter, ns, kind string, gone []Entry) (int64, error) {
	if len(gone) == 0 {
		return 0, nil
	}
	args := make([]any, 0, 2*len(gone))
	for _, e := range gone {
		args = append(args, e.Name, strconv.FormatFloat(e.score, 'f', -1, 64))
	}
	return pruneScript.Run(ctx, c, []string{Key(ns, kind)}, args...).Int64()
}
