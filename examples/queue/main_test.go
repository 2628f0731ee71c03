package main

import (
	"testing"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	testserver.RunExample(t, run,
		"pending has 4 tasks",
		"queue now: pending [], processing [",
		"each of the 4 tasks was claimed exactly once",
	)
}
