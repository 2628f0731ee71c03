package auth_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/auth"
)

func TestParse(t *testing.T) {
	const good = `# token worker role
0123456789abcdef-admin   ops    admin

0123456789abcdef-worker  w1     worker
0123456789abcdef-reader  board  reader
`
	tokens, err := auth.Parse(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if tokens.Len() != 3 {
		t.Errorf("Len = %d, want 3", tokens.Len())
	}
	for _, tt := range []struct {
		token, id string
		role      auth.Role
	}{
		{"0123456789abcdef-admin", "ops", auth.Admin},
		{"0123456789abcdef-worker", "w1", auth.Worker},
		{"0123456789abcdef-reader", "board", auth.Reader},
	} {
		p, ok := tokens.Lookup(tt.token)
		if !ok || p.WorkerID != tt.id || p.Role != tt.role {
			t.Errorf("Lookup(%q) = %+v, %v; want %s %s", tt.token, p, ok, tt.id, tt.role)
		}
	}
	for _, wrong := range []string{"", "0123456789abcdef-admi", "0123456789abcdef-admin ", "0123456789ABCDEF-admin"} {
		if p, ok := tokens.Lookup(wrong); ok {
			t.Errorf("Lookup(%q) = %+v, want none", wrong, p)
		}
	}

	for _, tt := range []struct{ name, file, want string }{
		{"empty", "# nothing\n\n", "no tokens"},
		{"two fields", "0123456789abcdef w1\n", "got 2 fields"},
		{"four fields", "0123456789abcdef w1 worker extra\n", "got 4 fields"},
		{"short token", "short w1 worker\n", "at least 16"},
		{"bad worker id", "0123456789abcdef w/1 worker\n", "worker id"},
		{"bad role", "0123456789abcdef w1 root\n", `role "root"`},
		{"duplicate", "0123456789abcdef w1 worker\n0123456789abcdef w2 reader\n", "line 2: the token is listed twice"},
	} {
		_, err := auth.Parse(strings.NewReader(tt.file))
		if !errors.Is(err, auth.ErrBadTokenFile) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Parse = %v, want ErrBadTokenFile saying %q", tt.name, err, tt.want)
		}
	}
	if _, err := auth.Load(t.TempDir() + "/missing"); !errors.Is(err, auth.ErrBadTokenFile) {
		t.Errorf("Load(missing) = %v", err)
	}
}

func TestCanWrite(t *testing.T) {
	admin := auth.Principal{WorkerID: "ops", Role: auth.Admin}
	worker := auth.Principal{WorkerID: "w1", Role: auth.Worker}
	reader := auth.Principal{WorkerID: "board", Role: auth.Reader}
	for _, tt := range []struct {
		p    auth.Principal
		key  string
		want bool
	}{
		{admin, "anything/at/all", true},
		{admin, "workers/w2/status", true},
		{worker, "tasks/T1/state", true},
		{worker, "coordination/queue", true},
		{worker, "workers/w1/status", true},
		{worker, "workers/w1", true},
		{worker, "workers/w2/status", false},
		{worker, "workers/w10/status", false},
		{worker, "agents/a1/state", false},
		{worker, "tasksX/T1", false},
		{reader, "tasks/T1/state", false},
		{reader, "workers/board/status", false},
	} {
		if got := tt.p.CanWrite(tt.key); got != tt.want {
			t.Errorf("%s %s CanWrite(%q) = %v, want %v", tt.p.Role, tt.p.WorkerID, tt.key, got, tt.want)
		}
	}
}

// Reload swaps the whole set, or nothing when the new file is bad.
func TestReload(t *testing.T) {
	path := t.TempDir() + "/tokens"
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("0123456789abcdef-old w1 worker\n")
	tokens, err := auth.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	write("0123456789abcdef-new w1 admin\n0123456789abcdef-two w2 reader\n")
	if err := tokens.Reload(path); err != nil {
		t.Fatal(err)
	}
	if _, ok := tokens.Lookup("0123456789abcdef-old"); ok {
		t.Error("the old token still works after a reload without it")
	}
	if p, ok := tokens.Lookup("0123456789abcdef-new"); !ok || p.Role != auth.Admin || tokens.Len() != 2 {
		t.Errorf("after the reload: new token %+v %v, %d tokens", p, ok, tokens.Len())
	}
	write("0123456789abcdef-bad w1 root\n")
	if err := tokens.Reload(path); !errors.Is(err, auth.ErrBadTokenFile) {
		t.Errorf("Reload of a bad file = %v", err)
	}
	if _, ok := tokens.Lookup("0123456789abcdef-new"); !ok || tokens.Len() != 2 {
		t.Error("a bad file changed the tokens")
	}
}
