package main

import (
	"testing"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	testserver.RunExample(t, run,
		"worker-2: 409 lock_held: held by worker-1",
		"worker-2: acquired after waiting",
		"fence increased: ",
		"holder of tasks/T1: worker-2",
		"refresh with the old token: lock_not_held",
	)
}
