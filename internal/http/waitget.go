package http

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/memsync/memsync/internal/glob"
	"github.com/memsync/memsync/internal/store"
	"github.com/memsync/memsync/internal/watch"
)

// maxGetWait bounds ?wait_ms= on a read, as lock.DefaultMaxWait bounds a
// lock request's wait_ms.
const maxGetWait = 60 * time.Second

// getWait reads ?wait_ms=: how long a read may wait for its key to change
// (0: not at all).
func getWait(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 || ms > maxGetWait.Milliseconds() {
		return 0, fmt.Errorf("%w: wait_ms must be a whole number of milliseconds from 0 to %d", errInvalidArgument, maxGetWait.Milliseconds())
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// serveWhenChanged answers a read that may wait (?wait_ms=) for its key to
// change: a blocking query, for a worker that cannot hold a watch stream.
// It waits while the answer would be 304 (If-None-Match names the key's
// etag, or is "*" and the key exists) or, without If-None-Match, 404 (the
// key does not exist yet); then, or after wait, it answers as a read does
// at that moment. Every read it makes goes to Redis (consistent), and it
// hears of changes through a watcher of the key, opened before the first
// read, so that no change slips in between. A token withdrawn meanwhile
// ends the wait with 401, as it ends a waiting lock request.
func serveWhenChanged(w http.ResponseWriter, r *http.Request, log *slog.Logger, cfg Config, st Store, ws Watches,
	ns, key string, opt store.GetOptions, withSiblings bool, wait time.Duration) {
	if ws == nil {
		writeError(w, r, log, errNotConfigured)
		return
	}
	pattern, err := glob.Compile(key) // a key's characters are none of a glob's
	if err != nil {
		writeError(w, r, log, fmt.Errorf("%w: %v", store.ErrInvalidKey, err))
		return
	}
	ctx, stop := untilWithdrawn(r.Context(), cfg.Tokens)
	defer stop()
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	wt, err := ws.Watch(ctx, watch.Filter{Namespace: ns, Pattern: pattern}, 0)
	if err != nil {
		writeError(w, r, log, err)
		return
	}
	defer wt.Close()
	opt.Consistent = true
	_, conditional := r.Header["If-None-Match"]
	for {
		e, err := st.Get(ctx, ns, key, opt)
		unchanged := err == nil && conditional && noneMatch(r, quoteETag(e.ETag)) ||
			errors.Is(err, store.ErrNotFound) && !conditional
		if unchanged {
			// Any message (a change of the key, a reset) is worth a look;
			// the wait's end, the watcher's (shutdown) or the token's
			// ends the wait.
			if _, err = wt.Next(waitCtx); err == nil {
				continue
			}
			if cause := context.Cause(ctx); errors.Is(cause, errTokenWithdrawn) {
				writeError(w, r, log, cause)
				return
			}
			if r.Context().Err() != nil {
				return // the client went away
			}
			e, err = st.Get(ctx, ns, key, opt) // as it is now
		}
		switch {
		case err != nil && errors.Is(context.Cause(ctx), errTokenWithdrawn):
			// The token went while a read was in flight: that read
			// failed for it, and says 401 as the wait does, not 503.
			writeError(w, r, log, context.Cause(ctx))
		case err != nil:
			writeError(w, r, log, err)
		case !notModified(w, r, quoteETag(e.ETag)):
			writeEntry(w, e, withSiblings)
		}
		return
	}
}
