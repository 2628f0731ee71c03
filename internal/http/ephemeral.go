package http

import (
	"context"
	"fmt"
	"net/http"

	"github.com/memsync/memsync/internal/ephemeral"
	"github.com/memsync/memsync/internal/store"
)

// Binder binds keys written with ?ephemeral=true to their writer's
// heartbeat (package ephemeral).
type Binder interface {
	Alive(ctx context.Context, ns, worker string) (bool, error)
	Bind(ctx context.Context, ns, worker, key, etag string) error
}

// ephemeralWrite reads ?ephemeral= of a write and, when it is true, checks
// that the write can be bound before it is made: it names its writer
// (X-Worker-Id, or the token's worker), whose heartbeat is live. It returns
// whether the write is to be bound: then Binder.Bind is given the state the
// write left (and answers ephemeral.ErrNoHeartbeat, having deleted the key
// again, when the heartbeat ended meanwhile).
func ephemeralWrite(r *http.Request, cfg Config, ns string, put store.PutRequest) (bool, error) {
	bound, err := boolParam(queryValue(r.URL.RawQuery, "ephemeral"), "ephemeral")
	switch {
	case err != nil || !bound:
		return false, err
	case cfg.Ephemeral == nil:
		return false, fmt.Errorf("%w: this server does not bind keys to heartbeats (ephemeral)", errInvalidArgument)
	case put.Writer == "":
		return false, fmt.Errorf("%w: ephemeral=true binds the key to its writer's heartbeat: send X-Worker-Id", errInvalidArgument)
	}
	alive, err := cfg.Ephemeral.Alive(r.Context(), ns, put.Writer)
	if err == nil && !alive {
		err = fmt.Errorf("%w: no live %s; send a heartbeat first", ephemeral.ErrNoHeartbeat, ephemeral.HeartbeatKey(put.Writer))
	}
	return err == nil, err
}
