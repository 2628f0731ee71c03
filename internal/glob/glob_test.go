package glob_test

import (
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/memsync/memsync/internal/glob"
)

func mustCompile(tb testing.TB, pattern string) *glob.Pattern {
	tb.Helper()
	p, err := glob.Compile(pattern)
	if err != nil {
		tb.Fatalf("Compile(%q): %v", pattern, err)
	}
	return p
}

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		noMatch []string
	}{
		{"**", []string{"", "a", "tasks/T1/state", "a/b/c/d/e/f/g/h"}, nil},
		{"**/**", []string{"", "a", "a/b"}, nil},
		{"*", []string{"a", "tasks"}, []string{"", "a/b"}},
		{"tasks", []string{"tasks"}, []string{"", "task", "tasks/T1", "Tasks"}},
		{"tasks/*/state",
			[]string{"tasks/T1/state", "tasks/x.y:z@1/state"},
			[]string{"tasks/state", "tasks/T1/x/state", "tasks/T1/State", "tasks/T1/state/x", "workers/T1/state"}},
		// "**" may stand for no segment: the subtree's root matches.
		{"tasks/**",
			[]string{"tasks", "tasks/T1", "tasks/T1/state", "tasks/T1/agents/a1"},
			[]string{"task", "tasksx", "workers/tasks", ""}},
		{"**/state",
			[]string{"state", "tasks/T1/state", "a/b/c/state"},
			[]string{"tasks/T1/states", "state/x"}},
		{"tasks/**/a1",
			[]string{"tasks/a1", "tasks/T1/a1", "tasks/T1/agents/a1"},
			[]string{"tasks/T1/a2", "a1", "tasks/T1/a1/x"}},
		{"**/a/**/a/**/b",
			[]string{"a/a/b", "x/a/y/a/z/b", "a/a/a/a/b"},
			[]string{"a/b", "a/a", "a/a/b/c"}},
		{"task-*", []string{"task-", "task-1", "task-abc-def"}, []string{"task", "tas-1", "task-1/x", "xtask-1"}},
		{"*-x", []string{"-x", "a-x", "a-x-x"}, []string{"a-xy", "x"}},
		{"a*b*c", []string{"abc", "aXbYc", "abbc", "abcbc"}, []string{"ab", "acb", "aXbY", "abcd"}},
		// Overlapping prefix and suffix must not share characters.
		{"ab*ba", []string{"abba", "abxba"}, []string{"aba", "ab"}},
		{"tasks/T*/agents/*",
			[]string{"tasks/T1/agents/a1", "tasks/T/agents/x"},
			[]string{"tasks/X1/agents/a1", "tasks/T1/agents", "tasks/T1/agents/a1/x"}},
		// Non-ASCII and characters outside the key alphabet are literals.
		{"héllo/?/[x]", []string{"héllo/?/[x]"}, []string{"hello/?/[x]", "héllo/a/[x]"}},
		{"*é", []string{"é", "caféé", "café"}, []string{"cafe"}},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			p := mustCompile(t, tt.pattern)
			for _, key := range tt.match {
				if !p.Match(key) {
					t.Errorf("%q should match %q", tt.pattern, key)
				}
			}
			for _, key := range tt.noMatch {
				if p.Match(key) {
					t.Errorf("%q should not match %q", tt.pattern, key)
				}
			}
		})
	}
}

func TestCompileInvalid(t *testing.T) {
	for _, pattern := range []string{"", "/", "a/", "/a", "a//b", "a**", "**a", "a/**b/c", "***", "x/***"} {
		t.Run(pattern, func(t *testing.T) {
			p, err := glob.Compile(pattern)
			if !errors.Is(err, glob.ErrInvalidPattern) {
				t.Fatalf("Compile(%q) = %v, %v; want ErrInvalidPattern", pattern, p, err)
			}
		})
	}
}

func TestLiteralAndString(t *testing.T) {
	tests := []struct{ pattern, literal string }{
		{"**", ""},
		{"*", ""},
		{"tasks", "tasks"},
		{"tasks/T1/*", "tasks/T1"},
		{"tasks/T1/state", "tasks/T1/state"},
		{"tasks/**", "tasks"},
		{"tasks/*/state", "tasks"},
		{"task-*/x", ""},
		{"a/b/**/**/c", "a/b"},
	}
	for _, tt := range tests {
		t.Run(tt.pattern, func(t *testing.T) {
			p := mustCompile(t, tt.pattern)
			if got := p.Literal(); got != tt.literal {
				t.Errorf("Literal() = %q, want %q", got, tt.literal)
			}
			if got := p.String(); got != tt.pattern {
				t.Errorf("String() = %q, want %q", got, tt.pattern)
			}
		})
	}
}

// reference translates pattern into a regular expression over "/"+key, each
// segment carrying its leading '/': "**" is then simply "any number of
// /segment". The empty key has no segments, so it is matched as "".
func reference(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for s := range strings.SplitSeq(pattern, "/") {
		if s == "**" {
			b.WriteString("(?:/[^/]*)*")
			continue
		}
		b.WriteString("/")
		parts := strings.Split(s, "*")
		for i, part := range parts {
			if i > 0 {
				b.WriteString("[^/]*")
			}
			b.WriteString(regexp.QuoteMeta(part))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func referenceMatch(pattern, key string) bool {
	if key != "" {
		key = "/" + key
	}
	return reference(pattern).MatchString(key)
}

// spell maps arbitrary bytes onto a small alphabet, so that random inputs
// are dense in interesting patterns (stars, separators, repeats).
func spell(data []byte, alphabet string) string {
	b := make([]byte, len(data))
	for i, c := range data {
		b[i] = alphabet[int(c)%len(alphabet)]
	}
	return string(b)
}

func checkAgainstReference(t *testing.T, pattern, key string) {
	t.Helper()
	p, err := glob.Compile(pattern)
	if err != nil {
		return // the reference has no notion of validity
	}
	if got, want := p.Match(key), referenceMatch(pattern, key); got != want {
		t.Fatalf("Compile(%q).Match(%q) = %v, reference says %v", pattern, key, got, want)
	}
}

func TestMatchAgainstReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	word := func(alphabet string, max int) string {
		b := make([]byte, r.IntN(max+1))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 20000 {
		checkAgainstReference(t, word("ab*/", 12), word("ab/", 12))
	}
}

func FuzzMatch(f *testing.F) {
	seeds := [][2]string{
		{"**", "a/b"},
		{"tasks/*/state", "tasks/T1/state"},
		{"tasks/**", "tasks"},
		{"a*b*c/**/x", "abc/x"},
		{"**/a/**/b", "a/a/a/b"},
	}
	for _, s := range seeds {
		f.Add([]byte(s[0]), []byte(s[1]), true)
		f.Add([]byte(s[0]), []byte(s[1]), false)
	}
	f.Fuzz(func(t *testing.T, pattern, key []byte, raw bool) {
		if raw {
			if !utf8.Valid(pattern) || !utf8.Valid(key) {
				return // regexp, the reference, works on runes
			}
			checkAgainstReference(t, string(pattern), string(key))
			return
		}
		checkAgainstReference(t, spell(pattern, "ab*/"), spell(key, "ab/"))
	})
}

func BenchmarkMatch(b *testing.B) {
	benchmarks := []struct{ name, pattern, key string }{
		{"literal", "coordination/queue", "coordination/queue"},
		{"one", "tasks/*/state", "tasks/task-0042/state"},
		{"one-miss", "tasks/*/state", "tasks/task-0042/progress"},
		{"deep", "tasks/**", "tasks/task-0042/agents/agent-7"},
		{"wild", "tasks/task-*/agents/agent-*", "tasks/task-0042/agents/agent-7"},
		{"deep-middle", "**/agents/**/x", "tasks/task-0042/agents/agent-7/a/b/c"},
		// Many "**" against a long near-miss: exponential for backtracking.
		{"adversarial", strings.Repeat("**/a/", 16) + "b", strings.Repeat("a/", 64) + "c"},
	}
	for _, bm := range benchmarks {
		b.Run(bm.name, func(b *testing.B) {
			p := mustCompile(b, bm.pattern)
			want := referenceMatch(bm.pattern, bm.key)
			b.ReportAllocs()
			for b.Loop() {
				if p.Match(bm.key) != want {
					b.Fatal("wrong answer")
				}
			}
		})
	}
}
