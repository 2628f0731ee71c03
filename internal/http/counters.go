package http

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/memsync/memsync/internal/counter"
)

// Counters is what the counter handlers need from the counter service.
type Counters interface {
	Add(ctx context.Context, ns, name string, req counter.AddRequest) (counter.Counter, bool, error)
	Set(ctx context.Context, ns, name string, value int64, ttl *time.Duration) (counter.Counter, error)
	Get(ctx context.Context, ns, name string) (counter.Counter, error)
	Delete(ctx context.Context, ns, name string) error
	List(ctx context.Context, ns, prefix string) ([]counter.Counter, error)
}

// counterJSON is a counter on the wire (expires_at in Unix ms, left out
// for a counter that never expires).
type counterJSON struct {
	Counter   string `json:"counter"`
	Value     int64  `json:"value"`
	ExpiresAt int64  `json:"expires_at,omitempty"`
}

func newCounterJSON(c counter.Counter) counterJSON {
	out := counterJSON{Counter: c.Name, Value: c.Value}
	if !c.ExpiresAt.IsZero() {
		out.ExpiresAt = c.ExpiresAt.UnixMilli()
	}
	return out
}

// counterTarget returns the namespace and the counter's name (a key), and
// checks that the request may write it when write is set.
func counterTarget(r *http.Request, cfg Config, write bool) (string, string, error) {
	if cfg.Counters == nil {
		return "", "", errNotConfigured
	}
	ns, name, err := target(r, cfg, wildcardKey)
	if err == nil && write {
		err = authorizeWrite(r, name)
	}
	return ns, name, err
}

// counterTTL converts a body's ttl in seconds (0: never expires).
func counterTTL(secs *int64) (*time.Duration, error) {
	if secs == nil {
		return nil, nil
	}
	if *secs < 0 || *secs > maxTTLSeconds {
		return nil, fmt.Errorf("%w: ttl must be 0 (never expires) or a positive number of seconds", errInvalidArgument)
	}
	d := time.Duration(*secs) * time.Second
	return &d, nil
}

// handleCounterAdd adds to a counter: by 1 without a body.
func handleCounterAdd(log *slog.Logger, cfg Config) http.HandlerFunc {
	type request struct {
		By  *int64 `json:"by"`
		TTL *int64 `json:"ttl"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := counterTarget(r, cfg, true)
		var req request
		if err == nil && r.ContentLength != 0 {
			err = decode(r, cfg.MaxDepth, &req)
		}
		add := counter.AddRequest{By: 1, IdempotencyKey: r.Header.Get("Idempotency-Key")}
		if req.By != nil {
			add.By = *req.By
		}
		if err == nil {
			add.TTL, err = counterTTL(req.TTL)
		}
		var c counter.Counter
		var replayed bool
		if err == nil {
			c, replayed, err = cfg.Counters.Add(r.Context(), ns, name, add)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		writeJSON(w, http.StatusOK, newCounterJSON(c))
	}
}

func handleCounterSet(log *slog.Logger, cfg Config) http.HandlerFunc {
	type request struct {
		Value *int64 `json:"value"`
		TTL   *int64 `json:"ttl"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := counterTarget(r, cfg, true)
		var req request
		if err == nil {
			err = decode(r, cfg.MaxDepth, &req)
		}
		if err == nil && req.Value == nil {
			err = fmt.Errorf("%w: the body needs a \"value\", an integer", errInvalidArgument)
		}
		var ttl *time.Duration
		if err == nil {
			ttl, err = counterTTL(req.TTL)
		}
		var c counter.Counter
		if err == nil {
			c, err = cfg.Counters.Set(r.Context(), ns, name, *req.Value, ttl)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, newCounterJSON(c))
	}
}

func handleCounterGet(log *slog.Logger, cfg Config) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := counterTarget(r, cfg, false)
		var c counter.Counter
		if err == nil {
			c, err = cfg.Counters.Get(r.Context(), ns, name)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, newCounterJSON(c))
	}
}

func handleCounterDelete(log *slog.Logger, cfg Config) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := counterTarget(r, cfg, true)
		if err == nil {
			err = cfg.Counters.Delete(r.Context(), ns, name)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// handleCounters lists a namespace's counters by prefix.
func handleCounters(log *slog.Logger, cfg Config) http.HandlerFunc {
	type response struct {
		Counters []counterJSON `json:"counters"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		if err == nil && cfg.Counters == nil {
			err = errNotConfigured
		}
		var cs []counter.Counter
		if err == nil {
			cs, err = cfg.Counters.List(r.Context(), ns, r.URL.Query().Get("prefix"))
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		out := response{Counters: make([]counterJSON, len(cs))}
		for i, c := range cs {
			out.Counters[i] = newCounterJSON(c)
		}
		writeJSON(w, http.StatusOK, out)
	}
}
