package main

import (
	"testing"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	testserver.RunExample(t, run,
		`the key's own strategy (lww) would say: {"status":"running"`,
		"siblings: 2 (conflict true",
		"custom resolver: status done",
		"after write-back: siblings: 1 (conflict false), status done",
	)
}
