package main

import (
	"testing"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	testserver.RunExample(t, run,
		"worker-1 claimed message 0000000000000001, then crashed",
		"6 tasks done by worker-2 and worker-3; T1 on attempt 2; worker-1's late ack: not_claimed",
		"worker-3: 409 semaphore_full: 2 holders",
		"worker-3: permit after waiting",
		"15 calls by 3 workers, at most 2 at once",
		"worker-1 claimed T1",
		"tasks/T1/claim deleted",
		"worker-2 claimed T1",
	)
}
