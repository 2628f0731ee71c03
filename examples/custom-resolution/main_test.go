package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	srv := testserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, srv.URL, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	for _, want := range []string{
		`the key's own strategy (lww) would say: {"status":"running"`,
		"siblings: 2 (conflict true",
		"custom resolver: status done",
		"after write-back: siblings: 1 (conflict false), status done",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
