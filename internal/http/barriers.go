package http

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/memsync/memsync/internal/barrier"
)

// Barriers is what the barrier handlers need from the barrier service.
type Barriers interface {
	Arrive(ctx context.Context, ns, name string, req barrier.Request) (barrier.State, error)
	Get(ctx context.Context, ns, name string) (barrier.State, error)
	Reset(ctx context.Context, ns, name string) (int64, int, error)
	List(ctx context.Context, ns, prefix string) ([]barrier.State, error)
}

// barrierJSON is a barrier's state on the wire.
type barrierJSON struct {
	Barrier    string   `json:"barrier"`
	Generation int64    `json:"generation"`
	Parties    int      `json:"parties"`
	Tripped    bool     `json:"tripped"`
	Arrived    []string `json:"arrived"`
}

func newBarrierJSON(st barrier.State) barrierJSON {
	return barrierJSON{Barrier: st.Name, Generation: st.Generation, Parties: st.Parties, Tripped: st.Tripped, Arrived: st.Arrived}
}

// barrierTarget returns the namespace and the barrier's name (a key).
func barrierTarget(r *http.Request, cfg Config) (string, string, error) {
	if cfg.Barriers == nil {
		return "", "", errNotConfigured
	}
	return target(r, cfg, wildcardKey)
}

// handleArrive counts the caller in at a barrier and waits for it to trip.
func handleArrive(log *slog.Logger, cfg Config) http.HandlerFunc {
	type request struct {
		Parties int    `json:"parties"`
		WaitMs  int64  `json:"wait_ms"`
		TTLMs   int64  `json:"ttl_ms"`
		Party   string `json:"party"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := barrierTarget(r, cfg)
		var req request
		if err == nil {
			err = decode(r, cfg.MaxDepth, &req)
		}
		if err == nil && (req.WaitMs < 0 || req.TTLMs < 0) {
			err = fmt.Errorf("%w: wait_ms and ttl_ms must not be negative", errInvalidArgument)
		}
		var party, idem string
		if err == nil {
			party, idem, err = acquirer(r, req.Party)
		}
		if err == nil && party == "" {
			err = fmt.Errorf("%w: a barrier's party is a worker: send X-Worker-Id (or \"party\")", errInvalidArgument)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		// A token withdrawn while the request waits ends the wait: 401.
		ctx, stop := waitContext(r, cfg, req.WaitMs > 0)
		defer stop()
		st, err := cfg.Barriers.Arrive(ctx, ns, name, barrier.Request{Parties: req.Parties, Wait: millis(req.WaitMs),
			TTL: millis(req.TTLMs), Party: party, IdempotencyKey: idem})
		if err != nil {
			writeError(w, r, log, withdrawn(ctx, err))
			return
		}
		writeJSON(w, http.StatusOK, newBarrierJSON(st))
	}
}

func handleBarrier(log *slog.Logger, cfg Config) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := barrierTarget(r, cfg)
		var st barrier.State
		if err == nil {
			st, err = cfg.Barriers.Get(r.Context(), ns, name)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, newBarrierJSON(st))
	}
}

// handleBarriers lists the namespace's barriers under ?prefix=.
func handleBarriers(log *slog.Logger, cfg Config) http.HandlerFunc {
	type response struct {
		Barriers []barrierJSON `json:"barriers"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		if err == nil && cfg.Barriers == nil {
			err = errNotConfigured
		}
		var bs []barrier.State
		if err == nil {
			bs, err = cfg.Barriers.List(r.Context(), ns, r.URL.Query().Get("prefix"))
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		out := response{Barriers: make([]barrierJSON, len(bs))}
		for i, b := range bs {
			out.Barriers[i] = newBarrierJSON(b)
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// handleBarrierReset breaks a barrier's current generation: an admin's, as
// a forced lock release is.
func handleBarrierReset(log *slog.Logger, cfg Config) http.HandlerFunc {
	type response struct {
		Barrier string `json:"barrier"`
		Broken  int64  `json:"broken_generation"`
		Dropped int    `json:"dropped"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := barrierTarget(r, cfg)
		if err == nil {
			err = requireAdmin(r, "reset a barrier")
		}
		var out response
		if err == nil {
			out.Barrier = name
			out.Broken, out.Dropped, err = cfg.Barriers.Reset(r.Context(), ns, name)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}
