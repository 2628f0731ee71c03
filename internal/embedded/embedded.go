// Package embedded runs the in-process Redis (miniredis) that memsync
// serves from when no Redis is configured, and keeps its data in a file
// across restarts, as redis-server keeps dump.rdb: loaded at start, saved
// every Options.SaveInterval when something changed, and at Close.
//
// A save is a snapshot of one instant (one transaction, or one script,
// reads every key), so the file never holds half of a write. It is written to a temporary file,
// synced, and renamed over the last one: a crash mid-save leaves the
// previous file whole. What changed after the last save is lost in a crash
// (not in a graceful shutdown, which saves).
package embedded

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
	"github.com/redis/go-redis/v9"
)

// DefaultSaveInterval is how often a changed embedded Redis is saved.
const DefaultSaveInterval = 10 * time.Second

// fileFormat heads every data file: a file of another format is refused
// rather than misread.
const fileFormat = "memsync-embedded-redis/1"

// Options configure Start.
type Options struct {
	// DataFile is where the data is kept; "" keeps nothing.
	DataFile string
	// SaveInterval is how often the data is saved when it changed; 0
	// saves only at Close.
	SaveInterval time.Duration
	// Log receives a line per load and per failed save; nil: none.
	Log *slog.Logger
}

// Server is a running embedded Redis.
type Server struct {
	m    *miniredis.Miniredis
	rdb  *redis.Client
	opts Options
	log  *slog.Logger

	// changes counts the commands that may have changed the data (see
	// countChanges); savedAt is its value when the last save began.
	changes atomic.Int64

	mu      sync.Mutex // serialises saves, and guards what follows
	saved   [sha256.Size]byte
	savedAt int64

	stop chan struct{}
	done chan struct{}

	clockStop, clockDone chan struct{}
	// unlock releases the data file's lock (see lockDataFile).
	unlock func()

	closeOnce sync.Once
	closeErr  error
}

// file is a data file's contents, gob-encoded: strings are bytes to gob,
// so nothing is re-encoded on the way.
type file struct {
	Format  string
	SavedAt time.Time
	Keys    []entry
}

// Start starts an embedded Redis whose TTLs run in real time, loads
// opts.DataFile into it when the file exists, and saves it from then on.
// A data file that cannot be read is an error: starting empty would
// overwrite it at the first save.
func Start(opts Options) (*Server, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		return nil, fmt.Errorf("start embedded redis: %w", err)
	}
	s := &Server{
		m: m, opts: opts, log: log, clockStop: make(chan struct{}), clockDone: make(chan struct{}),
		// Its own connection, for snapshots: no timeout, as a big one
		// takes the embedded Redis a while.
		rdb: redis.NewClient(&redis.Options{Addr: m.Addr(), Protocol: 2, MaxRetries: -1, PoolSize: 1, ReadTimeout: -1}),
	}
	go s.runClock()
	m.Server().SetPreHook(s.countChanges)
	if opts.DataFile != "" {
		unlock, err := lockDataFile(opts.DataFile)
		if err == nil {
			s.unlock = unlock
			err = s.load()
		}
		if err != nil {
			if unlock != nil {
				unlock()
			}
			s.stopClock()
			s.rdb.Close()
			m.Close()
			return nil, err
		}
		if opts.SaveInterval > 0 {
			s.stop, s.done = make(chan struct{}), make(chan struct{})
			go s.saveEvery(opts.SaveInterval)
		}
	}
	return s, nil
}

// Clock ticks: see runClock.
const (
	clockTick = 10 * time.Millisecond
	// clockShare bounds the time the ticks take: the wait between two is
	// at least clockShare times what the last one took.
	clockShare = 20
)

// runClock runs the embedded Redis's TTLs in real time until stopClock.
//
// miniredis counts a TTL down only when told time passed. Its own way of
// following the clock (ClockTTL) does it at every database access, each
// command and each redis.call of a script, and each time it sorts the
// names of every key: with 7,000 keys a command took about half a
// millisecond, and a save over a second per thousand keys. Ticking from
// here instead costs one pass per tick, and a tick waits at least 20 times
// as long as the last pass took (5 % of a CPU at most), so an expired key
// goes at most a tick late: 10 ms with a few thousand keys, more with
// more. Lease keys going late errs on the safe side: a lock is held
// longer, never shorter.
func (s *Server) runClock() {
	defer close(s.clockDone)
	last := time.Now()
	wait := clockTick
	for {
		select {
		case <-s.clockStop:
			return
		case <-time.After(wait):
		}
		now := time.Now()
		s.m.FastForward(now.Sub(last))
		last = now
		wait = max(clockTick, clockShare*time.Since(now))
	}
}

func (s *Server) stopClock() {
	close(s.clockStop)
	<-s.clockDone
}

// Addr is the embedded Redis's address (loopback).
func (s *Server) Addr() string { return s.m.Addr() }

// load restores the data file, when there is one.
func (s *Server) load() error {
	raw, err := os.ReadFile(s.opts.DataFile)
	if errors.Is(err, fs.ErrNotExist) {
		s.log.Info("embedded Redis: no data file yet, starting empty", "data_file", s.opts.DataFile)
		return nil
	}
	if err != nil {
		return fmt.Errorf("data file: %w", err)
	}
	var f file
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&f); err != nil || f.Format != fileFormat {
		return fmt.Errorf("data file %s is not a memsync data file or is damaged (%v): move it away to start empty", s.opts.DataFile, err)
	}
	started := time.Now()
	ctx := context.Background()
	n, err := restore(ctx, s.rdb, f.Keys)
	if err != nil {
		return fmt.Errorf("data file %s: %w", s.opts.DataFile, err)
	}
	s.saved, s.savedAt = digest(f.Keys), s.changes.Load()
	s.log.Info("embedded Redis: data loaded", "data_file", s.opts.DataFile, "keys", n,
		"expired_meanwhile", len(f.Keys)-n, "saved_at", f.SavedAt.Format(time.RFC3339), "took", time.Since(started).Round(time.Millisecond))
	return nil
}

// readOnly are the commands that change no data: the ones memsync's reads,
// subscriptions and housekeeping send, and a few an operator would. Any
// other command, a script among them, counts as a change.
var readOnly = map[string]bool{}

func init() {
	for _, c := range strings.Fields(`GET MGET STRLEN GETRANGE EXISTS TYPE TTL PTTL KEYS SCAN DBSIZE
		HGET HMGET HGETALL HLEN HEXISTS HKEYS HVALS HSCAN HSTRLEN
		ZRANGE ZRANGEBYSCORE ZRANGEBYLEX ZREVRANGE ZREVRANGEBYSCORE ZREVRANGEBYLEX ZSCORE ZMSCORE ZCARD ZCOUNT ZLEXCOUNT ZRANK ZREVRANK ZSCAN
		SMEMBERS SISMEMBER SMISMEMBER SCARD SSCAN LRANGE LLEN LINDEX XRANGE XREVRANGE XREAD XLEN XINFO
		PING ECHO TIME INFO CONFIG CLIENT HELLO SELECT AUTH COMMAND MEMORY OBJECT QUIT
		SUBSCRIBE PSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE PUBLISH PUBSUB SCRIPT
		WATCH UNWATCH MULTI EXEC DISCARD`) {
		readOnly[c] = true
	}
}

// countChanges sees every command the embedded Redis gets (a command in a
// transaction when it is queued; a script as its EVAL or EVALSHA) and
// counts those that may change data, so that a periodic save skips the
// snapshot, which stops the embedded Redis while it reads every key, when
// nothing changed: an idle server with 10,000 keys would otherwise stop
// for about 0.1 s every interval. A key that expires changes
// nothing a save must keep: restored, it would be left out.
func (s *Server) countChanges(_ *server.Peer, cmd string, args ...string) bool {
	if !readOnly[cmd] && !isSnapshot(cmd, args) {
		s.changes.Add(1)
	}
	return false // the command runs as usual
}

// isSnapshot tells the snapshot script, which changes nothing, from the
// others.
func isSnapshot(cmd string, args []string) bool {
	return len(args) > 0 && (cmd == "EVALSHA" && args[0] == snapshotScript.Hash() || cmd == "EVAL" && args[0] == snapshotSource)
}

// SaveResult says what a save did.
type SaveResult struct {
	// Skipped: no command that changes data ran since the last save, and
	// no snapshot was read.
	Skipped bool
	Keys    int  // keys in the snapshot
	Bytes   int  // size of the file (when Written)
	Written bool // false: the file held this snapshot already
}

// Save writes a snapshot to the data file unless the file holds the same
// one already. Without a data file it does nothing.
func (s *Server) Save(ctx context.Context) (SaveResult, error) {
	if s.opts.DataFile == "" {
		return SaveResult{}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Read before the snapshot: a change made while it is read counts for
	// the next save.
	changes := s.changes.Load()
	if changes == s.savedAt {
		return SaveResult{Skipped: true}, nil
	}
	entries, err := snapshot(ctx, s.rdb)
	if err != nil {
		return SaveResult{}, err
	}
	res := SaveResult{Keys: len(entries)}
	sum := digest(entries)
	if sum == s.saved {
		s.savedAt = changes
		return res, nil
	}
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(file{Format: fileFormat, SavedAt: time.Now(), Keys: entries}); err != nil {
		return res, fmt.Errorf("encode data file: %w", err)
	}
	if err := writeFileAtomic(s.opts.DataFile, buf.Bytes()); err != nil {
		return res, err
	}
	s.saved, s.savedAt = sum, changes
	res.Bytes, res.Written = buf.Len(), true
	return res, nil
}

// writeFileAtomic replaces path with data: a reader, or a crash, sees the
// old file or the new one, never a part.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("data file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("data file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("data file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("data file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("data file: %w", err)
	}
	// The rename itself is durable once the directory is synced.
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		dir.Sync()
		dir.Close()
	}
	return nil
}

// saveTimeout bounds one periodic save.
const saveTimeout = time.Minute

func (s *Server) saveEvery(interval time.Duration) {
	defer close(s.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), saveTimeout)
		started := time.Now()
		res, err := s.Save(ctx)
		cancel()
		switch {
		case err != nil:
			s.log.Error("embedded Redis: data NOT saved (the last save stands; trying again)", "data_file", s.opts.DataFile, "err", err)
		case res.Written:
			s.log.Debug("embedded Redis: data saved", "data_file", s.opts.DataFile, "keys", res.Keys, "bytes", res.Bytes, "took", time.Since(started).Round(time.Millisecond))
		}
	}
}

// Close stops the periodic saves, saves a last time, and stops the
// embedded Redis. Call it once nothing writes any more (after the
// service's own shutdown flushed its queues). The Redis stops even when
// the save fails, and the error says so. Closing again does nothing and
// returns the first Close's error.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() { s.closeErr = s.close(ctx) })
	return s.closeErr
}

func (s *Server) close(ctx context.Context) error {
	if s.stop != nil {
		close(s.stop)
		<-s.done
	}
	var err error
	if s.opts.DataFile != "" {
		var res SaveResult
		res, err = s.Save(ctx)
		switch {
		case err != nil:
		case res.Written:
			s.log.Info("embedded Redis: data saved", "data_file", s.opts.DataFile, "keys", res.Keys, "bytes", res.Bytes)
		default:
			s.log.Info("embedded Redis: data file up to date", "data_file", s.opts.DataFile)
		}
	}
	s.stopClock()
	s.rdb.Close()
	s.m.Close()
	if s.unlock != nil {
		s.unlock()
	}
	return err
}

// ErrTargetNotEmpty: Import found memsync's keys in the Redis it was to
// fill.
var ErrTargetNotEmpty = errors.New("the Redis already holds memsync keys (ms:*)")

// Import copies the data file at path into rdb, a Redis server (or
// Cluster) that holds no memsync keys yet: the way from the embedded
// Redis of `make run` to a Redis server, with every key, version, lock,
// fence, queue, counter and event as they were. It takes the data file's
// lock, so no memsync may run on the file meanwhile. Keys that expired
// since the save are left out. It returns how many Redis keys it wrote.
func Import(ctx context.Context, path string, rdb redis.UniversalClient) (int, error) {
	unlock, err := lockDataFile(path)
	if err != nil {
		return 0, err
	}
	defer unlock()
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("data file: %w", err)
	}
	var f file
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&f); err != nil || f.Format != fileFormat {
		return 0, fmt.Errorf("data file %s is not a memsync data file or is damaged (%v)", path, err)
	}
	if err := checkNoMemsyncKeys(ctx, rdb); err != nil {
		return 0, err
	}
	return restore(ctx, rdb, f.Keys)
}

// checkNoMemsyncKeys fails with ErrTargetNotEmpty when rdb (each master,
// on a Cluster) holds a key that starts with "ms:".
func checkNoMemsyncKeys(ctx context.Context, rdb redis.UniversalClient) error {
	scan := func(ctx context.Context, c *redis.Client) error {
		for cursor := uint64(0); ; {
			keys, next, err := c.Scan(ctx, cursor, "ms:*", 1000).Result()
			if err != nil {
				return fmt.Errorf("target Redis: %w", err)
			}
			if len(keys) > 0 {
				return fmt.Errorf("%w: %s, for one; import into an empty Redis", ErrTargetNotEmpty, keys[0])
			}
			if next == 0 {
				return nil
			}
			cursor = next
		}
	}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, scan)
	case *redis.Client:
		return scan(ctx, c)
	default:
		return fmt.Errorf("target Redis: unsupported client %T", rdb)
	}
}
