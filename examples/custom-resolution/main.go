// Command custom-resolution is the design document's fifth example, custom
// conflict resolution: two workers write a task's state concurrently; the
// client reads both siblings unresolved (Resolve("siblings")), resolves them
// with its own rule in Go, and writes the result back with the version it
// read as context, which collapses the siblings into one.
//
// The rule here: a task's status only moves forward (pending → running →
// done), so a late "running" from a slow worker must not undo a "done" —
// which is exactly what last-write-wins, the key's own strategy, would do.
//
//	make run                               # a server on 127.0.0.1:8080
//	go run ./examples/custom-resolution    # MEMSYNC_URL picks another server
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/memsync/memsync/client"
)

func main() {
	baseURL := os.Getenv("MEMSYNC_URL")
	if baseURL == "" {
		baseURL = "http://127.0.0.1:8080"
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := run(ctx, baseURL, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "custom-resolution:", err)
		os.Exit(1)
	}
}

// State is a task's state.
type State struct {
	Status string   `json:"status"`
	Notes  []string `json:"notes,omitempty"`
}

// rank orders statuses: a status never moves back.
var rank = map[string]int{"pending": 0, "running": 1, "done": 2}

// resolve is the custom resolver: the most advanced status wins, and every
// sibling's notes are kept. It must be deterministic, since any client may
// run it on the same siblings.
func resolve(siblings []client.Sibling) (State, error) {
	var out State
	for i, s := range siblings {
		var st State
		if err := s.Decode(&st); err != nil {
			return State{}, err
		}
		if i == 0 || rank[st.Status] > rank[out.Status] {
			out.Status = st.Status
		}
		out.Notes = append(out.Notes, st.Notes...)
	}
	return out, nil
}

func run(ctx context.Context, baseURL string, out io.Writer) error {
	ns := "example-resolve-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	const key = "tasks/T1/state"
	fast, err := client.New(baseURL, client.WithWorkerID("worker-fast"), client.WithNamespace(ns))
	if err != nil {
		return err
	}
	slow, err := client.New(baseURL, client.WithWorkerID("worker-slow"), client.WithNamespace(ns))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "namespace %s, key %s\n", ns, key)

	// Neither worker read the other's write first, so the writes are
	// concurrent: both are kept. The slow worker's stale write lands last.
	if _, err := fast.Put(ctx, key, State{Status: "done", Notes: []string{"finished by worker-fast"}}); err != nil {
		return err
	}
	time.Sleep(5 * time.Millisecond) // make the stale write the newer one
	if _, err := slow.Put(ctx, key, State{Status: "running", Notes: []string{"worker-slow still at step 2"}}); err != nil {
		return err
	}

	lww, err := fast.Get(ctx, key)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "the key's own strategy (%s) would say: %s\n", lww.Strategy, lww.Value)

	// Read the siblings unresolved.
	e, err := fast.Get(ctx, key, client.Resolve(client.StrategySiblings))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "siblings: %d (conflict %v, version %v)\n", e.Siblings, e.Conflict, e.Version)
	for _, s := range e.SiblingList {
		fmt.Fprintf(out, "  from %s at %s: %s\n", s.Writer, s.Timestamp.Format("15:04:05.000"), s.Value)
	}
	if e.Siblings != 2 || e.Value != nil {
		return fmt.Errorf("want 2 unresolved siblings, got %d (value %s)", e.Siblings, e.Value)
	}

	resolved, err := resolve(e.SiblingList)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "custom resolver: status %s, notes %q\n", resolved.Status, resolved.Notes)

	// Write the resolution back with the version read as context: it
	// supersedes both siblings. IfMatch makes sure no third write slipped
	// in since the read (if one did, read and resolve again).
	w, err := fast.Put(ctx, key, resolved, client.WithContext(e.Version), client.IfMatch(e.ETag))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote back with context %v: version %v\n", e.Version, w.Version)

	after, err := slow.Get(ctx, key, client.Resolve(client.StrategySiblings))
	if err != nil {
		return err
	}
	var st State
	if err := after.Decode(&st); err != nil {
		return err
	}
	fmt.Fprintf(out, "after write-back: siblings: %d (conflict %v), status %s, notes %s\n",
		after.Siblings, after.Conflict, st.Status, strings.Join(st.Notes, "; "))
	if after.Siblings != 1 || st.Status != "done" || len(st.Notes) != 2 {
		return fmt.Errorf("after the write-back: %d siblings, state %+v", after.Siblings, st)
	}
	return nil
}
