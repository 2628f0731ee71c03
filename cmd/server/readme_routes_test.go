package main

import (
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/memsync/memsync/api"
	"github.com/memsync/memsync/internal/spectest"
)

// The README shows curl for every endpoint: each operation of
// api/openapi.yaml has at least one curl line in it that calls it.
func TestREADMEShowsEveryOperation(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	v := spectest.New(t, api.Spec)
	url := regexp.MustCompile(`localhost:8080(/[^\s'"?]*)`)
	explicit := regexp.MustCompile(`(?:^|\s)-X\s+([A-Z]+)`)
	shown := map[string]bool{} // "METHOD /path/template"
	for _, line := range strings.Split(string(readme), "\n") {
		if !strings.Contains(line, "curl ") {
			continue
		}
		m := url.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		method := "GET"
		if x := explicit.FindStringSubmatch(line); x != nil {
			method = x[1]
		} else if strings.Contains(line, " -d ") {
			method = "POST"
		}
		route, _, err := v.FindRoute(httptest.NewRequest(method, m[1], nil))
		if err != nil {
			continue // a route that is not the API's (a made-up one in an error example)
		}
		shown[method+" "+route.Path] = true
	}
	doc, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		t.Fatal(err)
	}
	operations := 0
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			operations++
			if !shown[method+" "+path] {
				t.Errorf("the README shows no curl for %s %s", method, path)
			}
		}
	}
	if operations < 40 || len(shown) < 40 {
		t.Fatalf("%d operations, %d shown: the parser is probably broken", operations, len(shown))
	}
	if !t.Failed() {
		t.Logf("every one of %d operations has a curl line", operations)
	}
}
