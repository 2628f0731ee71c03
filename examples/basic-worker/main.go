// Command basic-worker is the design document's first example, basic worker
// coordination: a worker announces itself with heartbeats, publishes its
// status and capacity, shows up among the active workers, and reports the
// state and progress of a task as it works on it.
//
//	make run                          # a server on 127.0.0.1:8080
//	go run ./examples/basic-worker    # MEMSYNC_URL picks another server
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
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
		fmt.Fprintln(os.Stderr, "basic-worker:", err)
		os.Exit(1)
	}
}

// Capacity is what this worker tells others it can take.
type Capacity struct {
	Slots int `json:"slots"`
	Used  int `json:"used"`
}

func run(ctx context.Context, baseURL string, out io.Writer) error {
	// Each run gets its own namespace, so runs never see each other's keys.
	ns := "example-basic-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	const worker, task = "worker-1", "T1"
	c, err := client.New(baseURL, client.WithWorkerID(worker), client.WithNamespace(ns))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "namespace %s, worker %s\n", ns, worker)

	// Heartbeats keep the worker in the active list. The design document
	// beats every 5 s against a 30 s TTL; this example is short, so it beats
	// faster. A failed beat is retried on the next tick.
	stopBeats := c.StartHeartbeat(ctx, 200*time.Millisecond, client.OnHeartbeatError(func(err error) {
		fmt.Fprintln(out, "heartbeat failed (retrying):", err)
	}))
	defer stopBeats()

	if _, err := c.SyncWorkerStatus(ctx, worker, map[string]string{"state": "idle"}); err != nil {
		return err
	}
	if _, err := c.SyncWorkerCapacity(ctx, worker, Capacity{Slots: 4}); err != nil {
		return err
	}
	if err := printWorkers(ctx, c, out); err != nil {
		return err
	}

	// Take a task and report on it as the work goes.
	if _, err := c.SyncWorkerStatus(ctx, worker, map[string]string{"state": "busy", "task": task}); err != nil {
		return err
	}
	if _, err := c.SyncWorkerCapacity(ctx, worker, Capacity{Slots: 4, Used: 1}); err != nil {
		return err
	}
	if _, err := c.SyncTaskState(ctx, task, map[string]string{"status": "running", "worker": worker}); err != nil {
		return err
	}
	for _, step := range []struct {
		pct    float64
		status string
	}{{25, "fetching"}, {60, "processing"}, {100, "done"}} {
		time.Sleep(100 * time.Millisecond) // the work
		e, err := c.SyncTaskProgress(ctx, task, step.pct, step.status)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "progress %s: %g%% %s (version %v)\n", task, step.pct, step.status, e.Version)
	}
	if _, err := c.SyncTaskState(ctx, task, map[string]string{"status": "completed", "worker": worker}); err != nil {
		return err
	}

	// Anyone can read the task back.
	var state map[string]string
	e, err := c.TaskState(ctx, task)
	if err != nil {
		return err
	}
	if err := e.Decode(&state); err != nil {
		return err
	}
	var p client.Progress
	if e, err = c.TaskProgress(ctx, task); err != nil {
		return err
	}
	if err := e.Decode(&p); err != nil {
		return err
	}
	fmt.Fprintf(out, "task %s: state %s, progress %g%% (%s)\n", task, state["status"], p.Progress, p.Status)
	if state["status"] != "completed" || p.Progress != 100 {
		return fmt.Errorf("read back state %v, progress %+v", state, p)
	}

	if _, err := c.SyncWorkerStatus(ctx, worker, map[string]string{"state": "idle"}); err != nil {
		return err
	}
	if _, err := c.SyncWorkerCapacity(ctx, worker, Capacity{Slots: 4}); err != nil {
		return err
	}
	return printWorkers(ctx, c, out)
}

func printWorkers(ctx context.Context, c *client.Client, out io.Writer) error {
	ws, err := c.ActiveWorkers(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "active workers: %d\n", len(ws))
	for _, w := range ws {
		fmt.Fprintf(out, "  %s status=%s capacity=%s heartbeat expires in %v\n",
			w.ID, w.Status, w.Capacity, time.Until(w.ExpiresAt).Round(time.Second))
	}
	if len(ws) != 1 || ws[0].ID != c.WorkerID() {
		return fmt.Errorf("active workers = %v, want just %s", ws, c.WorkerID())
	}
	return nil
}
