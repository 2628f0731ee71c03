package http

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/memsync/memsync/internal/queue"
)

// Queues is what the queue handlers need from the queue service.
type Queues interface {
	Enqueue(ctx context.Context, ns, name string, req queue.EnqueueRequest) (queue.Message, bool, error)
	Claim(ctx context.Context, ns, name string, req queue.ClaimRequest) ([]queue.Message, error)
	Ack(ctx context.Context, ns, name, id, receipt string) error
	Release(ctx context.Context, ns, name, id, receipt string, delay time.Duration) error
	Extend(ctx context.Context, ns, name, id, receipt string, visibility time.Duration) (time.Time, error)
	Stats(ctx context.Context, ns, name string) (queue.Stats, error)
	Purge(ctx context.Context, ns, name string) (int, error)
	Queues(ctx context.Context, ns, prefix string) ([]queue.QueueInfo, error)
	Dead(ctx context.Context, ns, name, after string, limit int) ([]queue.Message, int, error)
	Redrive(ctx context.Context, ns, name string, ids []string, limit int) (int, int, error)
	DropDead(ctx context.Context, ns, name, id string) error
}

// messageJSON is a message on the wire (times in Unix ms).
type messageJSON struct {
	ID         string          `json:"id"`
	Value      json.RawMessage `json:"value,omitempty"`
	Attempts   int             `json:"attempts"`
	EnqueuedAt int64           `json:"enqueued_at"`
	VisibleAt  int64           `json:"visible_at"`
	Receipt    string          `json:"receipt,omitempty"`
	// MaxAttempts is left out when unbounded.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// DeadAt and Owner are a dead letter's.
	DeadAt int64  `json:"dead_at,omitempty"`
	Owner  string `json:"owner,omitempty"`
	// ExpiresAt is left out for a message that lives until acked.
	ExpiresAt int64 `json:"expires_at,omitempty"`
}

func newMessageJSON(m queue.Message) messageJSON {
	out := messageJSON{ID: m.ID, Value: m.Value, Attempts: m.Attempts, EnqueuedAt: m.EnqueuedAt.UnixMilli(),
		VisibleAt: m.VisibleAt.UnixMilli(), Receipt: m.Receipt, MaxAttempts: m.MaxAttempts}
	if !m.DeadAt.IsZero() {
		out.DeadAt, out.Owner = m.DeadAt.UnixMilli(), m.Owner
	}
	if !m.ExpiresAt.IsZero() {
		out.ExpiresAt = m.ExpiresAt.UnixMilli()
	}
	return out
}

// queueStats is a queue's counts on the wire.
type queueStats struct {
	Queue    string `json:"queue"`
	Visible  int    `json:"visible"`
	Delayed  int    `json:"delayed"`
	InFlight int    `json:"in_flight"`
	Dead     int    `json:"dead"`
}

func newQueueStats(name string, s queue.Stats) queueStats {
	return queueStats{Queue: name, Visible: s.Visible, Delayed: s.Delayed, InFlight: s.InFlight, Dead: s.Dead}
}

// queueTarget returns the namespace and the queue's name; the queue
// service checks the name.
func queueTarget(r *http.Request, cfg Config) (string, string, error) {
	if cfg.Queues == nil {
		return "", "", errNotConfigured
	}
	ns, err := namespace(r, cfg)
	return ns, chi.URLParam(r, "queue"), err
}

// millis converts a request's millisecond count; the queue service applies
// its bounds, so a count too large for a Duration is kept too large.
func millis(ms int64) time.Duration { return time.Duration(min(ms, maxMillis)) * time.Millisecond }

func handleEnqueue(log *slog.Logger, cfg Config) http.HandlerFunc {
	type request struct {
		Value       json.RawMessage `json:"value"`
		DelayMs     int64           `json:"delay_ms"`
		MaxAttempts int             `json:"max_attempts"`
		TTLMs       int64           `json:"ttl_ms"`
		MaxLength   int             `json:"max_length"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := queueTarget(r, cfg)
		var req request
		if err == nil {
			err = decode(r, cfg.MaxDepth, &req)
		}
		if err == nil && (req.Value == nil || req.DelayMs < 0 || req.TTLMs < 0) {
			err = fmt.Errorf("%w: the body needs a \"value\" (null is a value); delay_ms and ttl_ms must not be negative", errInvalidArgument)
		}
		var m queue.Message
		var replayed bool
		if err == nil {
			m, replayed, err = cfg.Queues.Enqueue(r.Context(), ns, name, queue.EnqueueRequest{Value: req.Value,
				Delay: millis(req.DelayMs), MaxAttempts: req.MaxAttempts, TTL: millis(req.TTLMs), MaxLength: req.MaxLength,
				IdempotencyKey: r.Header.Get("Idempotency-Key")})
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		if replayed {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		m.Value = nil // the sender has it
		writeJSON(w, http.StatusCreated, newMessageJSON(m))
	}
}

func handleClaim(log *slog.Logger, cfg Config) http.HandlerFunc {
	type request struct {
		VisibilityMs *int64 `json:"visibility_ms"`
		WaitMs       int64  `json:"wait_ms"`
		Max          int    `json:"max"`
	}
	type response struct {
		Messages []messageJSON `json:"messages"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := queueTarget(r, cfg)
		var req request
		if err == nil {
			err = decode(r, cfg.MaxDepth, &req)
		}
		if err == nil && (req.VisibilityMs == nil || *req.VisibilityMs <= 0 || req.WaitMs < 0 || req.Max < 0) {
			err = fmt.Errorf("%w: a positive visibility_ms is required; wait_ms and max must not be negative", errInvalidArgument)
		}
		var owner string
		if err == nil {
			owner, err = workerHeader(r)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		// A token withdrawn while the request waits ends the wait: 401.
		ctx, stop := waitContext(r, cfg, req.WaitMs > 0)
		defer stop()
		msgs, err := cfg.Queues.Claim(ctx, ns, name, queue.ClaimRequest{
			Visibility: millis(*req.VisibilityMs), Wait: millis(req.WaitMs), Max: req.Max, Owner: owner})
		if err != nil {
			writeError(w, r, log, withdrawn(ctx, err))
			return
		}
		out := response{Messages: make([]messageJSON, len(msgs))}
		for i, m := range msgs {
			out.Messages[i] = newMessageJSON(m)
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// handleAck deletes a message its X-Receipt holds.
func handleAck(log *slog.Logger, cfg Config) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := queueTarget(r, cfg)
		receipt := r.Header.Get("X-Receipt")
		if err == nil && receipt == "" {
			err = fmt.Errorf("%w: the X-Receipt header (the claim's receipt) is required", errInvalidArgument)
		}
		if err == nil {
			err = cfg.Queues.Ack(r.Context(), ns, name, chi.URLParam(r, "id"), receipt)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func handleQueueRelease(log *slog.Logger, cfg Config) http.HandlerFunc {
	type request struct {
		Receipt string `json:"receipt"`
		DelayMs int64  `json:"delay_ms"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := queueTarget(r, cfg)
		var req request
		if err == nil {
			err = decode(r, cfg.MaxDepth, &req)
		}
		if err == nil && (req.Receipt == "" || req.DelayMs < 0) {
			err = fmt.Errorf("%w: receipt is required; delay_ms must not be negative", errInvalidArgument)
		}
		if err == nil {
			err = cfg.Queues.Release(r.Context(), ns, name, chi.URLParam(r, "id"), req.Receipt, millis(req.DelayMs))
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func handleExtend(log *slog.Logger, cfg Config) http.HandlerFunc {
	type request struct {
		Receipt      string `json:"receipt"`
		VisibilityMs *int64 `json:"visibility_ms"`
	}
	type response struct {
		ID        string `json:"id"`
		VisibleAt int64  `json:"visible_at"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := queueTarget(r, cfg)
		var req request
		if err == nil {
			err = decode(r, cfg.MaxDepth, &req)
		}
		if err == nil && (req.Receipt == "" || req.VisibilityMs == nil || *req.VisibilityMs <= 0) {
			err = fmt.Errorf("%w: receipt and a positive visibility_ms are required", errInvalidArgument)
		}
		var until time.Time
		id := chi.URLParam(r, "id")
		if err == nil {
			until, err = cfg.Queues.Extend(r.Context(), ns, name, id, req.Receipt, millis(*req.VisibilityMs))
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, response{ID: id, VisibleAt: until.UnixMilli()})
	}
}

func handleQueueStats(log *slog.Logger, cfg Config) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := queueTarget(r, cfg)
		var s queue.Stats
		if err == nil {
			s, err = cfg.Queues.Stats(r.Context(), ns, name)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, newQueueStats(name, s))
	}
}

// handlePurge deletes a queue with its messages: an admin's.
func handlePurge(log *slog.Logger, cfg Config) http.HandlerFunc {
	type response struct {
		Purged int `json:"purged"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := queueTarget(r, cfg)
		if err == nil {
			err = requireAdmin(r, "purge a queue")
		}
		var n int
		if err == nil {
			n, err = cfg.Queues.Purge(r.Context(), ns, name)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, response{Purged: n})
	}
}

// handleQueues lists a namespace's queues with their counts.
func handleQueues(log *slog.Logger, cfg Config) http.HandlerFunc {
	type response struct {
		Queues []queueStats `json:"queues"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, err := namespace(r, cfg)
		if err == nil && cfg.Queues == nil {
			err = errNotConfigured
		}
		var infos []queue.QueueInfo
		if err == nil {
			infos, err = cfg.Queues.Queues(r.Context(), ns, r.URL.Query().Get("prefix"))
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		out := response{Queues: make([]queueStats, len(infos))}
		for i, info := range infos {
			out.Queues[i] = newQueueStats(info.Name, info.Stats)
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// defaultDeadPage is how many dead letters a read without ?limit= gets.
const defaultDeadPage = 100

// handleDeadLetters reads a page of a queue's dead letters.
func handleDeadLetters(log *slog.Logger, cfg Config) http.HandlerFunc {
	type response struct {
		Dead     int           `json:"dead"`
		Messages []messageJSON `json:"messages"`
		Cursor   string        `json:"cursor,omitempty"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := queueTarget(r, cfg)
		q := r.URL.Query()
		limit := defaultDeadPage
		if v := q.Get("limit"); v != "" && err == nil {
			if limit, err = strconv.Atoi(v); err != nil {
				err = fmt.Errorf("%w: limit must be an integer from 1 to %d", errInvalidArgument, queue.MaxDeadPage)
			}
		}
		var msgs []queue.Message
		var total int
		if err == nil {
			msgs, total, err = cfg.Queues.Dead(r.Context(), ns, name, q.Get("cursor"), limit)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		out := response{Dead: total, Messages: make([]messageJSON, len(msgs))}
		for i, m := range msgs {
			out.Messages[i] = newMessageJSON(m)
		}
		if len(msgs) == limit {
			out.Cursor = msgs[len(msgs)-1].ID
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// handleRedrive gives dead letters back to their queue.
func handleRedrive(log *slog.Logger, cfg Config) http.HandlerFunc {
	type request struct {
		IDs   []string `json:"ids"`
		Limit int      `json:"limit"`
	}
	type response struct {
		Redriven int `json:"redriven"`
		Dead     int `json:"dead"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := queueTarget(r, cfg)
		req := request{Limit: queue.MaxDeadPage}
		if err == nil && r.ContentLength != 0 {
			err = decode(r, cfg.MaxDepth, &req)
		}
		var out response
		if err == nil {
			out.Redriven, out.Dead, err = cfg.Queues.Redrive(r.Context(), ns, name, req.IDs, req.Limit)
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// handleDropDead deletes a dead letter.
func handleDropDead(log *slog.Logger, cfg Config) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name, err := queueTarget(r, cfg)
		if err == nil {
			err = cfg.Queues.DropDead(r.Context(), ns, name, chi.URLParam(r, "id"))
		}
		if err != nil {
			writeError(w, r, log, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
