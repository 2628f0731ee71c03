// Package api holds the OpenAPI 3.0 document of memsync's HTTP API, the
// machine-readable source of truth for its paths, fields, status codes and
// error codes.
//
// The server serves Spec verbatim at GET /openapi.yaml, and the tests check
// real traffic against it (see internal/spectest), so the document and the
// handlers cannot drift apart unnoticed.
package api

import _ "embed"

// Spec is the OpenAPI document, api/openapi.yaml, in YAML.
//
//go:embed openapi.yaml
var Spec []byte
