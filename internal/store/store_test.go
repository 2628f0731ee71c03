package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

const ns = "test"

func newStore(tb testing.TB, b redistest.Backend, cfg store.Config) *store.Store {
	tb.Helper()
	return newStoreOn(tb, b.Client, cfg)
}

// newStoreOn is newStore on any client (a Cluster's).
func newStoreOn(tb testing.TB, c redis.UniversalClient, cfg store.Config) *store.Store {
	tb.Helper()
	cfg.PerKeyScripts = cfg.PerKeyScripts || perKeyScripts
	s, err := store.New(c, cfg)
	if err != nil {
		tb.Fatalf("store.New: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// perKeyScripts makes newStore's stores write as on Redis Cluster: a script
// per write, events published after (see TestPerKeyScriptsWritePath).
var perKeyScripts bool

// The write tests again, on the write path of Redis Cluster (which cannot
// be run here): one script per write and the events published after,
// rather than one commitScript call per group of writes.
func TestPerKeyScriptsWritePath(t *testing.T) {
	perKeyScripts = true
	defer func() { perKeyScripts = false }()
	for name, test := range map[string]func(*testing.T){
		"PutGet":                TestPutGet,
		"WriteSemantics":        TestWriteSemantics,
		"ConditionalWrites":     TestConditionalWrites,
		"IdempotentWrites":      TestIdempotentWrites,
		"IdempotentBatch":       TestIdempotentBatch,
		"IdempotentAtomicBatch": TestIdempotentAtomicBatch,
		"IdempotentDeletes":     TestIdempotentDeletes,
		"TTL":                   TestTTL,
		"Delete":                TestDelete,
		"SiblingCap":            TestSiblingCapMergesNeverDrops,
		"ConcurrentWriters":     TestConcurrentWritersMatchModel,
		"BatchMixedOps":         TestBatchMixedOpsStandAlone,
		"BatchEvents":           TestBatchPublishesOneEventPerWrite,
		"BigBatchBrief":         TestBigBatchIsPublishedBrief,
		"BatchAfterScriptFlush": TestBatchAfterScriptFlush,
		"BatchBackendDown":      TestBatchBackendDown,
		"RewriteOfExpiredKey":   TestRewriteOfAnExpiredKeyAnnouncesItOnce,
		"WritesPublishEvents":   TestWritesAndDeletesPublishEvents,
		"GroupCommit":           TestGroupCommitUnderConcurrency,
		"SweepAcrossInstances":  TestSweepAnnouncesEachExpiryOnceAcrossInstances,
		"ExtendedTTL":           TestExtendedTTLStaysListedAndUnannounced,
	} {
		t.Run(name, test)
	}
}

// mustPut writes value (a JSON text) and fails the test on error.
func mustPut(tb testing.TB, s *store.Store, key, writer, value string, ctxClock clock.Vector) store.PutResult {
	tb.Helper()
	res, err := s.Put(context.Background(), ns, key, store.PutRequest{Value: json.RawMessage(value), Writer: writer, Context: ctxClock})
	if err != nil {
		tb.Fatalf("Put(%s, %s, %s): %v", key, writer, value, err)
	}
	return res
}

func mustGet(tb testing.TB, s *store.Store, key string, opt store.GetOptions) store.Entry {
	tb.Helper()
	e, err := s.Get(context.Background(), ns, key, opt)
	if err != nil {
		tb.Fatalf("Get(%s): %v", key, err)
	}
	return e
}

func ttl(d time.Duration) *time.Duration { return &d }

func TestPutGet(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		before := time.Now()
		res := mustPut(t, s, "tasks/T1/state", "w1", `{"status": "running"}`, nil)
		if got, want := string(res.Value), `{"status":"running"}`; got != want {
			t.Errorf("put value = %s, want %s", got, want)
		}
		e := mustGet(t, s, "tasks/T1/state", store.GetOptions{})
		if got, want := string(e.Value), `{"status":"running"}`; got != want {
			t.Errorf("get value = %s, want %s", got, want)
		}
		if got, want := e.Version, (clock.Vector{"w1": 1}); got.Compare(want) != clock.Equal {
			t.Errorf("version = %v, want %v", got, want)
		}
		if e.ETag == "" || e.ETag != res.ETag {
			t.Errorf("etag = %q, put returned %q", e.ETag, res.ETag)
		}
		if e.Writer != "w1" || e.Strategy != store.LWW || e.Conflict() || len(e.Siblings) != 1 {
			t.Errorf("entry = %+v", e)
		}
		wantExp := before.Add(time.Hour).UnixMilli()
		if e.ExpiresAt < wantExp || e.ExpiresAt > wantExp+5000 {
			t.Errorf("expires_at = %d, want about %d (default TTL 1h)", e.ExpiresAt, wantExp)
		}
		// The Redis layout is readable with redis-cli: prefix, namespace, key.
		n, err := b.Client.Exists(context.Background(), "ms:{test/tasks/T1}/state").Result()
		if err != nil || n != 1 {
			t.Errorf("EXISTS ms:{test/tasks/T1}/state = %d, %v; want 1", n, err)
		}
	})
}

func TestValuesSurviveExactly(t *testing.T) {
	values := []string{
		`12345678901234567890`,
		`3.141592653589793238462643383279`,
		`[]`,
		`{}`,
		`null`,
		`"é ü 日本 <>&"`,
		`{"a":[],"b":{},"c":[1,{"d":[]}],"e":"\u0000\"\\"}`,
	}
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		for i, v := range values {
			key := "values/v" + strconv.Itoa(i)
			mustPut(t, s, key, "w1", v, nil)
			if got := string(mustGet(t, s, key, store.GetOptions{}).Value); got != v {
				t.Errorf("value %d: got %s, want %s", i, got, v)
			}
		}
	})
}

func TestWriteSemantics(t *testing.T) {
	type write struct {
		writer, value string
		context       string // "" none, "read" the version read just before, else a clock text
	}
	tests := []struct {
		name       string
		writes     []write
		wantValues []string // the siblings left, oldest first
		wantClock  string   // the merged version
	}{
		{"same writer supersedes itself", []write{{"w1", `1`, ""}, {"w1", `2`, ""}}, []string{`2`}, "w1=2"},
		{"two writers without context conflict", []write{{"w1", `1`, ""}, {"w2", `2`, ""}}, []string{`1`, `2`}, "w1=1,w2=1"},
		{"a write with the read version collapses siblings",
			[]write{{"w1", `1`, ""}, {"w2", `2`, ""}, {"w3", `3`, "read"}}, []string{`3`}, "w1=1,w2=1,w3=1"},
		{"a stale context keeps what it has not seen",
			[]write{{"w1", `1`, ""}, {"w2", `2`, "w1=1"}, {"w3", `3`, "w1=1"}}, []string{`2`, `3`}, "w1=1,w2=1,w3=1"},
		{"a writer's counter rises above the context's",
			[]write{{"w1", `1`, ""}, {"w1", `2`, ""}, {"w2", `3`, "read"}, {"w1", `4`, "w1=1"}}, []string{`3`, `4`}, "w1=3,w2=1"},
		{"a context from the future is merged, not trusted blindly",
			[]write{{"w1", `1`, ""}, {"w2", `2`, "w1=5"}}, []string{`2`}, "w1=5,w2=1"},
	}
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				key := "sem/k" + strconv.Itoa(i)
				for _, w := range tt.writes {
					var c clock.Vector
					switch w.context {
					case "":
					case "read":
						c = mustGet(t, s, key, store.GetOptions{}).Version
					default:
						var err error
						if c, err = clock.Parse(w.context); err != nil {
							t.Fatal(err)
						}
					}
					mustPut(t, s, key, w.writer, w.value, c)
					time.Sleep(2 * time.Millisecond) // distinct timestamps: oldest-first order is the write order
				}
				e := mustGet(t, s, key, store.GetOptions{})
				var got []string
				for _, sib := range e.Siblings {
					got = append(got, string(sib.Value))
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.wantValues) {
					t.Errorf("siblings = %v, want %v", got, tt.wantValues)
				}
				if e.Version.String() != tt.wantClock {
					t.Errorf("version = %s, want %s", e.Version, tt.wantClock)
				}
				if got, want := e.Conflict(), len(tt.wantValues) > 1; got != want {
					t.Errorf("conflict = %v, want %v", got, want)
				}
			})
		}
	})
}

func TestConditionalWrites(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		first := mustPut(t, s, "cas/k", "w1", `"a"`, nil)
		second := mustPut(t, s, "cas/k", "w1", `"b"`, nil)

		tests := []struct {
			name    string
			key     string
			req     store.PutRequest
			wantErr error
		}{
			{"stale If-Match", "cas/k", store.PutRequest{Value: json.RawMessage(`"x"`), IfMatch: first.ETag}, store.ErrPreconditionFailed},
			{"If-Match on a missing key", "cas/missing", store.PutRequest{Value: json.RawMessage(`"x"`), IfMatch: first.ETag}, store.ErrPreconditionFailed},
			{"If-Match * on a missing key", "cas/missing", store.PutRequest{Value: json.RawMessage(`"x"`), IfMatch: "*"}, store.ErrPreconditionFailed},
			{"If-None-Match on an existing key", "cas/k", store.PutRequest{Value: json.RawMessage(`"x"`), IfNoneMatch: true}, store.ErrPreconditionFailed},
			// Both: the key must exist with that etag and must not exist.
			{"If-Match and If-None-Match on a missing key", "cas/missing", store.PutRequest{Value: json.RawMessage(`"x"`), IfMatch: second.ETag, IfNoneMatch: true}, store.ErrPreconditionFailed},
			{"If-Match and If-None-Match on an existing key", "cas/k", store.PutRequest{Value: json.RawMessage(`"x"`), IfMatch: second.ETag, IfNoneMatch: true}, store.ErrPreconditionFailed},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := s.Put(ctx, ns, tt.key, tt.req)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			})
		}
		// Nothing above changed anything.
		e := mustGet(t, s, "cas/k", store.GetOptions{})
		if string(e.Value) != `"b"` || e.ETag != second.ETag {
			t.Errorf("after failed conditions: value %s etag %s, want \"b\" %s", e.Value, e.ETag, second.ETag)
		}
		if _, err := s.Get(ctx, ns, "cas/missing", store.GetOptions{}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("cas/missing exists after failed conditional writes: %v", err)
		}
		// The current etag wins; create-only creates.
		if _, err := s.Put(ctx, ns, "cas/k", store.PutRequest{Value: json.RawMessage(`"c"`), IfMatch: second.ETag}); err != nil {
			t.Errorf("current If-Match: %v", err)
		}
		if _, err := s.Put(ctx, ns, "cas/new", store.PutRequest{Value: json.RawMessage(`"n"`), IfNoneMatch: true}); err != nil {
			t.Errorf("If-None-Match on a missing key: %v", err)
		}
		// An etag is never reused, even after delete and rewrite with equal content.
		cur := mustGet(t, s, "cas/new", store.GetOptions{})
		if _, err := s.Delete(ctx, ns, "cas/new", store.DeleteRequest{}); err != nil {
			t.Fatal(err)
		}
		again, err := s.Put(ctx, ns, "cas/new", store.PutRequest{Value: json.RawMessage(`"n"`)})
		if err != nil || again.ETag == cur.ETag {
			t.Errorf("etag after delete and rewrite = %q (err %v), old %q: must differ", again.ETag, err, cur.ETag)
		}
	})
}

func TestTTL(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{MaxTTL: time.Hour})
		ctx := context.Background()
		if _, err := s.Put(ctx, ns, "ttl/short", store.PutRequest{Value: json.RawMessage(`1`), TTL: ttl(time.Second)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, ns, "ttl/forever", store.PutRequest{Value: json.RawMessage(`1`), TTL: ttl(0)}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for {
			_, err := s.Get(ctx, ns, "ttl/short", store.GetOptions{})
			if errors.Is(err, store.ErrNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ttl/short still readable 2s after a 1s TTL (err %v)", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		ks, _, err := s.List(ctx, ns, "ttl/", "", 10)
		if err != nil || fmt.Sprint(ks) != "[ttl/forever]" {
			t.Errorf("List after expiry = %v, %v; want [ttl/forever]", ks, err)
		}
		e := mustGet(t, s, "ttl/forever", store.GetOptions{})
		if e.ExpiresAt != 0 {
			t.Errorf("ttl 0: expires_at = %d, want 0", e.ExpiresAt)
		}
		if d, err := b.Client.PTTL(ctx, keys.Redis(ns, "ttl/forever")).Result(); err != nil || d >= 0 {
			t.Errorf("ttl 0: PTTL = %v, %v; want no expiry", d, err)
		}
		for _, d := range []time.Duration{-time.Second, 2 * time.Hour} {
			if _, err := s.Put(ctx, ns, "ttl/bad", store.PutRequest{Value: json.RawMessage(`1`), TTL: ttl(d)}); !errors.Is(err, store.ErrInvalidArgument) {
				t.Errorf("ttl %s: err = %v, want ErrInvalidArgument", d, err)
			}
		}
	})
}

func TestInvalidInputNeverReachesRedis(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		tests := []struct {
			name    string
			ns, key string
			req     store.PutRequest
			wantErr error
		}{
			{"bad key", ns, "a//b", store.PutRequest{Value: json.RawMessage(`1`)}, store.ErrInvalidKey},
			{"bad namespace", "a/b", "k", store.PutRequest{Value: json.RawMessage(`1`)}, store.ErrInvalidKey},
			{"bad writer", ns, "k", store.PutRequest{Value: json.RawMessage(`1`), Writer: "w 1"}, store.ErrInvalidArgument},
			{"bad JSON", ns, "k", store.PutRequest{Value: json.RawMessage(`{`)}, store.ErrInvalidArgument},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if _, err := s.Put(ctx, tt.ns, tt.key, tt.req); !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
			})
		}
		if n, err := b.Client.DBSize(ctx).Result(); err != nil || n != 0 {
			t.Errorf("DBSIZE = %d, %v after rejected writes; want 0", n, err)
		}
	})
}

func TestDelete(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		if _, err := s.Delete(ctx, ns, "del/k", store.DeleteRequest{}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("delete missing: %v, want ErrNotFound", err)
		}
		first := mustPut(t, s, "del/k", "w1", `1`, nil)
		mustPut(t, s, "del/k", "w1", `2`, nil)
		if _, err := s.Delete(ctx, ns, "del/k", store.DeleteRequest{IfMatch: first.ETag}); !errors.Is(err, store.ErrPreconditionFailed) {
			t.Errorf("delete with stale etag: %v, want ErrPreconditionFailed", err)
		}
		if got := string(mustGet(t, s, "del/k", store.GetOptions{}).Value); got != "2" {
			t.Errorf("after failed delete value = %s, want 2", got)
		}
		if _, err := s.Delete(ctx, ns, "del/k", store.DeleteRequest{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, ns, "del/k", store.GetOptions{}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("get after delete: %v", err)
		}
		if ks, _, _ := s.List(ctx, ns, "", "", 10); len(ks) != 0 {
			t.Errorf("listed after delete: %v", ks)
		}
	})
}

func TestList(t *testing.T) {
	all := []string{
		"a", "a/b", "a/b/c", "a/b/d/e", "a/c", "a-b/x", "coordination/queue",
		"tasks/T1/agents/A1", "tasks/T1/agents/A2", "tasks/T1/state", "tasks/T10/state", "tasks/T2/progress",
		"workers/w1/heartbeat",
	}
	// all is already in path order, segment by segment: "a/…" before "a-b/…".
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		for _, k := range all {
			mustPut(t, s, k, "w1", `1`, nil)
		}
		mustPut(t, s, "other", "w1", `1`, nil)
		if _, err := s.Put(ctx, "elsewhere", "a/b", store.PutRequest{Value: json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Delete(ctx, ns, "other", store.DeleteRequest{}); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			prefix string
			want   []string
		}{
			{"", all},
			{"a", all[:6]},
			{"a/", all[1:5]},
			{"a/b", all[1:4]},
			{"a/b/", all[2:4]},
			{"tasks/T1", all[7:11]},
			{"tasks/T1/", all[7:10]},
			{"tasks/T1/agents/", all[7:9]},
			{"tasks/", all[7:12]},
			{"t", all[7:12]},
			{"nothing/", nil},
		}
		for _, tt := range tests {
			t.Run("prefix="+tt.prefix, func(t *testing.T) {
				got, cursor, err := s.List(ctx, ns, tt.prefix, "", 100)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got) != fmt.Sprint(tt.want) || cursor != "" {
					t.Errorf("List(%q) = %v cursor %q, want %v", tt.prefix, got, cursor, tt.want)
				}
				// Paging one by one gives the same keys.
				var paged []string
				cursor = ""
				for range len(all) + 2 {
					page, next, err := s.List(ctx, ns, tt.prefix, cursor, 2)
					if err != nil {
						t.Fatal(err)
					}
					paged = append(paged, page...)
					if cursor = next; cursor == "" {
						break
					}
				}
				if fmt.Sprint(paged) != fmt.Sprint(tt.want) {
					t.Errorf("paged List(%q) = %v, want %v", tt.prefix, paged, tt.want)
				}
			})
		}
		for _, bad := range []struct{ prefix, cursor string }{{"a b", ""}, {"", "!!"}, {"", "Ly8"}} {
			if _, _, err := s.List(ctx, ns, bad.prefix, bad.cursor, 10); !errors.Is(err, store.ErrInvalidArgument) {
				t.Errorf("List(%q, %q) err = %v, want ErrInvalidArgument", bad.prefix, bad.cursor, err)
			}
		}
	})
}

func TestSiblingCapMergesNeverDrops(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		rules, err := store.NewRules([]store.Rule{{Pattern: "lists/**", Strategy: store.Union}})
		if err != nil {
			t.Fatal(err)
		}
		s := newStore(t, b, store.Config{SiblingCap: 4, Rules: rules})
		var last store.PutResult
		for i := range 5 {
			last = mustPut(t, s, "lists/l", "w"+strconv.Itoa(i), `["`+strconv.Itoa(i)+`"]`, nil)
		}
		if got := len(last.Siblings); got != 1 {
			t.Errorf("siblings after passing the cap of 4 = %d, want 1 (merged)", got)
		}
		e := mustGet(t, s, "lists/l", store.GetOptions{})
		if got, want := string(e.Value), `["0","1","2","3","4"]`; got != want || len(e.Siblings) != 1 {
			t.Errorf("merged value = %s (%d siblings), want %s in 1 sibling", got, len(e.Siblings), want)
		}
		for i := range 5 {
			if e.Version["w"+strconv.Itoa(i)] == 0 {
				t.Errorf("merged version %v lost writer w%d", e.Version, i)
			}
		}
	})
}

func TestCountersBeyond32Bits(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		big := uint64(1) << 45
		res := mustPut(t, s, "big/k", "w1", `1`, clock.Vector{"w1": big, "w2": big + 7})
		if got, want := res.Written.Version.String(), fmt.Sprintf("w1=%d,w2=%d", big+1, big+7); got != want {
			t.Errorf("version = %s, want %s", got, want)
		}
	})
}

func TestBackendDownAndBack(t *testing.T) {
	b := redistest.Real(t)
	s := newStore(t, b, store.Config{})
	ctx := context.Background()
	mustPut(t, s, "down/k", "w1", `1`, nil)
	b.Real.Stop(t)
	if _, err := s.Get(ctx, ns, "down/k", store.GetOptions{}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("get with Redis down: %v, want ErrUnavailable", err)
	}
	if _, err := s.Put(ctx, ns, "down/k", store.PutRequest{Value: json.RawMessage(`2`)}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("put with Redis down: %v, want ErrUnavailable", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("ping with Redis down: %v, want ErrUnavailable", err)
	}
	b.Real.Restart(t) // not persistent: the data is gone, the service is not
	// go-redis re-dials in the background about once a second.
	back := time.Now()
	for s.Ping(ctx) != nil {
		if time.Since(back) > 5*time.Second {
			t.Fatal("store still unavailable 5 s after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := s.Put(ctx, ns, "down/k", store.PutRequest{Value: json.RawMessage(`3`)}); err != nil {
		t.Errorf("put after Redis came back: %v", err)
	}
}

// TestConcurrentWritersMatchModel hammers one key from many goroutines,
// with and without contexts, then checks that the siblings left are exactly
// the acknowledged writes that no other acknowledged write dominates: every
// superseded write is gone and no concurrent one is lost. (A write can only
// be dominated by a later one, so this set does not depend on the order in
// which Redis applied them.)
func TestConcurrentWritersMatchModel(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		const writers, opsEach = 12, 60
		type ack struct {
			value   string
			version clock.Vector
		}
		var (
			mu    sync.Mutex
			acks  []ack
			wg    sync.WaitGroup
			phase sync.WaitGroup
		)
		phase.Add(writers)
		ctx := context.Background()
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 7))
				writer := "w" + strconv.Itoa(w)
				var stale clock.Vector
				for i := range opsEach {
					var c clock.Vector
					op := rng.IntN(3)
					if i == opsEach-3 {
						// Everyone ends with blind writes, after a barrier, so
						// that many concurrent siblings must survive.
						phase.Done()
						phase.Wait()
					}
					if i >= opsEach-3 {
						op = 0
					}
					switch op {
					case 1: // read, then write with what was read
						e, err := s.Get(ctx, ns, "model/k", store.GetOptions{})
						if err == nil {
							c = e.Version
							if stale == nil || rng.IntN(4) == 0 {
								stale = e.Version
							}
						} else if !errors.Is(err, store.ErrNotFound) {
							t.Error(err)
							phase.Done()
							return
						}
					case 2: // write with an old context
						c = stale
					}
					value := fmt.Sprintf(`"%s-%d"`, writer, i)
					res, err := s.Put(ctx, ns, "model/k", store.PutRequest{Value: json.RawMessage(value), Writer: writer, Context: c})
					if err != nil {
						t.Error(err)
						phase.Done()
						return
					}
					mu.Lock()
					acks = append(acks, ack{value, res.Written.Version})
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		want := map[string]bool{}
		for _, a := range acks {
			dominated := false
			for _, o := range acks {
				if a.version.Compare(o.version) == clock.Before {
					dominated = true
					break
				}
			}
			if !dominated {
				want[a.value] = true
			}
		}
		e := mustGet(t, s, "model/k", store.GetOptions{Resolve: store.Siblings})
		got := map[string]bool{}
		for _, sib := range e.Siblings {
			got[string(sib.Value)] = true
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("siblings left = %v\nmodel says  = %v", got, want)
		}
		if len(acks) != writers*opsEach {
			t.Errorf("acknowledged %d writes, want %d", len(acks), writers*opsEach)
		}
		t.Logf("%d writes, %d siblings left", len(acks), len(got))
	})
}

// TestIndexMemoRepairsALostIndex: writes skip raising index entries this
// instance raised moments ago, but only for a few seconds, so an index that
// Redis lost (a restart without persistence) comes back with later writes.
func TestIndexMemoRepairsALostIndex(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		now := time.Now()
		var mu sync.Mutex
		clockNow := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
		s := newStore(t, b, store.Config{Now: clockNow})
		ctx := context.Background()
		mustPut(t, s, "memo/a/k", "w1", `1`, nil)
		if err := b.Client.Del(ctx, keys.Namespace(ns, "roots"), keys.Aux(ns, "memo", "children")).Err(); err != nil {
			t.Fatal(err)
		}
		mustPut(t, s, "memo/a/k", "w1", `2`, nil) // within the memo's trust: skipped
		mu.Lock()
		now = now.Add(6 * time.Second)
		mu.Unlock()
		mustPut(t, s, "memo/a/k", "w1", `3`, nil) // the memo has lapsed: raised again
		if ks, _, err := s.List(ctx, ns, "memo/", "", 10); err != nil || fmt.Sprint(ks) != "[memo/a/k]" {
			t.Errorf("List after the index was lost and written again = %v, %v; want [memo/a/k]", ks, err)
		}
	})
}

// TestStoredLayoutDecodes checks both decoding paths of a stored sibling:
// the layout putScript writes, and a hand-edited envelope in another field
// order, which must decode the same.
func TestStoredLayoutDecodes(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b, store.Config{})
		ctx := context.Background()
		mustPut(t, s, "layout/k", "w1", `{"a":"},\"writer\":\"x"}`, nil)
		e := mustGet(t, s, "layout/k", store.GetOptions{})
		if string(e.Value) != `{"a":"},\"writer\":\"x"}` || e.Writer != "w1" || e.Version.String() != "w1=1" {
			t.Fatalf("decoded %+v", e)
		}
		rk := keys.Redis(ns, "layout/k")
		fields, err := b.Client.HGetAll(ctx, rk).Result()
		if err != nil {
			t.Fatal(err)
		}
		var field string
		for f, v := range fields {
			if strings.HasPrefix(f, "s:") {
				field = f
				// The envelope is stored after its version, as the write passed it.
				want := fmt.Sprintf(`,"timestamp":%d,"writer":"w1","value":{"a":"},\"writer\":\"x"}}`, e.Timestamp)
				if v != want {
					t.Errorf("stored envelope %s, want %s", v, want)
				}
			}
		}
		for _, edited := range []string{
			// Hand-edited: fields in another order, spaces.
			fmt.Sprintf(`{"writer":"w1","value":[1, 2],"timestamp":%d,"version":{"w1":1}}`, e.Timestamp),
			// As memsync stored envelopes before, whole.
			fmt.Sprintf(`{"version":{"w1":1},"timestamp":%d,"writer":"w1","value":[1, 2]}`, e.Timestamp),
			// Without a version, fields in another order.
			fmt.Sprintf(`,"value":[1, 2],"writer":"w1","timestamp":%d}`, e.Timestamp),
		} {
			if err := b.Client.HSet(ctx, rk, field, edited).Err(); err != nil {
				t.Fatal(err)
			}
			e2 := mustGet(t, s, "layout/k", store.GetOptions{})
			if string(e2.Value) != `[1, 2]` || e2.Writer != "w1" || e2.Timestamp != e.Timestamp || e2.Version.String() != "w1=1" {
				t.Errorf("envelope %s decoded as %+v", edited, e2)
			}
		}
	})
}

// A TTL of a minute or more ends on a whole second, no earlier than asked
// and less than a second later; a shorter one is exact to the millisecond.
func TestLongTTLsEndOnAWholeSecond(t *testing.T) {
	redistest.Each(t, func(t *testing.T, b redistest.Backend) {
		now := time.UnixMilli(1_800_000_000_123)
		s := newStore(t, b, store.Config{Now: func() time.Time { return now }})
		ctx := context.Background()
		for _, tt := range []struct {
			ttl  time.Duration
			want int64
		}{
			{90 * time.Second, 1_800_000_091_000},
			{time.Minute, 1_800_000_061_000},
			{59 * time.Second, 1_800_000_059_123},
			{time.Second, 1_800_000_001_123},
		} {
			res, err := s.Put(ctx, ns, "ttl/k", store.PutRequest{Value: json.RawMessage(`1`), TTL: ttl(tt.ttl)})
			if err != nil {
				t.Fatal(err)
			}
			if res.ExpiresAt != tt.want {
				t.Errorf("ttl %s: expires_at %d, want %d", tt.ttl, res.ExpiresAt, tt.want)
			}
		}
		// Within the same second, a long TTL keeps the key's expiry.
		first := mustPutTTL(t, s, "ttl/same", time.Hour).ExpiresAt
		now = now.Add(400 * time.Millisecond)
		if again := mustPutTTL(t, s, "ttl/same", time.Hour).ExpiresAt; again != first {
			t.Errorf("rewritten 400 ms later: expires_at %d, was %d", again, first)
		}
	})
}
