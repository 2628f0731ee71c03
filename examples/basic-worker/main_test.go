package main

import (
	"strings"
	"testing"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	out := testserver.RunExample(t, run,
		"active workers: 1\n  worker-1 status={\"state\":\"idle\"} capacity={\"slots\":4,\"used\":0}",
		"progress T1: 100% done",
		"task T1: state completed, progress 100% (done)",
	)
	if strings.Contains(out, "heartbeat failed") {
		t.Errorf("a heartbeat failed:\n%s", out)
	}
}
