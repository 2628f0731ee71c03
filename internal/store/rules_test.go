package store_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/glob"
	"github.com/memsync/memsync/internal/store"
)

func mustRules(t *testing.T, extra []store.Rule) *store.Rules {
	t.Helper()
	r, err := store.NewRules(extra)
	if err != nil {
		t.Fatalf("NewRules: %v", err)
	}
	return r
}

func TestRulesDefaults(t *testing.T) {
	r := mustRules(t, nil)
	tests := []struct {
		key   string
		want  store.Strategy
		field string
	}{
		{"tasks/T1/state", store.LWW, ""},
		{"tasks/T1/progress", store.Max, "progress"},
		{"tasks/T1/agents/a1", store.Merge, ""},
		{"tasks/T1/agents", store.LWW, ""},
		{"tasks/T1/lock", store.LWW, ""},
		{"workers/w1/status", store.LWW, ""},
		{"workers/w1/heartbeat", store.LWW, ""},
		{"workers/w1/capacity", store.LWW, ""},
		{"coordination/queue", store.Merge, ""},
		{"coordination/assignments", store.Merge, ""},
		{"coordination/metrics", store.Merge, ""},
		{"coordination/other", store.LWW, ""},
		{"anything/else/at/all", store.LWW, ""},
		{"x", store.LWW, ""},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got := r.For(tt.key)
			if got.Strategy != tt.want || got.Field != tt.field {
				t.Errorf("For(%q) = %+v, want strategy %q field %q", tt.key, got, tt.want, tt.field)
			}
		})
	}
	if got := (*store.Rules)(nil).For("tasks/T1/progress"); got.Strategy != store.LWW {
		t.Errorf("nil Rules: For = %+v, want lww", got)
	}
	if d := store.DefaultRules(); d[len(d)-1] != (store.Rule{Pattern: "**", Strategy: store.LWW}) {
		t.Errorf("DefaultRules ends with %+v, want the ** catch-all", d[len(d)-1])
	}
}

func TestRulesExtraFirst(t *testing.T) {
	extra := make([]store.Rule, 2, 10) // spare capacity NewRules must not write into
	extra[0] = store.Rule{Pattern: "tasks/T9/**", Strategy: store.Siblings}
	extra[1] = store.Rule{Pattern: "scores/*", Strategy: store.Max, Field: "score"}
	r := mustRules(t, extra)
	tests := []struct {
		key  string
		want store.Rule
	}{
		{"tasks/T9/progress", extra[0]},
		{"tasks/T9", extra[0]},
		{"tasks/T1/progress", store.Rule{Pattern: "tasks/*/progress", Strategy: store.Max, Field: "progress"}},
		{"scores/alice", extra[1]},
		{"scores/alice/x", store.Rule{Pattern: "**", Strategy: store.LWW}},
	}
	for _, tt := range tests {
		if got := r.For(tt.key); got != tt.want {
			t.Errorf("For(%q) = %+v, want %+v", tt.key, got, tt.want)
		}
	}
	if spare := extra[:3][2]; spare != (store.Rule{}) {
		t.Errorf("NewRules wrote %+v into the caller's spare capacity", spare)
	}
}

func TestNewRulesInvalid(t *testing.T) {
	tests := []struct {
		name  string
		rule  store.Rule
		cause error
	}{
		{"bad pattern", store.Rule{Pattern: "a//b", Strategy: store.LWW}, glob.ErrInvalidPattern},
		{"empty pattern", store.Rule{Strategy: store.LWW}, glob.ErrInvalidPattern},
		{"unknown strategy", store.Rule{Pattern: "a", Strategy: "newest"}, store.ErrUnknownStrategy},
		{"no strategy", store.Rule{Pattern: "a"}, nil},
		{"field without max", store.Rule{Pattern: "a", Strategy: store.Merge, Field: "n"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			extra := []store.Rule{{Pattern: "ok/*", Strategy: store.Union}, tt.rule}
			_, err := store.NewRules(extra)
			if !errors.Is(err, store.ErrInvalidRules) {
				t.Fatalf("NewRules error = %v, want ErrInvalidRules", err)
			}
			if tt.cause != nil && !errors.Is(err, tt.cause) {
				t.Errorf("NewRules error = %v, want it to wrap %v", err, tt.cause)
			}
			if !strings.Contains(err.Error(), "rule 1") {
				t.Errorf("NewRules error = %v, want it to name rule 1", err)
			}
		})
	}
	// Max without a field is fine: it then compares plain numbers.
	mustRules(t, []store.Rule{{Pattern: "n/*", Strategy: store.Max}})
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadRules(t *testing.T) {
	want := []store.Rule{
		{Pattern: "lists/**", Strategy: store.Union},
		{Pattern: "scores/*", Strategy: store.Max, Field: "score"},
	}
	files := map[string]string{
		"rules.yaml": `# strategy rules
rules:
  - pattern: lists/**
    strategy: union
  - pattern: "scores/*"
    strategy: max
    field: score
`,
		"rules.json": `{"rules": [{"pattern": "lists/**", "strategy": "union"},
{"pattern": "scores/*", "strategy": "max", "field": "score"}]}`,
		// JSON indented with tabs, which YAML would refuse.
		"tabs.json": "{\n\t\"rules\": [\n\t\t{\"pattern\": \"lists/**\", \"strategy\": \"union\"},\n" +
			"\t\t{\"pattern\": \"scores/*\", \"strategy\": \"max\", \"field\": \"score\"}\n\t]\n}\n",
		// The file's name does not decide its format.
		"rules.conf": "rules: [{pattern: lists/**, strategy: union}, {pattern: scores/*, strategy: max, field: score}]",
	}
	for name, content := range files {
		t.Run(name, func(t *testing.T) {
			got, err := store.LoadRules(writeFile(t, name, content))
			if err != nil {
				t.Fatalf("LoadRules: %v", err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("LoadRules = %+v, want %+v", got, want)
			}
			r := mustRules(t, got)
			if got := r.For("lists/a/b").Strategy; got != store.Union {
				t.Errorf("For(lists/a/b) = %q, want union", got)
			}
		})
	}
	for _, content := range []string{"", "rules: []", `{"rules": null}`} {
		got, err := store.LoadRules(writeFile(t, "empty.yaml", content))
		if err != nil || len(got) != 0 {
			t.Errorf("LoadRules(%q) = %+v, %v; want no rules", content, got, err)
		}
	}
}

func TestLoadRulesInvalid(t *testing.T) {
	tests := []struct {
		name, file, content string
		cause               error
		mention             []string // what the error must say
	}{
		{"unknown strategy", "r.yaml", "rules:\n  - pattern: a/*\n    strategy: union\n  - pattern: b/*\n    strategy: newest\n",
			store.ErrUnknownStrategy, []string{"r.yaml", "rule 1", "newest"}},
		{"bad pattern", "r.json", `{"rules": [{"pattern": "a/**b", "strategy": "lww"}]}`,
			glob.ErrInvalidPattern, []string{"r.json", "rule 0"}},
		{"unknown field in a rule", "r.yaml", "rules:\n  - pattern: a\n    strategy: max\n    feild: score\n",
			nil, []string{"r.yaml", "rule 0", "feild"}},
		{"unknown top-level field", "r.json", `{"rules": [], "defaults": "lww"}`,
			nil, []string{"r.json", "defaults"}},
		{"field without max", "r.json", `{"rules": [{"pattern": "a", "strategy": "lww", "field": "x"}]}`,
			nil, []string{"rule 0", "field"}},
		{"repeated key", "r.yaml", "rules:\n  - pattern: a\n    pattern: b\n    strategy: lww\n",
			nil, []string{"r.yaml"}},
		{"not YAML", "r.yaml", "rules: [\n", nil, []string{"r.yaml"}},
		{"wrong shape", "r.json", `[{"pattern": "a", "strategy": "lww"}]`, nil, []string{"r.json"}},
		{"unquoted leading star", "r.yaml", "rules:\n  - pattern: **\n    strategy: lww\n", nil, []string{"r.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules, err := store.LoadRules(writeFile(t, tt.file, tt.content))
			if !errors.Is(err, store.ErrInvalidRules) {
				t.Fatalf("LoadRules = %+v, %v; want ErrInvalidRules", rules, err)
			}
			if tt.cause != nil && !errors.Is(err, tt.cause) {
				t.Errorf("error %v does not wrap %v", err, tt.cause)
			}
			for _, s := range tt.mention {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := store.LoadRules(filepath.Join(t.TempDir(), "nope.yaml"))
		if !errors.Is(err, store.ErrInvalidRules) || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("error = %v, want ErrInvalidRules and os.ErrNotExist", err)
		}
	})
}

func TestParseStrategy(t *testing.T) {
	for _, s := range []store.Strategy{store.LWW, store.Union, store.Merge, store.Max, store.Siblings} {
		if got, err := store.ParseStrategy(string(s)); got != s || err != nil {
			t.Errorf("ParseStrategy(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "LWW", "last-write-wins", " lww"} {
		if got, err := store.ParseStrategy(s); !errors.Is(err, store.ErrUnknownStrategy) {
			t.Errorf("ParseStrategy(%q) = %q, %v; want ErrUnknownStrategy", s, got, err)
		}
	}
}

func BenchmarkRulesFor(b *testing.B) {
	r, err := store.NewRules(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = r.For("coordination/metrics")
	}
}
