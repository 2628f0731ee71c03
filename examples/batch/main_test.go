package main

import (
	"testing"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	testserver.RunExample(t, run,
		"queued 100 writes",
		"synced: every queued write is in Redis",
		"listed 100 keys under batch/: batch/key-000 … batch/key-099",
		"read back 100 values",
		"batch of 100 puts in one request",
		"100 × 200; batch/key-000 at version map[batch-writer:2] … batch/key-099 at version map[batch-writer:2]",
		"atomic batch refused: 412 precondition_failed at op 1; nothing applied (batch/key-000 unchanged)",
	)
}
