package main

import (
	"testing"

	"github.com/memsync/memsync/internal/testserver"
)

func TestRun(t *testing.T) {
	testserver.RunExample(t, run,
		"all 3 workers passed barrier jobs/J1/mapped, generation 0; w1 reduces",
		"w1 reads the result: {\"chunks\":8,\"words\":23}",
		"w2 reads the result: {\"chunks\":8,\"words\":23}",
		"w3 reads the result: {\"chunks\":8,\"words\":23}",
		"chunks done: 8 (counter jobs/J1/done)",
		"dead letter: chunk 4 (\"poison\") after 2 attempts, the last by w",
	)
}
