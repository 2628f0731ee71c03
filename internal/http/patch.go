package http

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"mime"
	"net/http"
	"strconv"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"

	"github.com/memsync/memsync/internal/store"
)

// jsonPatchType is the media type of a JSON Patch (RFC 6902). A PATCH body
// of any other type, application/merge-patch+json (RFC 7386) above all, is
// taken as a merge patch, as a PUT's body is taken as JSON whatever curl -d
// says it is.
const jsonPatchType = "application/json-patch+json"

// patchAttempts is how many read-patch-write cycles a PATCH without
// If-Match tries before it gives up on a key that keeps changing under it
// (412), as the client's Update does.
const patchAttempts = 10

// handleKVPatch changes part of a key's value: the body is a JSON merge
// patch (RFC 7386) or, with Content-Type application/json-patch+json, a
// JSON Patch (RFC 6902), applied to the value the key resolves to. The
// write is a compare-and-set on what was read, with its version as
// context, so it supersedes every sibling it saw and nothing it did not;
// when the key changed in between, the patch is applied again to the new
// value. A worker sets one field of a task's state without a read and a
// CAS of its own, and without clobbering the fields others set.
func handleKVPatch(log *slog.Logger, cfg Config, st Store, keyOf keyFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, key, err := target(r, cfg, keyOf)
		if err == nil {
			err = authorizeWrite(r, key)
		}
		var put store.PutRequest
		if err == nil {
			put, err = writePreconditions(r)
		}
		var ttl *time.Duration
		if err == nil {
			err = refusePatchOptions(r, put)
		}
		if err == nil {
			ttl, err = patchTTL(queryValue(r.URL.RawQuery, "ttl"))
		}
		var apply func(doc []byte) ([]byte, error)
		var body []byte
		if err == nil {
			apply, body, err = readPatch(r, cfg.MaxDepth)
		}
		if err == nil && put.IdempotencyKey != "" {
			put.IdempotencySubject = patchSubject(r, body)
		}
		var bound bool
		if err == nil {
			bound, err = ephemeralWrite(r, cfg, ns, put)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		p := patcher{cfg: cfg, st: st, ns: ns, key: key, put: put, ttl: ttl, apply: apply}
		res, err := p.run(r.Context())
		if err == nil && bound {
			err = cfg.Ephemeral.Bind(r.Context(), ns, put.Writer, key, res.ETag)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if res.Replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		writeEntry(w, res.Entry, false)
	}
}

// refusePatchOptions refuses what a PUT takes and a PATCH cannot honour.
func refusePatchOptions(r *http.Request, put store.PutRequest) error {
	async, err := boolParam(queryValue(r.URL.RawQuery, "async"), "async")
	switch {
	case err != nil:
		return err
	case async:
		return fmt.Errorf("%w: PATCH cannot be queued (async): it reads the key first", errInvalidArgument)
	case put.IfNoneMatch:
		return fmt.Errorf("%w: If-None-Match does not apply to PATCH: a patch of a missing key creates it; PUT with If-None-Match: * creates only", errInvalidArgument)
	}
	return nil
}

// patchTTL parses ?ttl= (whole seconds, 0 for no expiry); nil when absent,
// which keeps the key's expiry.
func patchTTL(v string) (*time.Duration, error) {
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxTTLSeconds {
		return nil, fmt.Errorf("%w: ttl must be a whole number of seconds >= 0", errInvalidArgument)
	}
	d := time.Duration(n) * time.Second
	return &d, nil
}

// readPatch reads the body and returns the function that applies it to a
// value; the body must be JSON within the depth limit, and a JSON Patch a
// list of operations.
func readPatch(r *http.Request, maxDepth int) (func(doc []byte) ([]byte, error), []byte, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case len(bytes.TrimSpace(body)) == 0:
		return nil, nil, fmt.Errorf("%w: the body is empty: send a merge patch, or a JSON Patch", errInvalidJSON)
	case !json.Valid(body):
		return nil, nil, fmt.Errorf("%w: the body is not valid JSON", errInvalidJSON)
	case depth(body) > maxDepth:
		return nil, nil, fmt.Errorf("%w: nesting deeper than %d", errInvalidJSON, maxDepth)
	}
	if !isJSONPatch(r) {
		return func(doc []byte) ([]byte, error) {
			if !bytes.HasPrefix(doc, []byte("{")) {
				doc = []byte("{}") // RFC 7386: a patch of a non-object patches {}
			}
			return jsonpatch.MergePatch(doc, body)
		}, body, nil
	}
	if !bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")) {
		return nil, nil, fmt.Errorf("%w: a JSON Patch is a list of operations", errInvalidJSON)
	}
	ops, err := jsonpatch.DecodePatch(body) // checks each op and its members
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errInvalidArgument, err)
	}
	return ops.Apply, body, nil
}

func isJSONPatch(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == jsonPatchType
}

// patchSubject names a PATCH for its Idempotency-Key
// (store.PutRequest.IdempotencySubject): what it asks, which its retries
// ask again, where the value and version it writes depend on what each
// try reads. The writer is the store's to add.
func patchSubject(r *http.Request, body []byte) string {
	h := sha256.New()
	for _, part := range []string{strconv.FormatBool(isJSONPatch(r)), string(body),
		queryValue(r.URL.RawQuery, "ttl"), r.Header.Get("If-Match")} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// patcher is one PATCH in progress.
type patcher struct {
	cfg     Config
	st      Store
	ns, key string
	put     store.PutRequest // writer and If-Match of the request
	ttl     *time.Duration   // nil: keep the key's expiry
	apply   func(doc []byte) ([]byte, error)
}

// run reads, patches and writes until the write lands or fails for a
// reason other than the key changing since it was read, the request's
// If-Match fails, or patchAttempts writes found the key changed.
func (p patcher) run(ctx context.Context) (store.PutResult, error) {
	if p.put.IdempotencyKey != "" {
		// A PATCH sent again whose first try was applied: its own write may
		// have made its If-Match or a "test" false, so ask the store first.
		if res, err := p.replay(ctx); err == nil || !errors.Is(err, store.ErrPreconditionFailed) {
			return res, err
		}
	}
	// An If-Match naming an etag fails for good once the key moved on;
	// "*" asks only that the key exist.
	retry := p.put.IfMatch == "" || p.put.IfMatch == "*"
	for attempt := 1; ; attempt++ {
		res, err := p.once(ctx)
		if !retry || !errors.Is(err, errChanged) {
			return res, err
		}
		if attempt == patchAttempts {
			return res, fmt.Errorf("%w: the key changed under each of %d attempts to patch it", store.ErrPreconditionFailed, patchAttempts)
		}
		// Someone else wrote in between: let them finish before reading again.
		t := time.NewTimer(time.Duration(rand.Int64N(int64(attempt) * int64(time.Millisecond))))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, ctx.Err()
		case <-t.C:
		}
	}
}

// errChanged marks the 412 of a write whose key changed (or was created or
// deleted) after the patch read it: the patch may be applied again.
var errChanged = errors.New("the key changed since it was read")

// replay answers a PATCH under an Idempotency-Key that the key remembers
// (Replayed), through a write conditional on an etag no key has: the store
// checks what it remembers first, and otherwise refuses the write with
// ErrPreconditionFailed, writing nothing.
func (p patcher) replay(ctx context.Context) (store.PutResult, error) {
	return p.st.Put(ctx, p.ns, p.key, store.PutRequest{Value: json.RawMessage("null"), ValueValid: true,
		Writer: p.put.Writer, IfMatch: noETag, IdempotencyKey: p.put.IdempotencyKey, IdempotencySubject: p.put.IdempotencySubject})
}

// noETag is an etag that no key has (the store's are hex digits).
const noETag = "-"

// once reads the key, applies the patch and writes the result as a
// compare-and-set on what it read.
func (p patcher) once(ctx context.Context) (store.PutResult, error) {
	cur, err := p.st.Get(ctx, p.ns, p.key, store.GetOptions{Consistent: true})
	absent := errors.Is(err, store.ErrNotFound)
	switch {
	case absent && p.put.IfMatch != "":
		return store.PutResult{}, fmt.Errorf("%w: If-Match: the key does not exist", store.ErrPreconditionFailed)
	case err != nil && !absent:
		return store.PutResult{}, err
	case !absent && p.put.IfMatch != "" && p.put.IfMatch != "*" && p.put.IfMatch != cur.ETag:
		return store.PutResult{}, fmt.Errorf("%w: If-Match: the key's etag is not %q", store.ErrPreconditionFailed, p.put.IfMatch)
	case !absent && !cur.Resolved:
		return store.PutResult{}, fmt.Errorf("%w: the key holds %d siblings its strategy leaves to the client: PUT their resolution first", errInvalidArgument, len(cur.Siblings))
	}
	doc := []byte("{}") // a patch of a missing key creates it
	if !absent {
		doc = cur.Value
	}
	value, err := p.apply(doc)
	switch {
	case errors.Is(err, jsonpatch.ErrTestFailed):
		return store.PutResult{}, fmt.Errorf("%w: %v", store.ErrPreconditionFailed, err)
	case err != nil:
		return store.PutResult{}, fmt.Errorf("%w: the patch does not apply to the value: %v", errInvalidArgument, err)
	case int64(len(value)) > p.cfg.MaxBodyBytes:
		return store.PutResult{}, fmt.Errorf("%w: the patched value would be %d bytes; the limit is %d", errBodyTooLarge, len(value), p.cfg.MaxBodyBytes)
	case depth(value) > p.cfg.MaxDepth:
		return store.PutResult{}, fmt.Errorf("%w: the patched value would nest deeper than %d", errInvalidArgument, p.cfg.MaxDepth)
	}
	if valid := checkForKey(p.key); valid != nil {
		if err := valid(value); err != nil {
			return store.PutResult{}, err
		}
	}
	w := store.PutRequest{Value: value, Writer: p.put.Writer, TTL: p.ttl,
		IdempotencyKey: p.put.IdempotencyKey, IdempotencySubject: p.put.IdempotencySubject}
	if absent {
		w.IfNoneMatch = true
	} else {
		w.IfMatch, w.Context = cur.ETag, cur.Version
		if w.TTL == nil {
			w.TTL = keptTTL(cur.ExpiresAt)
		}
	}
	res, err := p.st.Put(ctx, p.ns, p.key, w)
	if errors.Is(err, store.ErrPreconditionFailed) {
		err = fmt.Errorf("%w: %w", errChanged, err)
	}
	return res, err
}

// keptTTL is the TTL that keeps an expiry (Unix ms, 0 for none) where it
// is: at least a millisecond, since 0 would mean none. The store rounds the
// expiry of a TTL of a minute or more up to a whole second, as such keys'
// expiries are; aiming half a second early lands it on the same second
// though the write reaches the store some milliseconds after this. A key
// that expires before the write lands fails its If-Match, and the next
// attempt creates it.
func keptTTL(expiresAt int64) *time.Duration {
	var d time.Duration
	if expiresAt > 0 {
		d = time.Until(time.UnixMilli(expiresAt)).Round(time.Millisecond)
		if d >= time.Minute+roundingMargin { // still a minute or more: rounded
			d -= roundingMargin
		}
		d = max(d, time.Millisecond)
	}
	return &d
}

// roundingMargin is how early keptTTL aims a whole-second expiry.
const roundingMargin = 500 * time.Millisecond
