package http

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/memsync/memsync/internal/clock"
	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/store"
)

// entryResponse is the body of a read or write: CONTRACT §3.
type entryResponse struct {
	Key         string          `json:"key"`
	Namespace   string          `json:"namespace"`
	Value       json.RawMessage `json:"value,omitempty"` // absent only when unresolved
	Version     clock.Vector    `json:"version"`
	ETag        string          `json:"etag"`
	Timestamp   int64           `json:"timestamp"`
	Writer      string          `json:"writer"`
	ExpiresAt   int64           `json:"expires_at,omitempty"`
	Strategy    store.Strategy  `json:"strategy"`
	Conflict    bool            `json:"conflict"`
	Siblings    int             `json:"siblings"`
	SiblingList []siblingJSON   `json:"sibling_list,omitempty"`
}

type siblingJSON struct {
	Value     json.RawMessage `json:"value"`
	Version   clock.Vector    `json:"version"`
	Timestamp int64           `json:"timestamp"`
	Writer    string          `json:"writer"`
	Discarded bool            `json:"discarded"`
}

// newEntryResponse renders e; the sibling list is included when asked for
// or when the client must resolve.
func newEntryResponse(e store.Entry, withSiblings bool) entryResponse {
	out := entryResponse{
		Key: e.Key, Namespace: e.Namespace, Value: e.Value, Version: e.Version,
		ETag: quoteETag(e.ETag), Timestamp: e.Timestamp, Writer: e.Writer, ExpiresAt: e.ExpiresAt,
		Strategy: e.Strategy, Conflict: e.Conflict(), Siblings: len(e.Siblings),
	}
	if withSiblings || !e.Resolved {
		out.SiblingList = make([]siblingJSON, len(e.Siblings))
		for i, sib := range e.Siblings {
			out.SiblingList[i] = siblingJSON{Value: sib.Value, Version: sib.Version,
				Timestamp: sib.Timestamp, Writer: sib.Writer, Discarded: e.Discarded[i]}
		}
	}
	return out
}

func writeEntry(w http.ResponseWriter, e store.Entry, withSiblings bool) {
	writeEntryJSON(w, newEntryResponse(e, withSiblings))
}

// keyFunc names the key a request addresses.
type keyFunc func(r *http.Request) (string, error)

// wildcardKey is the key of /v1/kv/{key...}. chi routes on the raw path, so
// a key sent percent-encoded (tasks%2FT1%2Fstate) arrives escaped.
func wildcardKey(r *http.Request) (string, error) {
	raw := chi.URLParam(r, "*")
	if strings.IndexByte(raw, '%') < 0 {
		return raw, nil // as PathUnescape would return it, found faster
	}
	key, err := url.PathUnescape(raw)
	if err != nil {
		return "", fmt.Errorf("%w: bad percent-encoding in %q", keys.ErrInvalidKey, raw)
	}
	return key, nil
}

// templateKey is the key of a typed endpoint: tmpl with each {param}
// replaced by the route's parameter, e.g. "tasks/{id}/state".
func templateKey(tmpl string) keyFunc {
	return func(r *http.Request) (string, error) {
		var b strings.Builder
		rest := tmpl
		for {
			open := strings.IndexByte(rest, '{')
			if open < 0 {
				b.WriteString(rest)
				return b.String(), nil
			}
			end := strings.IndexByte(rest, '}')
			b.WriteString(rest[:open])
			b.WriteString(chi.URLParam(r, rest[open+1:end]))
			rest = rest[end+1:]
		}
	}
}

// valueCheck validates a typed key's value before it is written.
type valueCheck func(json.RawMessage) error

func handleKVGet(log *slog.Logger, cfg Config, st Store, ws Watches, keyOf keyFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, key, err := target(r, cfg, keyOf)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		q := r.URL.RawQuery
		var opt store.GetOptions
		if v := queryValue(q, "resolve"); v != "" {
			if opt.Resolve, err = store.ParseStrategy(v); err != nil {
				writeError(w, r, log, fmt.Errorf("%w: resolve: %v", errInvalidArgument, err))
				return
			}
		}
		withSiblings, err := boolParam(queryValue(q, "siblings"), "siblings")
		if err == nil {
			opt.Consistent, err = boolParam(queryValue(q, "consistent"), "consistent") // bypasses the instance cache
		}
		var wait time.Duration
		if err == nil {
			wait, err = getWait(queryValue(q, "wait_ms"))
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if wait > 0 {
			serveWhenChanged(w, r, log, cfg, st, ws, ns, key, opt, withSiblings, wait)
			return
		}
		if withSiblings {
			e, err := st.Get(r.Context(), ns, key, opt)
			switch {
			case err != nil:
				writeError(w, r, log, err)
			case !notModified(w, r, quoteETag(e.ETag)):
				writeEntry(w, e, true)
			}
			return
		}
		// The cache keeps each entry's answer rendered (entryjson.go).
		re, e, err := getRendered(r.Context(), st, ns, key, opt)
		switch {
		case err != nil:
			writeError(w, r, log, err)
		case re != nil:
			if !notModified(w, r, re.etag[0]) {
				writeRendered(w, re)
			}
		case !notModified(w, r, quoteETag(e.ETag)):
			writeEntry(w, e, false)
		}
	}
}

func handleKVPut(log *slog.Logger, cfg Config, st Store, keyOf keyFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, key, err := target(r, cfg, keyOf)
		if err == nil {
			err = authorizeWrite(r, key)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		put, err := writePreconditions(r)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var req putBody
		if err := decodePut(r, cfg.MaxDepth, &req); err != nil {
			writeError(w, r, log, err)
			return
		}
		if req.Value == nil {
			writeError(w, r, log, fmt.Errorf("%w: the body needs a \"value\" (null is a value)", errInvalidArgument))
			return
		}
		if valid := checkForKey(key); valid != nil {
			if err := valid(req.Value); err != nil {
				writeError(w, r, log, err)
				return
			}
		}
		put.Value, put.ValueValid = req.Value, true // decodePut validated the body
		if req.Context != nil {
			put.Context = *req.Context
		}
		if req.TTL != nil {
			if *req.TTL < 0 || *req.TTL > maxTTLSeconds {
				writeError(w, r, log, fmt.Errorf("%w: ttl must be a whole number of seconds >= 0", errInvalidArgument))
				return
			}
			ttl := time.Duration(*req.TTL) * time.Second
			put.TTL = &ttl
		}
		async, err := boolParam(queryValue(r.URL.RawQuery, "async"), "async")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		bound, err := ephemeralWrite(r, cfg, ns, put)
		if err == nil && bound && async {
			err = fmt.Errorf("%w: an ephemeral write cannot be queued (async): it is bound once written", errInvalidArgument)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if async {
			enqueuePut(w, r, log, cfg.Queue, st, ns, key, put)
			return
		}
		res, err := st.Put(r.Context(), ns, key, put)
		if err == nil && bound {
			// A replay binds too: its first try may have failed to.
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

// maxTTLSeconds keeps a TTL's conversion to time.Duration from overflowing;
// the store applies the configured maximum.
const maxTTLSeconds = int64(100 * 365 * 24 * 3600)

func handleKVDelete(log *slog.Logger, cfg Config, st Store, keyOf keyFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, key, err := target(r, cfg, keyOf)
		if err == nil {
			err = authorizeWrite(r, key)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		ifMatch, err := parseIfMatch(r.Header.Get("If-Match"))
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		idem := r.Header.Get("Idempotency-Key")
		if idem != "" && !clock.ValidID(idem) {
			writeError(w, r, log, fmt.Errorf("%w: Idempotency-Key must be 1-128 characters of [A-Za-z0-9._:@-]", errInvalidArgument))
			return
		}
		res, err := st.Delete(r.Context(), ns, key, store.DeleteRequest{IfMatch: ifMatch, IdempotencyKey: idem})
		if res.Replayed {
			// A 404 too, when the delete found no key the first time.
			w.Header().Set("Idempotent-Replayed", "true")
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func handleKeys(log *slog.Logger, cfg Config, st Store) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ns, err := namespace(r, cfg)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		limit := store.DefaultListLimit
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > store.MaxListLimit {
				writeError(w, r, log, fmt.Errorf("%w: limit must be an integer from 1 to %d", errInvalidArgument, store.MaxListLimit))
				return
			}
			limit = n
		}
		want, err := entriesParams(q)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		ks, cursor, err := st.List(r.Context(), ns, q.Get("prefix"), q.Get("cursor"), limit)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if ks == nil {
			ks = []string{}
		}
		out := keyPage{Keys: ks, Cursor: cursor}
		if want.entries {
			if out, err = readEntries(r.Context(), st, ns, out, want); err != nil {
				writeError(w, r, log, err)
				return
			}
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// handleKeysDelete deletes every live key under ?prefix= (required): a
// finished task's keys in one call. A token must be allowed to write every
// key the prefix can cover (authorizeWriteUnder), or nothing is deleted.
func handleKeysDelete(log *slog.Logger, cfg Config, st Store) http.HandlerFunc {
	type response struct {
		Deleted int `json:"deleted"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		prefix := r.URL.Query().Get("prefix")
		switch {
		case err != nil:
		case prefix == "": // 400 for every token, before authorization says 403
			err = fmt.Errorf("%w: prefix is required: a namespace is not emptied by accident", errInvalidArgument)
		default:
			err = authorizeWriteUnder(r, prefix)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		n, err := st.DeletePrefix(r.Context(), ns, prefix)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, response{Deleted: n})
	}
}

// target returns the namespace and the validated key of a request.
func target(r *http.Request, cfg Config, keyOf keyFunc) (ns, key string, err error) {
	if ns, err = namespace(r, cfg); err != nil {
		return "", "", err
	}
	if key, err = keyOf(r); err != nil {
		return "", "", err
	}
	if err := keys.Validate(key); err != nil {
		return "", "", err
	}
	return ns, key, nil
}

// namespace returns the ?ns= of a request, or the configured default.
func namespace(r *http.Request, cfg Config) (string, error) {
	ns := queryValue(r.URL.RawQuery, "ns")
	if ns == "" {
		return cfg.Namespace, nil
	}
	return ns, validNamespace(ns)
}

func validNamespace(ns string) error { return keys.ValidateNamespace(ns) }

// queryValue returns the first value of the parameter name in the raw
// query, exactly as url.ParseQuery and Values.Get would, without building
// the map they build: the reads, the hottest requests, carry one parameter
// or none. Long queries, which ParseQuery may refuse whole, go through it.
func queryValue(raw, name string) string {
	if len(raw) > maxScannedQuery {
		v, _ := url.ParseQuery(raw)
		return v.Get(name)
	}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.Contains(pair, ";") {
			continue // ParseQuery skips both
		}
		k, v, _ := strings.Cut(pair, "=")
		if k != name && !strings.ContainsAny(k, "%+") {
			continue // cannot unescape to name
		}
		k, err := url.QueryUnescape(k)
		if err != nil || k != name {
			continue
		}
		if v, err = url.QueryUnescape(v); err == nil {
			return v
		}
	}
	return ""
}

// maxScannedQuery is the longest query queryValue scans itself.
const maxScannedQuery = 1024

// writePreconditions reads the writer, the conditional headers and the
// idempotency key of a write: X-Worker-Id, If-Match, If-None-Match,
// Idempotency-Key.
func writePreconditions(r *http.Request) (store.PutRequest, error) {
	var put store.PutRequest
	var err error
	if put.Writer, err = workerHeader(r); err != nil {
		return put, err
	}
	if put.IfMatch, err = parseIfMatch(r.Header.Get("If-Match")); err != nil {
		return put, err
	}
	switch inm := strings.TrimSpace(r.Header.Get("If-None-Match")); inm {
	case "":
	case "*":
		put.IfNoneMatch = true
	default:
		return put, fmt.Errorf("%w: If-None-Match on a write supports only \"*\" (create only)", errInvalidArgument)
	}
	if put.IfMatch != "" && put.IfNoneMatch {
		return put, fmt.Errorf("%w: If-Match and If-None-Match together can never both hold", errInvalidArgument)
	}
	put.IdempotencyKey = r.Header.Get("Idempotency-Key")
	if put.IdempotencyKey != "" && !clock.ValidID(put.IdempotencyKey) {
		return put, fmt.Errorf("%w: Idempotency-Key must be 1-128 characters of [A-Za-z0-9._:@-]", errInvalidArgument)
	}
	return put, nil
}

// workerHeader returns the X-Worker-Id of r ("" when absent). A worker id
// follows the rules of a key segment (workers/{id}/… are its keys), so
// "." and ".." are none, though a vector clock could hold them.
func workerHeader(r *http.Request) (string, error) {
	id := r.Header.Get("X-Worker-Id")
	if id != "" && !keys.ValidSegment(id) {
		return "", fmt.Errorf("%w: X-Worker-Id must be 1-128 characters of [A-Za-z0-9._:@-], and not . or ..", errInvalidArgument)
	}
	return id, nil
}

// parseIfMatch returns the etag of an If-Match header ("" when absent, "*"
// for any). One entity tag only; weak tags are refused, since a
// compare-and-set needs the exact state.
func parseIfMatch(h string) (string, error) {
	h = strings.TrimSpace(h)
	switch {
	case h == "" || h == "*":
		return h, nil
	case strings.HasPrefix(h, "W/"):
		return "", fmt.Errorf("%w: If-Match needs a strong entity tag", errInvalidArgument)
	case len(h) >= 2 && h[0] == '"' && h[len(h)-1] == '"' && !strings.ContainsAny(h[1:len(h)-1], `",`):
		return h[1 : len(h)-1], nil
	}
	return "", fmt.Errorf("%w: If-Match must be one quoted entity tag, as the ETag header gives it", errInvalidArgument)
}

func quoteETag(etag string) string { return `"` + etag + `"` }

// notModified answers a read 304 Not Modified, with no body, when its
// If-None-Match names etag (noneMatch), and reports whether it did: a
// worker polling a key learns that it has not changed without being sent
// it again.
func notModified(w http.ResponseWriter, r *http.Request, etag string) bool {
	if !noneMatch(r, etag) {
		return false
	}
	w.Header()["Etag"] = []string{etag}
	w.WriteHeader(http.StatusNotModified)
	return true
}

// noneMatch reports whether r's If-None-Match names etag (the key's ETag
// header, quoted) or is "*". As RFC 9110 asks of If-None-Match, the
// comparison is weak (a W/ prefix is ignored), and a list of tags matches
// when any of them does.
func noneMatch(r *http.Request, etag string) bool {
	for _, line := range r.Header["If-None-Match"] {
		for tag := range strings.SplitSeq(line, ",") {
			if tag = strings.TrimSpace(tag); tag == "*" || strings.TrimPrefix(tag, "W/") == etag {
				return true
			}
		}
	}
	return false
}

// boolParam parses an optional boolean query parameter.
func boolParam(v, name string) (bool, error) {
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%w: %s must be true or false", errInvalidArgument, name)
	}
	return b, nil
}
