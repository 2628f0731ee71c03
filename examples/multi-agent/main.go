// Command multi-agent is the design document's third example, multi-agent
// coordination: several agents work on one task and share what they know
// under tasks/{task}/agents/{agent}. Those keys deep-merge concurrent
// writes, so two workers reporting on the same agent at once lose nothing:
// objects are merged and lists unioned.
//
//	make run                          # a server on 127.0.0.1:8080
//	go run ./examples/multi-agent     # MEMSYNC_URL picks another server
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
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
		fmt.Fprintln(os.Stderr, "multi-agent:", err)
		os.Exit(1)
	}
}

// AgentData is what an agent shares about its part of the task.
type AgentData struct {
	Role     string   `json:"role,omitempty"`
	Status   string   `json:"status,omitempty"`
	Findings []string `json:"findings,omitempty"`
}

func run(ctx context.Context, baseURL string, out io.Writer) error {
	ns := "example-agents-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	const task = "T1"
	fmt.Fprintf(out, "namespace %s, task %s\n", ns, task)

	// Each agent runs on its own worker and publishes its data at once.
	agents := map[string]AgentData{
		"researcher": {Role: "research", Status: "working", Findings: []string{"spec read"}},
		"coder":      {Role: "implementation", Status: "waiting"},
		"reviewer":   {Role: "review", Status: "waiting"},
	}
	errs := make(chan error, len(agents))
	for id, data := range agents {
		go func() {
			c, err := client.New(baseURL, client.WithWorkerID("worker-"+id), client.WithNamespace(ns))
			if err == nil {
				_, err = c.SyncAgentCoordination(ctx, task, id, data)
			}
			errs <- err
		}()
	}
	for range agents {
		if err := <-errs; err != nil {
			return err
		}
	}

	c1, err := client.New(baseURL, client.WithWorkerID("worker-researcher"), client.WithNamespace(ns))
	if err != nil {
		return err
	}
	list, err := c1.TaskAgents(ctx, task)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%d agents on %s:\n", len(list), task)
	for _, a := range list {
		fmt.Fprintf(out, "  %s: %s\n", a.ID, a.Entry.Value)
	}
	if len(list) != len(agents) {
		return fmt.Errorf("%d agents listed, want %d", len(list), len(agents))
	}

	// Two workers update the researcher's data at the same moment, neither
	// having read the other's write: the writes are concurrent, and the
	// merge strategy keeps both. (A worker's plain write replaces its own
	// earlier one, so the researcher sends its whole state again.)
	c2, err := client.New(baseURL, client.WithWorkerID("worker-helper"), client.WithNamespace(ns))
	if err != nil {
		return err
	}
	updates := []struct {
		c    *client.Client
		data AgentData
	}{
		{c1, AgentData{Role: "research", Status: "done", Findings: []string{"spec read", "API drafted"}}},
		{c2, AgentData{Findings: []string{"benchmarks collected"}}},
	}
	for _, u := range updates {
		go func() {
			_, err := u.c.SyncAgentCoordination(ctx, task, "researcher", u.data)
			errs <- err
		}()
	}
	for range updates {
		if err := <-errs; err != nil {
			return err
		}
	}

	e, err := c2.AgentCoordination(ctx, task, "researcher")
	if err != nil {
		return err
	}
	var merged AgentData
	if err := e.Decode(&merged); err != nil {
		return err
	}
	fmt.Fprintf(out, "researcher after two concurrent writes: %s (strategy %s, %d siblings, conflict %v)\n",
		e.Value, e.Strategy, e.Siblings, e.Conflict)
	for _, f := range []string{"spec read", "API drafted", "benchmarks collected"} {
		if !slices.Contains(merged.Findings, f) {
			return fmt.Errorf("merged findings %v lack %q", merged.Findings, f)
		}
	}
	if merged.Role != "research" || merged.Status != "done" {
		return fmt.Errorf("merged %+v: want role research, status done", merged)
	}
	fmt.Fprintln(out, "nothing was lost: every finding and field survived the merge")

	// The reviewer's data does not exist for another task.
	if _, err := c1.AgentCoordination(ctx, "T2", "reviewer"); !errors.Is(err, client.ErrNotFound) {
		return fmt.Errorf("agent of another task: %v, want not found", err)
	}
	return nil
}
