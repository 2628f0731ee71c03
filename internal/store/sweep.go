package store

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/keys"
)

// DefaultSweepInterval is how often RunSweeper looks for expired keys: well
// inside the one second within which an expiry must be announced.
const DefaultSweepInterval = 250 * time.Millisecond

// sweepBatch is how many due entries one pass takes from the expiry index.
const sweepBatch = 256

// Sweep announces the expiry of every key whose TTL has run out: for each,
// exactly one instance publishes an EventExpire, whichever gets there
// first. It works on any Redis, miniredis included (it needs no keyspace
// notifications). It returns the events this call published.
func (s *Store) Sweep(ctx context.Context) ([]Event, error) {
	var out []Event
	for {
		now := s.cfg.Now().UnixMilli()
		nowText := strconv.FormatInt(now, 10)
		due, err := s.rdb.ZRangeByScore(ctx, expiryKey, &redis.ZRangeBy{
			Min: "-inf", Max: nowText, Count: sweepBatch,
		}).Result()
		if err != nil {
			return out, s.wrap("sweep", "", err)
		}
		waiting := 0
		for _, member := range due {
			ns, key, ok := strings.Cut(member, "/")
			if !ok || validate(ns, key) != nil {
				_ = s.rdb.ZRem(ctx, expiryKey, member).Err() // not ours to interpret
				continue
			}
			args := []any{key, nowText}
			if s.oneScript() {
				args = append(args, ns) // the script keeps the listing indexes (ownParents)
			}
			verdict, err := sweepScript.Run(ctx, s.rdb,
				[]string{keys.Redis(ns, key), keys.SubtreeIndex(ns, key)}, args...).StringSlice()
			if err != nil {
				return out, s.wrap("sweep", key, err)
			}
			switch verdict[0] {
			case "wait":
				waiting++
				continue
			case "live":
				// Written again: follow the key's real expiry.
				if verdict[1] != "inf" {
					score, _ := strconv.ParseFloat(verdict[1], 64)
					err = s.rdb.ZAdd(ctx, expiryKey, redis.Z{Score: score, Member: member}).Err()
				} else {
					_, err = unlistPastScript.Run(ctx, s.rdb, []string{expiryKey}, nowText, member).Result()
				}
			case "expired":
				if len(verdict) > 1 && verdict[1] == "emptied" {
					s.markEmptied(ctx, []keyRef{{ns, key}})
				}
				ev := Event{Type: EventExpire, Namespace: ns, Key: key, Timestamp: now}
				if err = s.Publish(ctx, &ev); err == nil {
					out = append(out, ev)
					_, err = unlistPastScript.Run(ctx, s.rdb, []string{expiryKey}, nowText, member).Result()
				}
			case "gone":
				_, err = unlistPastScript.Run(ctx, s.rdb, []string{expiryKey}, nowText, member).Result()
			}
			if err != nil && !errors.Is(err, redis.Nil) {
				return out, s.wrap("sweep", key, err)
			}
		}
		// A full batch may mean more are due; entries still waiting for
		// Redis to expire them stay for the next pass.
		if len(due) < sweepBatch || waiting == len(due) {
			return out, nil
		}
	}
}

// RunSweeper calls Sweep every interval until ctx is done. Errors (Redis
// down) are reported to onError, if set, and the loop carries on.
func (s *Store) RunSweeper(ctx context.Context, interval time.Duration, onError func(error)) {
	if interval <= 0 {
		interval = DefaultSweepInterval
	}
	every(ctx, interval, onError, func() error {
		_, err := s.Sweep(ctx)
		return err
	})
}

// every calls run every interval until ctx is done, and reports its errors
// to onError, if set, unless ctx ended meanwhile.
func every(ctx context.Context, interval time.Duration, onError func(error), run func() error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := run(); err != nil && ctx.Err() == nil && onError != nil {
				onError(err)
			}
		}
	}
}
