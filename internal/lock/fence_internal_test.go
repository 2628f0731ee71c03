package lock

import (
	"strconv"
	"testing"
)

// acquireScript takes fenceKeep as text; the two must say the same.
func TestFenceKeepMs(t *testing.T) {
	if fenceKeepMs != strconv.FormatInt(fenceKeep.Milliseconds(), 10) {
		t.Errorf("fenceKeepMs = %s, fenceKeep = %v", fenceKeepMs, fenceKeep)
	}
}
