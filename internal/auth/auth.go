// Package auth holds memsync's bearer tokens and what each may do
// (CONTRACT §10). A token file has a line per token:
//
//	# token                            worker-id   role     [expiry]
//	3f9c0d7e2b6a41c8a5e1f0b2c4d6e8fa   w1          worker
//	7b1d9e3a5c0f2e4d6a8c1b3e5f7a9d0c   ci          reader   expires=2027-01-31T00:00:00Z
//
// A token with an expiry (RFC 3339) is refused from that instant on.
//
// A line whose first field is "cert:<name>" names a client certificate
// instead of a token: a request without a bearer token, on a connection
// whose client certificate the server verified (mutual TLS), speaks for
// that line's worker and role when the certificate's subject common name,
// or one of its URI names, is <name>:
//
//	cert:w7                            w7          worker
//	cert:spiffe://example.org/ci       ci          reader
//
// Roles: admin may do everything; worker reads everything and writes
// tasks/*, coordination/* and its own workers/{id}/* keys, and takes
// locks; reader reads (GET, watch, stats). The token's worker id is the
// writer id of every write made with it.
package auth

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/memsync/memsync/internal/keys"
)

// Role is what a token may do.
type Role string

// The roles of CONTRACT §10.
const (
	Admin  Role = "admin"
	Worker Role = "worker"
	Reader Role = "reader"
)

// MinTokenLength is the shortest token a file may hold: a bearer token is
// a password, and a short one can be guessed.
const MinTokenLength = 16

// CertPrefix starts a token file's first field that names a client
// certificate rather than a token. No bearer token starts with it, so
// that no one can send a certificate's name as a token.
const CertPrefix = "cert:"

// Principal is who a request's token speaks for.
type Principal struct {
	// Token identifies the token (a digest, never the token itself): rate
	// and watcher limits count per token.
	Token    [sha256.Size]byte
	WorkerID string
	Role     Role
	// Expires is when the token stops working; zero for never.
	Expires time.Time
	// Cert is the client certificate name the principal was found by, ""
	// for a bearer token.
	Cert string
}

// Expired reports whether p's token has expired at now.
func (p Principal) Expired(now time.Time) bool {
	return !p.Expires.IsZero() && !now.Before(p.Expires)
}

// CanWrite reports whether p may write (put or delete) key.
func (p Principal) CanWrite(key string) bool {
	switch p.Role {
	case Admin:
		return true
	case Worker:
		first, rest, _ := strings.Cut(key, "/")
		switch first {
		case "tasks", "coordination":
			return true
		case "workers":
			id, _, _ := strings.Cut(rest, "/")
			return id == p.WorkerID
		}
	}
	return false
}

// CanWriteUnder reports whether p may write every key that starts with
// prefix: an admin any; a worker only under a prefix that settles what
// CanWrite looks at ("tasks/…", "coordination/…", "workers/<its id>/…"),
// not "task" or "workers/", whose keys may include others'.
func (p Principal) CanWriteUnder(prefix string) bool {
	switch p.Role {
	case Admin:
		return true
	case Worker:
		for _, area := range []string{"tasks/", "coordination/", "workers/" + p.WorkerID + "/"} {
			if strings.HasPrefix(prefix, area) {
				return true
			}
		}
	}
	return false
}

// Tokens is a set of tokens, safe for concurrent use; Reload replaces the
// whole set at once.
type Tokens struct {
	byDigest atomic.Pointer[map[[sha256.Size]byte]Principal]

	certs atomic.Int32 // how many entries name certificates

	mu      sync.Mutex
	changed chan struct{} // closed at the next Reload; nil until asked for
}

// ErrBadTokenFile is the error of a token file that cannot be used.
var ErrBadTokenFile = errors.New("bad token file")

// Load reads a token file (see the package comment).
func Load(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTokenFile, err)
	}
	defer f.Close()
	t, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return t, nil
}

// Parse reads tokens, a line each as "token worker-id role", optionally
// followed by "expires=<RFC 3339 time>", where token may be cert:<name>
// (see the package comment); blank lines and lines starting with # are
// skipped. Every problem is an error: a token
// file that half loads would lock some workers out without a word.
func Parse(r io.Reader) (*Tokens, error) {
	set := map[[sha256.Size]byte]Principal{}
	var certs int32
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 3 && len(f) != 4 {
			return nil, fmt.Errorf("%w: line %d: want \"token worker-id role [expires=<time>]\", got %d fields", ErrBadTokenFile, n, len(f))
		}
		token, id, role := f[0], f[1], Role(f[2])
		var expires time.Time
		if len(f) == 4 {
			at, ok := strings.CutPrefix(f[3], "expires=")
			var err error
			if expires, err = time.Parse(time.RFC3339, at); !ok || err != nil {
				return nil, fmt.Errorf("%w: line %d: %q is not expires=<RFC 3339 time>, like expires=2027-01-31T00:00:00Z", ErrBadTokenFile, n, f[3])
			}
		}
		cert, isCert := strings.CutPrefix(token, CertPrefix)
		switch {
		case isCert && cert == "":
			return nil, fmt.Errorf("%w: line %d: %q names no certificate: write cert:<common name or URI>", ErrBadTokenFile, n, token)
		case !isCert && len(token) < MinTokenLength:
			return nil, fmt.Errorf("%w: line %d: a token must be at least %d characters", ErrBadTokenFile, n, MinTokenLength)
		case !keys.ValidSegment(id): // workers/{id}/… are its keys
			return nil, fmt.Errorf("%w: line %d: worker id %q must be 1-128 characters of [A-Za-z0-9._:@-], and not . or ..", ErrBadTokenFile, n, id)
		case role != Admin && role != Worker && role != Reader:
			return nil, fmt.Errorf("%w: line %d: role %q is not admin, worker or reader", ErrBadTokenFile, n, role)
		}
		d := sha256.Sum256([]byte(token))
		if _, dup := set[d]; dup {
			if isCert {
				return nil, fmt.Errorf("%w: line %d: the certificate name is listed twice", ErrBadTokenFile, n)
			}
			return nil, fmt.Errorf("%w: line %d: the token is listed twice", ErrBadTokenFile, n)
		}
		if isCert {
			certs++
		} else {
			cert = "" // CutPrefix gave the token back: never keep it
		}
		set[d] = Principal{Token: d, WorkerID: id, Role: role, Expires: expires, Cert: cert}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTokenFile, err)
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("%w: no tokens", ErrBadTokenFile)
	}
	t := &Tokens{}
	t.byDigest.Store(&set)
	t.certs.Store(certs)
	return t, nil
}

// Reload replaces the tokens with those of the file at path, all at once;
// when the file cannot be used it returns the error and keeps the tokens
// as they were.
func (t *Tokens) Reload(path string) error {
	n, err := Load(path)
	if err != nil {
		return err
	}
	t.byDigest.Store(n.byDigest.Load())
	t.certs.Store(n.certs.Load())
	t.mu.Lock()
	if t.changed != nil {
		close(t.changed)
		t.changed = nil
	}
	t.mu.Unlock()
	return nil
}

// Changed returns a channel that is closed by the next Reload that
// replaces the tokens. Ask for it before looking a token up, so that no
// reload goes unnoticed in between.
func (t *Tokens) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.changed == nil {
		t.changed = make(chan struct{})
	}
	return t.changed
}

// Len is the number of tokens, certificate names included.
func (t *Tokens) Len() int { return len(*t.byDigest.Load()) }

// Certs is the number of entries that name client certificates.
func (t *Tokens) Certs() int { return int(t.certs.Load()) }

// Lookup returns the principal of a bearer token. The token is compared by
// its SHA-256 digest, so the time a lookup takes says nothing about how
// much of a wrong token was right. A certificate's entry is never found
// this way.
func (t *Tokens) Lookup(token string) (Principal, bool) {
	if strings.HasPrefix(token, CertPrefix) {
		return Principal{}, false
	}
	p, ok := (*t.byDigest.Load())[sha256.Sum256([]byte(token))]
	return p, ok
}

// LookupCert returns the principal of the first of a verified client
// certificate's names (its subject common name, then its URI names) that
// the file lists as cert:<name>.
func (t *Tokens) LookupCert(names ...string) (Principal, bool) {
	if t.certs.Load() == 0 {
		return Principal{}, false
	}
	set := *t.byDigest.Load()
	for _, name := range names {
		if name == "" {
			continue
		}
		if p, ok := set[sha256.Sum256([]byte(CertPrefix+name))]; ok {
			return p, true
		}
	}
	return Principal{}, false
}

// Current returns the principal that p's token names now, after any
// reloads since p was looked up, and false when the token is gone.
func (t *Tokens) Current(p Principal) (Principal, bool) {
	cur, ok := (*t.byDigest.Load())[p.Token]
	return cur, ok
}

// Admits reports whether p's token is still in the set, naming the same
// worker with the same role, and has not expired at now: for requests that
// outlive their admission (watch streams, waiting lock requests).
func (t *Tokens) Admits(p Principal, now time.Time) bool {
	cur, ok := t.Current(p)
	return ok && cur.WorkerID == p.WorkerID && cur.Role == p.Role && !cur.Expired(now)
}

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal of a request, and false when the
// server runs without tokens.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}
