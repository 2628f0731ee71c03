package embedded

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/redistest"
)

// fill writes one key of every type memsync uses, with bytes that no text
// encoding would carry through unchanged, and returns the keys that
// expire.
func fill(t *testing.T, c *redis.Client) {
	t.Helper()
	ctx := context.Background()
	binary := "\x00\xff\xfe caf\xc3\xa9 \xe2\x80"
	steps := []error{
		c.Set(ctx, "str", binary, 0).Err(),
		c.Set(ctx, "str-ttl", "soon", time.Hour).Err(),
		c.HSet(ctx, "ms:{ns/tasks/T1}/state", "etag", "abc", "s:1", `,"writer":"w1","value":{"a":[1,2.5e300,"x"]}}`, binary, binary).Err(),
		c.PExpire(ctx, "ms:{ns/tasks/T1}/state", 90*time.Minute).Err(),
		c.ZAdd(ctx, "zs", redis.Z{Score: 1.5, Member: "a"}, redis.Z{Score: -3, Member: binary},
			redis.Z{Score: 1234567890123.125, Member: "c"}).Err(),
		c.Do(ctx, "ZADD", "zs", "+inf", "top", "-inf", "bottom").Err(),
		c.SAdd(ctx, "set", "x", "y", binary).Err(),
		c.RPush(ctx, "list", "1", "2", "1", binary).Err(),
		c.XAdd(ctx, &redis.XAddArgs{Stream: "ms:{#memsync}#events", ID: "0-1", Values: []any{"a", `{"id":1}`, "b", ""}}).Err(),
		c.XAdd(ctx, &redis.XAddArgs{Stream: "ms:{#memsync}#events", ID: "0-7", Values: []any{"e", binary}}).Err(),
	}
	if err := errors.Join(steps...); err != nil {
		t.Fatal(err)
	}
}

// start starts a server with opts and a client of it, both closed when
// the test ends (a test may Close the server sooner).
func start(tb testing.TB, opts Options) (*Server, *redis.Client) {
	tb.Helper()
	s, err := Start(opts)
	if err != nil {
		tb.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), ReadTimeout: -1})
	tb.Cleanup(func() {
		c.Close()
		s.Close(context.Background())
	})
	return s, c
}

// equalEntries compares two snapshots, expiries to within a second (each
// is read against the clock at its own instant).
func equalEntries(t *testing.T, got, want []entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("snapshot has %d keys, want %d:\n got %+v\nwant %+v", len(got), len(want), got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if d := g.ExpiresAt - w.ExpiresAt; d < -1000 || d > 1000 || (g.ExpiresAt == 0) != (w.ExpiresAt == 0) {
			t.Errorf("key %q expires at %d, want %d", w.Key, g.ExpiresAt, w.ExpiresAt)
		}
		g.ExpiresAt, w.ExpiresAt = 0, 0
		if !reflect.DeepEqual(g, w) {
			t.Errorf("key %q:\n got %#v\nwant %#v", w.Key, g, w)
		}
	}
}

func TestSnapshotRestoresEveryTypeExactly(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		fill(t, b.Client)
		before, err := snapshot(ctx, b.Client)
		if err != nil {
			t.Fatal(err)
		}
		if len(before) != 7 {
			t.Fatalf("snapshot has %d keys, want 7: %+v", len(before), before)
		}
		if err := b.Client.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		n, err := restore(ctx, b.Client, before)
		if err != nil || n != 7 {
			t.Fatalf("restore = %d, %v; want 7 keys", n, err)
		}
		after, err := snapshot(ctx, b.Client)
		if err != nil {
			t.Fatal(err)
		}
		equalEntries(t, after, before)
		// The script, snapshot's way when keys keep changing, reads the same.
		viaScript, err := snapshotLua(ctx, b.Client)
		if err != nil {
			t.Fatal(err)
		}
		equalEntries(t, viaScript, before)

		// Spot checks through Redis itself, not through the snapshot.
		if v, _ := b.Client.Get(ctx, "str").Result(); v != "\x00\xff\xfe caf\xc3\xa9 \xe2\x80" {
			t.Errorf("str = %q", v)
		}
		if ttl := b.Client.PTTL(ctx, "ms:{ns/tasks/T1}/state").Val(); ttl < 89*time.Minute || ttl > 90*time.Minute {
			t.Errorf("restored TTL = %v, want about 90m", ttl)
		}
		if ttl := b.Client.PTTL(ctx, "list").Val(); ttl != -1*time.Millisecond && ttl != -1 {
			t.Errorf("a key without expiry came back with TTL %v", ttl)
		}
		top, _ := b.Client.ZScore(ctx, "zs", "top").Result()
		c, _ := b.Client.ZScore(ctx, "zs", "c").Result()
		if top < 1e308 || c != 1234567890123.125 {
			t.Errorf("zset scores came back as top=%v c=%v", top, c)
		}
		xs, _ := b.Client.XRange(ctx, "ms:{#memsync}#events", "-", "+").Result()
		if len(xs) != 2 || xs[0].ID != "0-1" || xs[1].ID != "0-7" || xs[0].Values["a"] != `{"id":1}` {
			t.Errorf("stream came back as %+v", xs)
		}
		// A stream restored goes on from its last id.
		if err := b.Client.XAdd(ctx, &redis.XAddArgs{Stream: "ms:{#memsync}#events", ID: "0-5", Values: []any{"e", "x"}}).Err(); err == nil {
			t.Error("XADD below the restored stream's last id was accepted")
		}
	})
}

func TestRestoreLeavesOutWhatExpiredMeanwhile(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx := context.Background()
		past := time.Now().Add(-time.Second).UnixMilli()
		entries := []entry{
			{Key: "gone", Type: "string", ExpiresAt: past, Items: []string{"x"}},
			{Key: "kept", Type: "string", ExpiresAt: time.Now().Add(time.Minute).UnixMilli(), Items: []string{"y"}},
		}
		n, err := restore(ctx, b.Client, entries)
		if err != nil || n != 1 {
			t.Fatalf("restore = %d, %v; want 1 key", n, err)
		}
		if got := b.Client.Exists(ctx, "gone", "kept").Val(); got != 1 || b.Client.Exists(ctx, "kept").Val() != 1 {
			t.Errorf("after restore: %d of gone, kept exist; want only kept", got)
		}
	})
}

// TestSnapshotIsOneInstant: a writer changes keys together, in one
// script, while snapshots are taken: it sets a and z to the same number,
// and flip to it too, as a string on even numbers and as a hash on odd
// ones, deleted in between; every snapshot holds them equal. A snapshot
// read key by key would catch them between two of the writer's scripts,
// and the transaction's checks (keys listed, types) are what make it try
// again when flip was deleted or retyped under it.
func TestSnapshotIsOneInstant(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		ctx, cancel := context.WithCancel(context.Background())
		write := redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1]) redis.call('SET', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
if tonumber(ARGV[1]) % 2 == 0 then redis.call('SET', KEYS[3], ARGV[1]) else redis.call('HSET', KEYS[3], 'v', ARGV[1]) end
if tonumber(ARGV[1]) % 3 == 0 then redis.call('DEL', KEYS[3]) end
if tonumber(ARGV[1]) % 2 == 0 then redis.call('DEL', KEYS[5]) redis.call('SET', KEYS[4], ARGV[1])
else redis.call('DEL', KEYS[4]) redis.call('SET', KEYS[5], ARGV[1]) end
return 1`)
		// Keys enough that a key-by-key reader would take many turns.
		for i := range 100 {
			b.Client.Set(ctx, "filler:"+strconv.Itoa(i), i, 0)
		}
		keys := []string{"a", "z", "flip", "swap:even", "swap:odd"}
		// The first write before any snapshot: a snapshot holds one.
		if err := write.Run(ctx, b.Client, keys, 1).Err(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 2; ctx.Err() == nil; i++ {
				write.Run(ctx, b.Client, keys, i)
			}
		}()
		defer func() { cancel(); wg.Wait() }()
		for range 15 {
			entries, err := snapshot(ctx, b.Client)
			if err != nil {
				t.Fatal(err)
			}
			var a, z, flip string
			swaps := map[string]string{}
			for _, e := range entries {
				switch e.Key {
				case "swap:even", "swap:odd":
					swaps[e.Key] = e.Items[0]
				case "a":
					a = e.Items[0]
				case "z":
					z = e.Items[0]
				case "flip":
					flip = e.Items[len(e.Items)-1]
					if n, _ := strconv.Atoi(flip); (n%2 == 0) != (e.Type == "string") {
						t.Fatalf("flip holds %s as a %s", flip, e.Type)
					}
				}
			}
			n, _ := strconv.Atoi(a)
			// One key replaces the other: the same count of keys either way.
			if want := map[bool]string{true: "swap:even", false: "swap:odd"}[n%2 == 0]; len(swaps) != 1 || swaps[want] != a {
				t.Fatalf("snapshot holds a=%q and swaps %v, written together", a, swaps)
			}
			if a != z || (n%3 == 0) != (flip == "") || (flip != "" && flip != a) {
				t.Fatalf("snapshot holds a=%q, z=%q and flip=%q, written together", a, z, flip)
			}
		}
	})
}

func TestServerKeepsItsDataAcrossARestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "memsync.data")
	s, c := start(t, Options{DataFile: path})
	fill(t, c)
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}

	s, c = start(t, Options{DataFile: path})
	if v, err := c.HGet(ctx, "ms:{ns/tasks/T1}/state", "s:1").Result(); err != nil || v != `,"writer":"w1","value":{"a":[1,2.5e300,"x"]}}` {
		t.Errorf("after a restart, the key's sibling = %q, %v", v, err)
	}
	if ttl := c.PTTL(ctx, "str-ttl").Val(); ttl < 59*time.Minute || ttl > time.Hour {
		t.Errorf("after a restart, TTL = %v, want about 1h", ttl)
	}
	if n := c.DBSize(ctx).Val(); n != 7 {
		t.Errorf("after a restart, %d keys, want 7", n)
	}

	// Nothing changed: no snapshot is read, nor the file written.
	c.Get(ctx, "str")
	c.HGetAll(ctx, "ms:{ns/tasks/T1}/state")
	res, err := s.Save(ctx)
	if err != nil || !res.Skipped || res.Written {
		t.Errorf("Save after reads only = %+v, %v; want skipped", res, err)
	}
	// A write that leaves the data as it was: read, but not written.
	c.Set(ctx, "str", "\x00\xff\xfe caf\xc3\xa9 \xe2\x80", 0)
	res, err = s.Save(ctx)
	if err != nil || res.Skipped || res.Written || res.Keys != 7 {
		t.Errorf("Save after a write that changed nothing = %+v, %v; want 7 keys read, not written", res, err)
	}
	c.Set(ctx, "new", "1", 0)
	res, err = s.Save(ctx)
	if err != nil || !res.Written || res.Keys != 8 {
		t.Errorf("Save after a change = %+v, %v; want 8 keys, written", res, err)
	}
	// The save's own snapshot is no change.
	if res, err = s.Save(ctx); err != nil || !res.Skipped {
		t.Errorf("Save right after a save = %+v, %v; want skipped", res, err)
	}
	// No temporary file is left beside it.
	if left, _ := filepath.Glob(path + ".tmp-*"); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestServerSavesEveryInterval(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "memsync.data")
	s, c := start(t, Options{DataFile: path, SaveInterval: 20 * time.Millisecond})
	c.Set(ctx, "k", "v1", 0)
	// Read the file as a restart would, until the periodic save has it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if keys := readFileKeys(t, path); len(keys) == 1 && keys[0].Items[0] == "v1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the file did not get the write within 10s: %+v", readFileKeys(t, path))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A crash now (no Close) keeps what the last save had.
	c.Set(ctx, "k", "v2", 0)
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if keys := readFileKeys(t, path); len(keys) != 1 || keys[0].Items[0] != "v2" {
		t.Errorf("after Close the file holds %+v, want k=v2", keys)
	}
}

func readFileKeys(t *testing.T, path string) []entry {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var f file
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&f); err != nil {
		t.Fatal(err)
	}
	return f.Keys
}

// TestDataFileServesOneProcess: a second server on the same data file is
// refused while the first runs (it would save its own state over the
// first's), and starts once the first has stopped.
func TestDataFileServesOneProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "memsync.data")
	first, c := start(t, Options{DataFile: path})
	c.Set(context.Background(), "k", "first", 0)
	if second, err := Start(Options{DataFile: path}); err == nil {
		second.Close(context.Background())
		t.Fatal("a second server started on a data file in use")
	} else if !strings.Contains(err.Error(), "in use by another memsync") {
		t.Errorf("second server: %v", err)
	}
	if err := first.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, c2 := start(t, Options{DataFile: path})
	if v := c2.Get(context.Background(), "k").Val(); v != "first" {
		t.Errorf("the second server holds k=%q, want the first's", v)
	}
}

func TestDamagedDataFileIsRefusedAndKept(t *testing.T) {
	for name, content := range map[string][]byte{
		"not gob":   []byte("hello"),
		"truncated": nil, // filled below
		"empty":     {},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "memsync.data")
			if content == nil {
				// A real file cut short, as a full disk would leave it
				// without the rename.
				s, c := start(t, Options{DataFile: path})
				fill(t, c)
				if err := s.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				whole, _ := os.ReadFile(path)
				content = whole[:len(whole)/2]
			}
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Start(Options{DataFile: path})
			if err == nil {
				s.Close(context.Background())
				t.Fatal("Start accepted a damaged data file")
			}
			if after, _ := os.ReadFile(path); string(after) != string(content) {
				t.Error("the damaged file was changed")
			}
		})
	}
}

// TestTTLsRunInRealTime: keys expire on the embedded Redis by the clock,
// and PTTL counts down, though nothing but time passes.
func TestTTLsRunInRealTime(t *testing.T) {
	_, c := start(t, Options{})
	ctx := context.Background()
	c.Set(ctx, "short", "x", 100*time.Millisecond)
	c.Set(ctx, "long", "x", time.Hour)
	started := time.Now()
	for c.Exists(ctx, "short").Val() == 1 {
		if time.Since(started) > 5*time.Second {
			t.Fatal("a key with a 100 ms TTL still exists after 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if gone := time.Since(started); gone < 100*time.Millisecond {
		t.Errorf("a key with a 100 ms TTL went after %v", gone)
	}
	if ttl := c.PTTL(ctx, "long").Val(); ttl > time.Hour-100*time.Millisecond || ttl < time.Hour-5*time.Second {
		t.Errorf("PTTL of a 1 h key %v after ~100 ms, want it counted down", ttl)
	}
}

func TestServerWithoutDataFileKeepsNothing(t *testing.T) {
	s, err := Start(Options{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Save(context.Background())
	if err != nil || res.Written {
		t.Errorf("Save without a data file = %+v, %v", res, err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// BenchmarkSave: saves of 10,000 keys shaped as memsync's (a hash of
// five fields each, and their subtree index), by transaction and by the
// script: how long a save takes, and the longest a PING sent meanwhile
// waited, the time the embedded Redis answered nothing else.
func BenchmarkSave(b *testing.B) {
	for _, way := range []string{"transaction", "script"} {
		b.Run(way, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "memsync.data")
			s, c := start(b, Options{DataFile: path})
			ctx := context.Background()
			pipe := c.Pipeline()
			for i := range 10_000 {
				k := fmt.Sprintf("ms:{bench/tasks/T%d}/state", i)
				pipe.HSet(ctx, k, "etag", "0123456789abcdef01234567", "exp", "0", "seq", "1",
					"clocks", "1|w1|w1:1", "s:1", `,"timestamp":1764170000000,"writer":"w1","value":{"status":"running","progress":42}}`)
				pipe.ZAdd(ctx, fmt.Sprintf("ms:{bench/tasks/T%d}#keys", i), redis.Z{Score: 1e300, Member: "tasks/T" + strconv.Itoa(i) + "/state"})
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			var worst time.Duration
			for i := 0; i < b.N; i++ {
				c.Set(ctx, "changed", i, 0) // so that every save reads and writes
				stop, done := make(chan struct{}), make(chan time.Duration)
				go func() {
					var w time.Duration
					for {
						select {
						case <-stop:
							done <- w
							return
						default:
						}
						started := time.Now()
						c.Ping(ctx)
						w = max(w, time.Since(started))
					}
				}()
				if way == "script" {
					if _, err := snapshotLua(ctx, s.rdb); err != nil {
						b.Fatal(err)
					}
				} else if res, err := s.Save(ctx); err != nil || !res.Written {
					b.Fatal(res, err)
				}
				close(stop)
				worst = max(worst, <-done)
			}
			b.ReportMetric(float64(worst.Microseconds())/1000, "ms-longest-stop")
		})
	}
}

// BenchmarkCommandAmongKeys: one write script (a key's hash and its index
// entry, as memsync's writes touch) on an embedded Redis that holds
// 20,000 keys, against one that holds 100. A command's cost must not grow
// with the keys held: miniredis's own real-time TTLs sorted every key's
// name at every command, 40 PUTs/s with 10,000 memsync keys (see runClock).
func BenchmarkCommandAmongKeys(b *testing.B) {
	write := redis.NewScript(`redis.call('HSET', KEYS[1], 'v', ARGV[1]) redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1]) return 1`)
	for _, held := range []int{100, 20_000} {
		b.Run(strconv.Itoa(held)+"-keys", func(b *testing.B) {
			_, c := start(b, Options{})
			ctx := context.Background()
			pipe := c.Pipeline()
			for i := range held {
				pipe.Set(ctx, "held:"+strconv.Itoa(i), i, time.Hour)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			for i := 0; b.Loop(); i++ {
				if err := write.Run(ctx, c, []string{"k" + strconv.Itoa(i%1000), "index"}, i).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
