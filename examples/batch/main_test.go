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
		"wrote 100 keys",
		"listed 100 keys under batch/: batch/key-000 … batch/key-099",
		"read back 100 values",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
