package auth_test

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/auth"
)

func TestParse(t *testing.T) {
	const good = `# token worker role
0123456789abcdef-admin   ops    admin

0123456789abcdef-worker  w1     worker
0123456789abcdef-reader  board  reader
0123456789abcdef-expiry  ci     reader  expires=2027-01-31T12:00:00+01:00
`
	tokens, err := auth.Parse(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if tokens.Len() != 4 {
		t.Errorf("Len = %d, want 4", tokens.Len())
	}
	expiring, _ := tokens.Lookup("0123456789abcdef-expiry")
	if want := time.Date(2027, 1, 31, 11, 0, 0, 0, time.UTC); !expiring.Expires.Equal(want) {
		t.Errorf("expiry %v, want %v", expiring.Expires, want)
	}
	for _, tt := range []struct {
		at      time.Time
		expired bool
	}{
		{expiring.Expires.Add(-time.Nanosecond), false}, {expiring.Expires, true}, {expiring.Expires.Add(time.Hour), true},
	} {
		if got := expiring.Expired(tt.at); got != tt.expired {
			t.Errorf("Expired(%v) = %v, want %v", tt.at, got, tt.expired)
		}
	}
	if admin, _ := tokens.Lookup("0123456789abcdef-admin"); admin.Expired(time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Error("a token without an expiry expired")
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
		{"five fields", "0123456789abcdef w1 worker expires=2027-01-01T00:00:00Z extra\n", "got 5 fields"},
		{"fourth field not an expiry", "0123456789abcdef w1 worker extra\n", `"extra" is not expires=`},
		{"expiry not RFC 3339", "0123456789abcdef w1 worker expires=2027-01-01\n", `"expires=2027-01-01" is not expires=`},
		{"short token", "short w1 worker\n", "at least 16"},
		{"bad worker id", "0123456789abcdef w/1 worker\n", "worker id"},
		{"dot-dot worker id", "0123456789abcdef .. worker\n", "worker id"},
		{"bad role", "0123456789abcdef w1 root\n", `role "root"`},
		{"duplicate", "0123456789abcdef w1 worker\n0123456789abcdef w2 reader\n", "line 2: the token is listed twice"},
		{"certificate without a name", "cert: w1 worker\n", `"cert:" names no certificate`},
		{"certificate listed twice", "cert:w1 w1 worker\ncert:w1 w2 reader\n", "line 2: the certificate name is listed twice"},
		{"certificate with a bad worker id", "cert:w1 w/1 worker\n", "worker id"},
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

func TestCertificateNames(t *testing.T) {
	tokens, err := auth.Parse(strings.NewReader(`
0123456789abcdef-admin          ops  admin
cert:w7                         w7   worker
cert:spiffe://example.org/ci    ci   reader  expires=2027-01-31T00:00:00Z
`))
	if err != nil {
		t.Fatal(err)
	}
	if tokens.Len() != 3 || tokens.Certs() != 2 {
		t.Errorf("Len, Certs = %d, %d; want 3, 2", tokens.Len(), tokens.Certs())
	}
	for _, tt := range []struct {
		names    []string
		id, cert string // id "" for none found
	}{
		{[]string{"w7"}, "w7", "w7"},
		{[]string{"w7", "spiffe://example.org/ci"}, "w7", "w7"},                           // the common name first
		{[]string{"someone", "spiffe://example.org/ci"}, "ci", "spiffe://example.org/ci"}, // then the URIs
		{[]string{"", "W7", "w7 ", "spiffe://example.org/c"}, "", ""},
		{[]string{"ops"}, "", ""},
		{[]string{"0123456789abcdef-admin"}, "", ""}, // a token is not a certificate name
		{nil, "", ""},
	} {
		p, ok := tokens.LookupCert(tt.names...)
		if ok != (tt.id != "") || p.WorkerID != tt.id || p.Cert != tt.cert {
			t.Errorf("LookupCert(%q) = %+v, %v; want worker %q, cert %q", tt.names, p, ok, tt.id, tt.cert)
		}
	}
	ci, _ := tokens.LookupCert("spiffe://example.org/ci")
	if ci.Role != auth.Reader || !ci.Expires.Equal(time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("ci = %+v, want a reader expiring 2027-01-31", ci)
	}
	// A certificate's entry is never a bearer token, so naming a
	// certificate in an Authorization header gets nothing; and a token's
	// principal does not carry the token.
	for _, token := range []string{"cert:w7", "cert:spiffe://example.org/ci"} {
		if p, ok := tokens.Lookup(token); ok {
			t.Errorf("Lookup(%q) = %+v, want none", token, p)
		}
	}
	if admin, ok := tokens.Lookup("0123456789abcdef-admin"); !ok || admin.Cert != "" {
		t.Errorf("Lookup(admin token) = %+v, %v; want found, with no Cert", admin, ok)
	}
	// Admits follows a certificate's entry through reloads as a token's.
	w7, _ := tokens.LookupCert("w7")
	if !tokens.Admits(w7, time.Now()) {
		t.Error("Admits(w7) = false before any reload")
	}
	file := t.TempDir() + "/tokens"
	if err := os.WriteFile(file, []byte("cert:w7 w7 reader\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tokens.Reload(file); err != nil {
		t.Fatal(err)
	}
	if tokens.Admits(w7, time.Now()) || tokens.Certs() != 1 {
		t.Errorf("after a reload making w7 a reader: Admits = %v, Certs = %d; want false, 1", tokens.Admits(w7, time.Now()), tokens.Certs())
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

// CanWriteUnder holds only for a prefix every key of which CanWrite
// allows: "workers/w1" is refused, as workers/w10/… start with it.
func TestCanWriteUnder(t *testing.T) {
	admin := auth.Principal{WorkerID: "ops", Role: auth.Admin}
	worker := auth.Principal{WorkerID: "w1", Role: auth.Worker}
	reader := auth.Principal{WorkerID: "board", Role: auth.Reader}
	for _, tt := range []struct {
		p      auth.Principal
		prefix string
		want   bool
	}{
		{admin, "a", true},
		{worker, "tasks/", true},
		{worker, "tasks/T1/", true},
		{worker, "coordination/q", true},
		{worker, "workers/w1/", true},
		{worker, "workers/w1", false},
		{worker, "workers/", false},
		{worker, "tasks", false},
		{worker, "t", false},
		{reader, "tasks/", false},
	} {
		if got := tt.p.CanWriteUnder(tt.prefix); got != tt.want {
			t.Errorf("%s %s CanWriteUnder(%q) = %v, want %v", tt.p.Role, tt.p.WorkerID, tt.prefix, got, tt.want)
		}
		if tt.want {
			for _, rest := range []string{"", "x", "x/y", "/x"} {
				if key := tt.prefix + rest; !tt.p.CanWrite(key) {
					t.Errorf("%s may write under %q but not %q", tt.p.WorkerID, tt.prefix, key)
				}
			}
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

// Admits holds while the token stays as it was looked up, and Changed
// tells of every reload that replaced the tokens, not of a failed one.
func TestAdmitsAndChanged(t *testing.T) {
	const token = "0123456789abcdef-tok"
	now := time.Now()
	later := now.Add(time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		name, file string
		admits     bool
	}{
		{"unchanged", token + " w1 worker\n", true},
		{"given an expiry ahead", token + " w1 worker expires=" + later + "\n", true},
		{"expired", token + " w1 worker expires=" + now.Add(-time.Second).UTC().Format(time.RFC3339) + "\n", false},
		{"removed", "0123456789abcdef-other w1 worker\n", false},
		{"another role", token + " w1 reader\n", false},
		{"another worker", token + " w2 worker\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := t.TempDir() + "/tokens"
			if err := os.WriteFile(path, []byte(token+" w1 worker\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			tokens, err := auth.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			p, _ := tokens.Lookup(token)
			changed := tokens.Changed()
			if err := os.WriteFile(path, []byte("0123456789abcdef-bad w1 root\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if tokens.Reload(path) == nil {
				t.Fatal("a bad file reloaded")
			}
			select {
			case <-changed:
				t.Fatal("Changed closed by a failed reload")
			default:
			}
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := tokens.Reload(path); err != nil {
				t.Fatal(err)
			}
			select {
			case <-changed:
			default:
				t.Error("Changed not closed by a reload")
			}
			if got := tokens.Admits(p, now); got != tt.admits {
				t.Errorf("Admits = %v, want %v", got, tt.admits)
			}
		})
	}
}
