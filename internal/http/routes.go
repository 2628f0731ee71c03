package http

import "net/http"

// routes lists the whole API. Keep it in step with api/openapi.yaml: the
// spec test fails on any route or response the spec does not describe.
func (s *Server) routes() {
	r := s.router
	r.Use(s.recoverer, s.limitBody)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { writeError(w, r, s.log, errRouteNotFound) })
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) { writeError(w, r, s.log, errMethod) })

	r.Get("/healthz", handleHealth())
	r.Get("/readyz", handleReady(s.log, s.store))
	r.Get("/openapi.yaml", handleSpec(s.cfg.Spec))

	r.Get("/v1/kv/*", handleKVGet(s.log, s.cfg, s.store))
	r.Put("/v1/kv/*", handleKVPut(s.log, s.cfg, s.store))
	r.Delete("/v1/kv/*", handleKVDelete(s.log, s.cfg, s.store))
	r.Get("/v1/keys", handleKeys(s.log, s.cfg, s.store))
}
