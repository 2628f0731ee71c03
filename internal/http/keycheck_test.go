package http

// An internal test: checkForKey recognises tasks/{id}/progress without
// splitting the key; it must pick exactly the keys splitting picks.

import (
	"strings"
	"testing"
)

func TestCheckForKeyMatchesSplitting(t *testing.T) {
	for _, key := range []string{
		"tasks/T1/progress", "tasks//progress", "tasks/progress", "tasks/T1/progress/x",
		"tasks/a/b/progress", "task/T1/progress", "tasks/T1/progres", "xtasks/T1/progress",
		"tasks/T1/state", "tasks/T1/xprogress", "tasks/T1/progressx", "progress", "",
	} {
		parts := strings.Split(key, "/")
		want := len(parts) == 3 && parts[0] == "tasks" && parts[2] == "progress"
		if got := checkForKey(key) != nil; got != want {
			t.Errorf("checkForKey(%q) != nil is %v, want %v", key, got, want)
		}
	}
}
