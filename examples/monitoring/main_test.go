package main

import (
	"testing"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	testserver.RunExample(t, run,
		"monitor: active workers [worker-1 worker-2]",
		"monitor: T1 100% step 100/100",
		"monitor: T2 100% step 100/100",
		"monitor: worker-2 is no longer active (its heartbeat expired)",
		"monitor: both tasks done",
	)
}
