package http

import (
	"fmt"
	"testing"

	"github.com/memsync/memsync/internal/lock"
)

func TestLockErrorsBecomeProblems(t *testing.T) {
	for _, tt := range []struct {
		err    error
		status int
		code   string
	}{
		{lock.ErrClosed, 503, "backend_unavailable"}, // a waiting acquire at shutdown
		{&lock.FullError{Holders: 2}, 409, "semaphore_full"},
		{fmt.Errorf("wrapped: %w", lock.ErrLimitMismatch), 409, "limit_mismatch"},
		{&lock.HeldError{Holder: "w1"}, 409, "lock_held"},
		{lock.ErrNotHeld, 409, "lock_not_held"},
	} {
		if p := problemOf(tt.err); p.Status != tt.status || p.Code != tt.code {
			t.Errorf("problemOf(%v) = %d %s, want %d %s", tt.err, p.Status, p.Code, tt.status, tt.code)
		}
	}
}
