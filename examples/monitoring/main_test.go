package main

import (
	"testing"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	testserver.RunExample(t, run,
		"monitor: active workers [worker-1 worker-2]",
		"monitor: task state changed: tasks/T1/state → running",
		"monitor: T1 100% step 100/100",
		"monitor: T2 100% step 100/100",
		"monitor: task state changed: tasks/T2/state → done",
		"monitor: worker-2 is no longer active (its heartbeat expired)",
		"monitor: active workers [worker-1]",
		"monitor: both tasks done; worker-1 active, worker-2 gone",
		"monitor: ActiveWorkers agrees: [worker-1]",
	)
}
