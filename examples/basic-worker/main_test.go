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
		"active workers: 1\n  worker-1 status={\"state\":\"idle\"} capacity={\"slots\":4,\"used\":0}",
		"progress T1: 100% done",
		"task T1: state completed, progress 100% (done)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "heartbeat failed") {
		t.Errorf("a heartbeat failed:\n%s", out.String())
	}
}
