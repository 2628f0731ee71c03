package main

import (
	"testing"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	testserver.RunExample(t, run,
		"3 agents on T1:\n  coder: ",
		"(strategy merge, 2 siblings, conflict true)",
		"nothing was lost",
	)
}
