package client_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/auth"
	"github.com/memsync/memsync/internal/testserver"
)

// Against a server with tokens: WithToken is what lets a client in, the
// token's worker writes as itself, and the server's refusals arrive as
// ErrUnauthorized and ErrForbidden.
func TestTokenAgainstServer(t *testing.T) {
	tokens, err := auth.Parse(strings.NewReader("w1-token-0123456789ab w1 worker\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv := testserver.StartWith(t, testserver.Options{Tokens: tokens})
	ctx := context.Background()

	anon := mustNew(t, srv.URL)
	if _, err := anon.Get(ctx, "tasks/T1/state"); !errors.Is(err, client.ErrUnauthorized) {
		t.Errorf("Get without a token: %v, want ErrUnauthorized", err)
	}

	w1 := mustNew(t, srv.URL, client.WithToken("w1-token-0123456789ab"))
	e, err := w1.Put(ctx, "tasks/T1/state", map[string]string{"status": "running"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Writer != "w1" {
		t.Errorf("the token's write has writer %q, want w1", e.Writer)
	}
	if _, err := w1.Put(ctx, "workers/w2/status", "idle"); !errors.Is(err, client.ErrForbidden) {
		t.Errorf("Put of another worker's key: %v, want ErrForbidden", err)
	}
}
