package http

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/store"
)

// DefaultHeartbeatTTL is how long a worker stays active after a heartbeat
// that names no TTL: the seed's 30 s.
const DefaultHeartbeatTTL = 30 * time.Second

// handleHeartbeat records that a worker is alive: the key
// workers/{id}/heartbeat, written by the worker itself, expiring after the
// heartbeat TTL. When it expires the sweeper announces an expire event.
func handleHeartbeat(log *slog.Logger, cfg Config, st Store) http.HandlerFunc {
	type request struct {
		TTL *int64 `json:"ttl"`
	}
	type response struct {
		Worker    string `json:"worker"`
		ExpiresAt int64  `json:"expires_at"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		id := chi.URLParam(r, "id")
		if !keys.ValidSegment(id) {
			writeError(w, r, log, fmt.Errorf("%w: worker id %q", keys.ErrInvalidKey, id))
			return
		}
		if err := authorizeWrite(r, "workers/"+id+"/heartbeat"); err != nil {
			writeError(w, r, log, err)
			return
		}
		ttl := cfg.HeartbeatTTL
		var req request
		if r.ContentLength != 0 {
			if err := decode(r, cfg.MaxDepth, &req); err != nil {
				writeError(w, r, log, err)
				return
			}
		}
		if req.TTL != nil {
			if *req.TTL < 1 || *req.TTL > maxTTLSeconds {
				writeError(w, r, log, fmt.Errorf("%w: a heartbeat ttl must be at least 1 second: a worker cannot be alive forever", errInvalidArgument))
				return
			}
			ttl = time.Duration(*req.TTL) * time.Second
		}
		now := time.Now().UnixMilli()
		res, err := st.Put(r.Context(), ns, "workers/"+id+"/heartbeat", store.PutRequest{
			Value:  json.RawMessage(fmt.Sprintf(`{"at":%d}`, now)),
			TTL:    &ttl,
			Writer: id,
		})
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, response{Worker: id, ExpiresAt: res.ExpiresAt})
	}
}

// handleWorkers lists the active workers: those whose heartbeat lives. It
// reads the index of workers/ and then each worker's three keys in one
// round trip, never the keyspace.
func handleWorkers(log *slog.Logger, cfg Config, st Store) http.HandlerFunc {
	type worker struct {
		ID            string          `json:"id"`
		Status        json.RawMessage `json:"status,omitempty"`
		Capacity      json.RawMessage `json:"capacity,omitempty"`
		LastHeartbeat int64           `json:"last_heartbeat"`
		ExpiresAt     int64           `json:"expires_at"`
	}
	type response struct {
		Workers []worker `json:"workers"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		all, err := listAll(r, st, ns, "workers/")
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var ids, ks []string
		for _, k := range all {
			if id, ok := strings.CutSuffix(strings.TrimPrefix(k, "workers/"), "/heartbeat"); ok && keys.ValidSegment(id) {
				ids = append(ids, id)
				ks = append(ks, k, "workers/"+id+"/status", "workers/"+id+"/capacity")
			}
		}
		entries, err := st.GetMany(r.Context(), ns, ks, store.GetOptions{})
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		out := response{Workers: []worker{}}
		for i, id := range ids {
			hb, status, capacity := entries[3*i], entries[3*i+1], entries[3*i+2]
			if hb.Key == "" {
				continue // expired between the listing and the read
			}
			out.Workers = append(out.Workers, worker{ID: id, Status: status.Value, Capacity: capacity.Value,
				LastHeartbeat: hb.Timestamp, ExpiresAt: hb.ExpiresAt})
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// listAll pages through every key under prefix.
func listAll(r *http.Request, st Store, ns, prefix string) ([]string, error) {
	var all []string
	cursor := ""
	for {
		page, next, err := st.List(r.Context(), ns, prefix, cursor, store.MaxListLimit)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		cursor = next
	}
}

// handleTaskAgents lists the agents of a task with their coordination data.
func handleTaskAgents(log *slog.Logger, cfg Config, st Store) http.HandlerFunc {
	type agent struct {
		ID    string        `json:"id"`
		Entry entryResponse `json:"entry"`
	}
	type response struct {
		Agents []agent `json:"agents"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		id := chi.URLParam(r, "id")
		if !keys.ValidSegment(id) {
			writeError(w, r, log, fmt.Errorf("%w: task id %q", keys.ErrInvalidKey, id))
			return
		}
		prefix := "tasks/" + id + "/agents/"
		all, err := listAll(r, st, ns, prefix)
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		var ks []string
		for _, k := range all {
			if !strings.Contains(strings.TrimPrefix(k, prefix), "/") {
				ks = append(ks, k)
			}
		}
		entries, err := st.GetMany(r.Context(), ns, ks, store.GetOptions{})
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		out := response{Agents: []agent{}}
		for i, e := range entries {
			if e.Key != "" {
				out.Agents = append(out.Agents, agent{ID: strings.TrimPrefix(ks[i], prefix), Entry: newEntryResponse(e, false)})
			}
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// checkForKey returns the value check of a typed key, whichever route
// writes it: tasks/{id}/progress must hold a progress value on /v1/kv too.
func checkForKey(key string) valueCheck {
	// tasks/{id}/progress, without splitting the key: every write asks.
	rest, ok := strings.CutPrefix(key, "tasks/")
	if id, ok2 := strings.CutSuffix(rest, "/progress"); ok && ok2 && !strings.Contains(id, "/") {
		return checkProgress
	}
	return nil
}

// checkProgress accepts the seed's progress value: an object whose
// "progress" is a number from 0 to 100 (the max strategy compares it), with
// an optional string "status".
func checkProgress(v json.RawMessage) error {
	var p struct {
		Progress *float64 `json:"progress"`
		Status   *string  `json:"status"`
	}
	if err := json.Unmarshal(v, &p); err != nil || p.Progress == nil || *p.Progress < 0 || *p.Progress > 100 {
		return fmt.Errorf(`%w: progress must be {"progress": 0..100, "status": "..."}`, errInvalidArgument)
	}
	return nil
}
