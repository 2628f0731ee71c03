package http

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/memsync/memsync/internal/auth"
	"github.com/memsync/memsync/internal/quota"
)

// openPaths answer without a token: the probes, so that an orchestrator
// needs none, and the API's own description.
var openPaths = map[string]bool{"/healthz": true, "/readyz": true, "/openapi.yaml": true}

// authenticate admits a request with a known bearer token, within its
// token's rate, to what its role may use; and makes the token's worker id
// the request's X-Worker-Id, so that every handler sees the writer the
// token names. Without tokens (Config.Tokens nil) every request passes
// unchanged. Key-level rules (which keys a worker may write) are checked by
// the handlers that know the key: authorizeWrite.
func (s *Server) authenticate(next http.Handler) http.Handler {
	if s.cfg.Tokens == nil {
		return next
	}
	g := s.gate
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		p, err := s.principal(r)
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		if p.Expired(time.Now()) {
			writeError(w, r, s.log, fmt.Errorf("%w: the %s expired at %s", errUnauthorized, credential(p), p.Expires.UTC().Format(time.RFC3339)))
			return
		}
		if !g.allow(p.Token) {
			writeError(w, r, s.log, fmt.Errorf("%w: this token's requests exceed %g per second", errRateLimited, s.cfg.RateLimit))
			return
		}
		if err := permitted(p, r); err != nil {
			writeError(w, r, s.log, err)
			return
		}
		if id := r.Header.Get("X-Worker-Id"); id == "" {
			r.Header.Set("X-Worker-Id", p.WorkerID)
		} else if err := actingAs(p, id); err != nil {
			writeError(w, r, s.log, fmt.Errorf("X-Worker-Id: %w", err))
			return
		}
		r = r.WithContext(auth.NewContext(r.Context(), p))
		if r.URL.Path == "/v1/watch" || blocking(r) {
			release, ok := g.watch(p.Token)
			if !ok {
				writeError(w, r, s.log, fmt.Errorf("%w: this token already holds %d watch streams and blocking reads", errRateLimited, s.cfg.MaxWatchersPerToken))
				return
			}
			defer release()
		}
		next.ServeHTTP(w, r)
	})
}

// principal finds who r speaks for: its bearer token's entry, or, for a
// request without an Authorization header on a connection whose client
// certificate the server verified (mutual TLS), the entry of that
// certificate's subject common name or, failing that, of one of its URI
// names (cert:<name> in the token file).
func (s *Server) principal(r *http.Request) (auth.Principal, error) {
	if header := r.Header.Get("Authorization"); header != "" || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		token, ok := bearerToken(header)
		if !ok {
			return auth.Principal{}, fmt.Errorf("%w: send Authorization: Bearer <token>", errUnauthorized)
		}
		p, ok := s.cfg.Tokens.Lookup(token)
		if !ok {
			return auth.Principal{}, fmt.Errorf("%w: unknown token", errUnauthorized)
		}
		return p, nil
	}
	leaf := r.TLS.VerifiedChains[0][0]
	names := make([]string, 0, 1+len(leaf.URIs))
	names = append(names, leaf.Subject.CommonName)
	for _, u := range leaf.URIs {
		names = append(names, u.String())
	}
	p, ok := s.cfg.Tokens.LookupCert(names...)
	if !ok {
		return auth.Principal{}, fmt.Errorf("%w: the token file lists none of the client certificate's names %q as cert:<name>; or send Authorization: Bearer <token>", errUnauthorized, names)
	}
	return p, nil
}

// credential says what p was found by, for error messages.
func credential(p auth.Principal) string {
	if p.Cert != "" {
		return fmt.Sprintf("entry of certificate name %q", p.Cert)
	}
	return "token"
}

// permitted applies the role rules that the method and path decide: a
// reader only reads (a batch is let through for its reads; its writes are
// refused by authorizeWrite), and only an admin drops cache entries.
func permitted(p auth.Principal, r *http.Request) error {
	switch {
	case p.Role == auth.Reader && r.Method != http.MethodGet && r.Method != http.MethodHead &&
		!(r.Method == http.MethodPost && r.URL.Path == "/v1/batch"):
		return fmt.Errorf("%w: a reader token only reads", errForbidden)
	case p.Role != auth.Admin && r.URL.Path == "/v1/cache/invalidate":
		return fmt.Errorf("%w: only an admin token invalidates caches", errForbidden)
	}
	return nil
}

// authorizeWrite says whether the request's token may write key; nil
// without tokens.
func authorizeWrite(r *http.Request, key string) error {
	return authorize(r, auth.Principal.CanWrite, "write", key)
}

// authorizeWriteUnder says whether the request's token may write every
// key that starts with prefix (a prefix delete); nil without tokens.
func authorizeWriteUnder(r *http.Request, prefix string) error {
	return authorize(r, auth.Principal.CanWriteUnder, "delete under", prefix)
}

// authorize says whether the request's token may do what (a verb) to
// target, as may decides; nil without tokens.
func authorize(r *http.Request, may func(auth.Principal, string) bool, what, target string) error {
	p, ok := auth.FromContext(r.Context())
	if !ok || may(p, target) {
		return nil
	}
	if p.Role == auth.Reader {
		return fmt.Errorf("%w: a reader token only reads", errForbidden)
	}
	return fmt.Errorf("%w: worker %q may %s tasks/*, coordination/* and workers/%s/*, not %q", errForbidden, p.WorkerID, what, p.WorkerID, target)
}

// bearerToken returns the token of an Authorization header of the Bearer
// scheme (its name is case-insensitive, RFC 9110).
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	token = strings.TrimSpace(token)
	return token, ok && strings.EqualFold(scheme, "Bearer") && token != ""
}

// authorizeActingAs says whether the request's token may name worker as
// the one acting (a lock's owner); nil without tokens.
func authorizeActingAs(r *http.Request, worker string) error {
	if p, ok := auth.FromContext(r.Context()); ok {
		return actingAs(p, worker)
	}
	return nil
}

// actingAs says whether p may act as worker: its own worker id, or any
// with an admin token.
func actingAs(p auth.Principal, worker string) error {
	if p.Role != auth.Admin && worker != p.WorkerID {
		return fmt.Errorf("%w: %q is not this token's worker %q (only an admin token acts as another worker)", errForbidden, worker, p.WorkerID)
	}
	return nil
}

// requireAdmin refuses what only an admin token may do; nil without tokens.
func requireAdmin(r *http.Request, what string) error {
	if p, ok := auth.FromContext(r.Context()); ok && p.Role != auth.Admin {
		return fmt.Errorf("%w: only an admin token may %s", errForbidden, what)
	}
	return nil
}

// gate holds the per-token limits: a token bucket of requests and a count
// of open watch streams. Its maps grow with the tokens that were used: at
// most every token the file has held since the start. With a UsageSharer
// (share) the limits hold across instances: each bucket runs at this
// instance's share of the token's rate, and the other instances' watch
// streams count against the token's maximum.
type gate struct {
	limit       rate.Limit
	burst       int
	maxWatchers int

	mu       sync.Mutex
	buckets  map[[sha256.Size]byte]*bucket
	watchers map[[sha256.Size]byte]int
	others   map[string]quota.Usage // by usageID: the other instances', as last shared
	since    time.Time              // when the tries in the buckets began to count
}

// bucket is one token's rate limiter, and the requests it was asked to
// admit since the last report of this instance's usage.
type bucket struct {
	*rate.Limiter
	tried atomic.Int64
}

// minShare is the least share of a token's rate an instance keeps: one
// that had no requests of a token the others use still admits a few at
// once, and then, its tries reported, gets its share.
const minShare = 0.05

func newGate(perSecond float64, burst, maxWatchers int) *gate {
	if burst <= 0 {
		burst = max(1, int(2*perSecond))
	}
	return &gate{limit: rate.Limit(perSecond), burst: burst, maxWatchers: maxWatchers,
		buckets: map[[sha256.Size]byte]*bucket{}, watchers: map[[sha256.Size]byte]int{}, since: time.Now()}
}

// allow takes one request from token's bucket; always true without a rate.
func (g *gate) allow(token [sha256.Size]byte) bool {
	if g.limit <= 0 {
		return true
	}
	g.mu.Lock()
	b := g.buckets[token]
	if b == nil {
		b = &bucket{Limiter: rate.NewLimiter(g.limit, g.burst)}
		g.buckets[token] = b
	}
	g.mu.Unlock()
	b.tried.Add(1)
	return b.Allow()
}

// watch counts a watch stream (or a blocking read) of token, and returns
// its release; false when the token holds its maximum already, here and on
// the other instances.
func (g *gate) watch(token [sha256.Size]byte) (release func(), ok bool) {
	if g.maxWatchers <= 0 {
		return func() {}, true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.watchers[token]+g.others[usageID(token)].Watchers >= g.maxWatchers {
		return nil, false
	}
	g.watchers[token]++
	return func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.watchers[token]--; g.watchers[token] == 0 {
			delete(g.watchers, token)
		}
	}, true
}

// blocking reports whether r is a read that may wait (?wait_ms=, see
// serveWhenChanged): it holds a watcher as a watch stream does, and counts
// as one against the token's maximum.
func blocking(r *http.Request) bool {
	if r.Method != http.MethodGet || !strings.Contains(r.URL.RawQuery, "wait_ms=") {
		return false
	}
	wait, err := getWait(queryValue(r.URL.RawQuery, "wait_ms"))
	return err == nil && wait > 0
}

// UsageSharer records this instance's use of each token and returns the
// other instances' (quota.Table).
type UsageSharer interface {
	Share(ctx context.Context, mine map[string]quota.Usage) (others map[string]quota.Usage, err error)
}

// usageID names a token in the shared usage table: half its digest, in hex.
// Not the token: Redis never holds one.
func usageID(token [sha256.Size]byte) string { return hex.EncodeToString(token[:16]) }

// share reports this instance's use of every token since the last report,
// and sets each bucket to its share of the token's rate: in proportion to
// the requests it was asked to admit, against the other instances' (at
// least minShare). When sharing fails the limits stay as they were.
func (g *gate) share(ctx context.Context, s UsageSharer) error {
	g.mu.Lock()
	now := time.Now()
	elapsed := now.Sub(g.since).Seconds()
	g.since = now
	demand := make(map[[sha256.Size]byte]float64, len(g.buckets))
	mine := make(map[string]quota.Usage, len(g.buckets))
	for token, b := range g.buckets {
		if n := b.tried.Swap(0); n > 0 && elapsed > 0 {
			demand[token] = float64(n) / elapsed
			mine[usageID(token)] = quota.Usage{Rate: demand[token]}
		}
	}
	for token, n := range g.watchers {
		u := mine[usageID(token)]
		u.Watchers = n
		mine[usageID(token)] = u
	}
	g.mu.Unlock()

	others, err := s.Share(ctx, mine)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.others = others
	for token, b := range g.buckets {
		share := 1.0
		if o := others[usageID(token)].Rate; o > 0 {
			d := demand[token]
			share = max(d/(d+o), minShare)
		}
		b.SetLimit(g.limit * rate.Limit(share))
		b.SetBurst(max(1, int(math.Ceil(float64(g.burst)*share))))
	}
	return nil
}

// ShareLimits shares this instance's use of each token with the other
// instances every interval until ctx ends, so that a token's rate and watch
// streams are limited across instances (Config.Usage). Without tokens,
// limits or a Usage it returns at once. A failed round (Redis away) keeps
// the limits as they were and is logged at debug level.
func (s *Server) ShareLimits(ctx context.Context, every time.Duration) {
	g := s.gate
	if g == nil || s.cfg.Usage == nil || (g.limit <= 0 && g.maxWatchers <= 0) {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, every)
		if err := g.share(rctx, s.cfg.Usage); err != nil && ctx.Err() == nil {
			s.log.Debug("token usage not shared this round; limits unchanged", "err", err)
		}
		cancel()
	}
}

// errTokenWithdrawn ends a request that was waiting (a watch stream, a lock
// request) when its token is revoked, changed or expires meanwhile.
var errTokenWithdrawn = fmt.Errorf("%w: the token was revoked, changed or expired while the request waited", errUnauthorized)

// untilWithdrawn returns a context of ctx that ends, with errTokenWithdrawn
// as its cause (context.Cause), as soon as the token of the request that
// ctx belongs to no longer admits it: at the reload that removes or changes
// the token, or at its expiry. Without tokens it returns ctx. stop releases
// what watches the token; call it when the request ends.
func untilWithdrawn(ctx context.Context, tokens *auth.Tokens) (_ context.Context, stop func()) {
	p, ok := auth.FromContext(ctx)
	if !ok || tokens == nil {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		for {
			changed := tokens.Changed() // before the check: no reload slips in between
			now := time.Now()
			if !tokens.Admits(p, now) {
				cancel(errTokenWithdrawn)
				return
			}
			var expiry <-chan time.Time // nil: never
			if cur, _ := tokens.Current(p); !cur.Expires.IsZero() {
				expiry = time.After(cur.Expires.Sub(now))
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			case <-expiry:
			}
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

// waitContext is the context of a request that waits when waits is set (a
// lock, a permit, a claim, an arrival): untilWithdrawn's, so that a token
// withdrawn meanwhile ends the wait. Otherwise the request's own.
func waitContext(r *http.Request, cfg Config, waits bool) (context.Context, func()) {
	if !waits {
		return r.Context(), func() {}
	}
	return untilWithdrawn(r.Context(), cfg.Tokens)
}

// withdrawn is err, or errTokenWithdrawn when that is what ended ctx: the
// 401 its caller should hear rather than a cancelled wait's error.
func withdrawn(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, errTokenWithdrawn) {
		return cause
	}
	return err
}
