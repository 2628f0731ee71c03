package http

import "github.com/go-chi/chi/v5"

// Routes exposes the router to the external tests, which check that every
// route is documented in api/openapi.yaml and every documented one served.
func (s *Server) Routes() chi.Routes { return s.router }
