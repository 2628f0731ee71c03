package keys_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/keys"
)

// seg returns a valid segment of n characters.
func seg(n int) string { return strings.Repeat("x", n) }

// hashTag returns what Redis Cluster hashes for a key: the text between the
// first '{' and the first '}' after it. It fails the test when the key has
// no non-empty tag, because then the key would hash as a whole.
func hashTag(tb testing.TB, redisKey string) string {
	tb.Helper()
	i := strings.IndexByte(redisKey, '{')
	if i < 0 {
		tb.Fatalf("%q has no '{'", redisKey)
	}
	j := strings.IndexByte(redisKey[i+1:], '}')
	if j <= 0 {
		tb.Fatalf("%q has no non-empty hash tag", redisKey)
	}
	return redisKey[i+1 : i+1+j]
}

func TestValidate(t *testing.T) {
	// 128+1+128+1+128+1+125 = 512 bytes in four full-width segments.
	key512 := seg(128) + "/" + seg(128) + "/" + seg(128) + "/" + seg(125)
	key513 := seg(128) + "/" + seg(128) + "/" + seg(128) + "/" + seg(126)
	if len(key512) != keys.MaxKeyLen || len(key513) != keys.MaxKeyLen+1 {
		t.Fatalf("test keys are %d and %d bytes", len(key512), len(key513))
	}

	for _, tc := range []struct {
		name string
		key  string
	}{
		{"one segment", "foo"},
		{"two segments", "coordination/queue"},
		{"seed key", "tasks/T1/agents/agent-7"},
		{"eight segments", "a/b/c/d/e/f/g/h"},
		{"every allowed character", "ABCDEFGHIJKLMNOPQRSTUVWXYZ/abcdefghijklmnopqrstuvwxyz/0123456789/._:@-"},
		{"dots inside a segment", "a/.../..b/.c/d."},
		{"128-character segment", "a/" + seg(128)},
		{"512-byte key", key512},
		{"case-sensitive names", "Tasks/t1"},
	} {
		t.Run("valid/"+tc.name, func(t *testing.T) {
			if err := keys.Validate(tc.key); err != nil {
				t.Errorf("Validate(%q) = %v, want nil", tc.key, err)
			}
		})
	}

	for _, tc := range []struct {
		name string
		key  string
	}{
		{"empty", ""},
		{"nine segments", "a/b/c/d/e/f/g/h/i"},
		{"empty segment", "a//b"},
		{"leading slash", "/a"},
		{"trailing slash", "a/"},
		{"only a slash", "/"},
		{"dot", "."},
		{"dot segment", "a/./b"},
		{"dot-dot", ".."},
		{"dot-dot segment", "tasks/../secrets"},
		{"space", "a b"},
		{"leading space", " a"},
		{"tab", "a\tb"},
		{"newline", "a\nb"},
		{"NUL", "a\x00"},
		{"unicode", "tâche"},
		{"invalid UTF-8", "a\xff"},
		{"hash", "a#lock"},
		{"open brace", "a{b"},
		{"close brace", "a}b"},
		{"asterisk", "tasks/*"},
		{"question mark", "a?b"},
		{"percent", "a%2Fb"},
		{"comma", "a,b"},
		{"equals", "a=b"},
		{"backslash", `a\b`},
		{"plus", "a+b"},
		{"129-character segment", "a/" + seg(129)},
		{"513-byte key", key513},
	} {
		t.Run("invalid/"+tc.name, func(t *testing.T) {
			err := keys.Validate(tc.key)
			if !errors.Is(err, keys.ErrInvalidKey) {
				t.Errorf("Validate(%q) = %v, want an error wrapping ErrInvalidKey", tc.key, err)
			}
		})
	}
}

func TestValidateNamespace(t *testing.T) {
	for _, tc := range []struct {
		ns   string
		want bool
	}{
		{"task-sentinel", true},
		{"a", true},
		{"Az09._:@-", true},
		{seg(128), true},
		{"", false},
		{seg(129), false},
		{".", false},
		{"..", false},
		{"a/b", false}, // a namespace is one segment
		{"a b", false},
		{"{ns}", false},
		{"ns#x", false},
		{"é", false},
	} {
		t.Run(tc.ns, func(t *testing.T) {
			err := keys.ValidateNamespace(tc.ns)
			if got, want := err == nil, tc.want; got != want {
				t.Fatalf("ValidateNamespace(%q) = %v, want valid %v", tc.ns, err, want)
			}
			if err != nil && !errors.Is(err, keys.ErrInvalidKey) {
				t.Errorf("ValidateNamespace(%q) = %v, want an error wrapping ErrInvalidKey", tc.ns, err)
			}
			if got, want := keys.ValidSegment(tc.ns), tc.want; got != want {
				t.Errorf("ValidSegment(%q) = %v, want %v", tc.ns, got, want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	const ns = "task-sentinel"
	for _, tc := range []struct {
		key                                string
		subtree, tag, redis, aux, subIndex string
	}{
		{
			key:      "foo",
			subtree:  "foo",
			tag:      "{task-sentinel/foo}",
			redis:    "ms:{task-sentinel/foo}",
			aux:      "ms:{task-sentinel/foo}#lock",
			subIndex: "ms:{task-sentinel/foo}#keys",
		},
		{
			key:      "coordination/queue",
			subtree:  "coordination/queue",
			tag:      "{task-sentinel/coordination/queue}",
			redis:    "ms:{task-sentinel/coordination/queue}",
			aux:      "ms:{task-sentinel/coordination/queue}#lock",
			subIndex: "ms:{task-sentinel/coordination/queue}#keys",
		},
		{
			key:      "tasks/T1/state",
			subtree:  "tasks/T1",
			tag:      "{task-sentinel/tasks/T1}",
			redis:    "ms:{task-sentinel/tasks/T1}/state",
			aux:      "ms:{task-sentinel/tasks/T1}/state#lock",
			subIndex: "ms:{task-sentinel/tasks/T1}#keys",
		},
		{
			key:      "tasks/T1/agents/agent-7",
			subtree:  "tasks/T1",
			tag:      "{task-sentinel/tasks/T1}",
			redis:    "ms:{task-sentinel/tasks/T1}/agents/agent-7",
			aux:      "ms:{task-sentinel/tasks/T1}/agents/agent-7#lock",
			subIndex: "ms:{task-sentinel/tasks/T1}#keys",
		},
		{
			key:      "a/b/c/d/e/f/g/h",
			subtree:  "a/b",
			tag:      "{task-sentinel/a/b}",
			redis:    "ms:{task-sentinel/a/b}/c/d/e/f/g/h",
			aux:      "ms:{task-sentinel/a/b}/c/d/e/f/g/h#lock",
			subIndex: "ms:{task-sentinel/a/b}#keys",
		},
	} {
		t.Run(tc.key, func(t *testing.T) {
			for _, c := range []struct{ what, got, want string }{
				{"Subtree", keys.Subtree(tc.key), tc.subtree},
				{"Tag", keys.Tag(ns, tc.key), tc.tag},
				{"Redis", keys.Redis(ns, tc.key), tc.redis},
				{"Aux", keys.Aux(ns, tc.key, "lock"), tc.aux},
				{"SubtreeIndex", keys.SubtreeIndex(ns, tc.key), tc.subIndex},
			} {
				if c.got != c.want {
					t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
				}
			}
		})
	}

	t.Run("Namespace", func(t *testing.T) {
		if got, want := keys.Namespace(ns, "expiry"), "ms:{task-sentinel}#expiry"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
}

// propertyKeys returns valid keys of one to four segments over a small
// alphabet, so that many share a first segment, a subtree or a prefix, plus
// keys at the limits.
func propertyKeys() []string {
	segs := []string{"a", "b", "tasks", "T1", ".a", "a.", "...", "x:y@z_-"}
	out := []string{seg(128), "a/b/c/d/e/f/g/h", "tasks/T1/" + seg(128)}
	var walk func(prefix string, depth int)
	walk = func(prefix string, depth int) {
		for _, s := range segs {
			k := s
			if prefix != "" {
				k = prefix + "/" + s
			}
			out = append(out, k)
			if depth < 3 {
				walk(k, depth+1)
			}
		}
	}
	walk("", 1)
	return out
}

// TestRedisNamesProperty checks, over every pair of a few thousand valid keys
// in two namespaces, that data keys never collide with each other or with any
// auxiliary, index or namespace key, and that every key of one subtree
// carries the same hash tag and no other subtree's.
func TestRedisNamesProperty(t *testing.T) {
	ks := propertyKeys()
	for _, k := range ks {
		if err := keys.Validate(k); err != nil {
			t.Fatalf("property key %q is invalid: %v", k, err)
		}
	}
	namespaces := []string{"task-sentinel", "other", "a", "tasks"}
	kinds := []string{"lock", "keys", "fence", "", "x"}

	data := map[string]string{}  // Redis key → ns|key that made it
	other := map[string]string{} // aux, index and namespace keys → what made them
	tags := map[string]string{}  // ns|subtree → hash tag
	tagOwner := map[string]string{}
	for _, ns := range namespaces {
		for _, kind := range kinds {
			other[keys.Namespace(ns, kind)] = "Namespace(" + ns + ", " + kind + ")"
		}
		for _, k := range ks {
			id := ns + "|" + k
			r := keys.Redis(ns, k)
			if prev, dup := data[r]; dup {
				t.Fatalf("Redis(%s) = Redis(%s) = %q", id, prev, r)
			}
			data[r] = id
			for _, kind := range kinds {
				other[keys.Aux(ns, k, kind)] = "Aux(" + id + ", " + kind + ")"
			}
			other[keys.SubtreeIndex(ns, k)] = "SubtreeIndex(" + id + ")"

			tag := hashTag(t, r)
			if got, want := "{"+tag+"}", keys.Tag(ns, k); got != want {
				t.Errorf("Redis(%s) = %q: hash tag %q, Tag says %q", id, r, got, want)
			}
			for what, name := range map[string]string{
				"Aux":          keys.Aux(ns, k, "lock"),
				"SubtreeIndex": keys.SubtreeIndex(ns, k),
			} {
				if got := hashTag(t, name); got != tag {
					t.Errorf("%s(%s) = %q: hash tag %q, data key's is %q", what, id, name, got, tag)
				}
			}
			sub := ns + "|" + keys.Subtree(k)
			if prev, ok := tags[sub]; ok && prev != tag {
				t.Errorf("subtree %s has hash tags %q and %q", sub, prev, tag)
			}
			tags[sub] = tag
			if prev, ok := tagOwner[tag]; ok && prev != sub {
				t.Errorf("subtrees %s and %s share hash tag %q", prev, sub, tag)
			}
			tagOwner[tag] = sub
		}
	}
	for r, id := range data {
		if by, clash := other[r]; clash {
			t.Errorf("Redis(%s) = %s = %q", id, by, r)
		}
	}
	for _, ns := range namespaces {
		if sub, clash := tagOwner[hashTag(t, keys.Namespace(ns, "x"))]; clash {
			t.Errorf("Namespace(%s) shares its hash tag with subtree %s", ns, sub)
		}
	}
}

// TestSameSubtreeSameTag pins the rule the Lua scripts rely on: keys that
// share their first two segments share a hash tag, whatever follows.
func TestSameSubtreeSameTag(t *testing.T) {
	for _, tc := range []struct {
		name string
		keys []string
	}{
		{"task", []string{"tasks/T1", "tasks/T1/state", "tasks/T1/progress", "tasks/T1/agents/a1", "tasks/T1/agents/a1/x/y/z"}},
		{"worker", []string{"workers/w1/status", "workers/w1/heartbeat", "workers/w1/capacity"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := hashTag(t, keys.Redis("ns", tc.keys[0]))
			for _, k := range tc.keys[1:] {
				if got := hashTag(t, keys.Redis("ns", k)); got != want {
					t.Errorf("%q: got tag %q, want %q", k, got, want)
				}
			}
		})
	}
}

// FuzzRedisNames checks the naming properties for arbitrary valid keys and
// namespaces; `go test` runs the seeds.
func FuzzRedisNames(f *testing.F) {
	for _, s := range []struct{ ns, k1, k2, kind string }{
		{"task-sentinel", "tasks/T1/state", "tasks/T1/progress", "lock"},
		{"ns", "a", "a/b", "keys"},
		{"ns", "a/b", "a/b/c", ""},
		{"ns", "a/b/c", "a/bc", "x"},
		{"ns", "coordination/queue", "coordination/queue/keys", "keys"},
		{"a", "b/c", "a/b/c", "lock"},
	} {
		f.Add(s.ns, s.k1, s.k2, s.kind)
	}
	f.Fuzz(func(t *testing.T, ns, k1, k2, kind string) {
		if keys.ValidateNamespace(ns) != nil || keys.Validate(k1) != nil || keys.Validate(k2) != nil {
			t.Skip()
		}
		r1, r2 := keys.Redis(ns, k1), keys.Redis(ns, k2)
		if got, want := r1 == r2, k1 == k2; got != want {
			t.Fatalf("Redis(%q) = %q, Redis(%q) = %q", k1, r1, k2, r2)
		}
		for _, name := range []string{keys.Aux(ns, k2, kind), keys.SubtreeIndex(ns, k2), keys.Namespace(ns, kind)} {
			if r1 == name {
				t.Fatalf("data key Redis(%q, %q) = %q collides with %q", ns, k1, r1, name)
			}
		}
		t1, t2 := hashTag(t, r1), hashTag(t, r2)
		if got, want := t1 == t2, keys.Subtree(k1) == keys.Subtree(k2); got != want {
			t.Fatalf("%q tag %q, %q tag %q: same tag %v, same subtree %v", k1, t1, k2, t2, got, want)
		}
		if got := hashTag(t, keys.Aux(ns, k1, kind)); got != t1 {
			t.Fatalf("Aux(%q, %q) tag %q, data key's %q", k1, kind, got, t1)
		}
		if got := hashTag(t, keys.SubtreeIndex(ns, k1)); got != t1 {
			t.Fatalf("SubtreeIndex(%q) tag %q, data key's %q", k1, got, t1)
		}
	})
}
