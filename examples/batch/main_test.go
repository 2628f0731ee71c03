package main

import (
	"testing"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	testserver.RunExample(t, run,
		"wrote 100 keys",
		"listed 100 keys under batch/: batch/key-000 … batch/key-099",
		"read back 100 values",
	)
}
