package http

import (
	"context"
	"log/slog"
	"net/http"
	"time"
)

// readyTimeout bounds the Redis ping of /readyz.
const readyTimeout = time.Second

func handleHealth() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

// handleReady answers 200 while Redis answers, 503 backend_unavailable
// otherwise, so a load balancer takes the instance out until Redis is back.
func handleReady(log *slog.Logger, st interface{ Ping(context.Context) error }) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		if err := st.Ping(ctx); err != nil {
			writeError(w, r, log, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

func handleSpec(spec []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(spec)
	}
}

// handleMetrics serves the Prometheus exposition.
func handleMetrics(log *slog.Logger, h http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h == nil {
			writeError(w, r, log, errRouteNotFound)
			return
		}
		h.ServeHTTP(w, r)
	}
}

// handleStats answers the seed's getMetrics() snapshot.
func handleStats(log *slog.Logger, stats func() any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if stats == nil {
			writeError(w, r, log, errRouteNotFound)
			return
		}
		writeJSON(w, http.StatusOK, stats())
	}
}
