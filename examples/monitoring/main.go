// Command monitoring is the design document's sixth example, real-time
// monitoring: two workers heartbeat and report task progress while a monitor
// watches the active workers and the progress of their tasks; one worker
// then stops beating (as if it crashed) and the monitor sees it drop out when
// its heartbeat expires.
//
// The design document subscribes to changes; memsync's change stream
// (GET /v1/watch, Server-Sent Events) is not built yet, so this monitor
// polls ActiveWorkers and TaskProgress instead and prints what changed.
//
//	make run                          # a server on 127.0.0.1:8080
//	go run ./examples/monitoring      # MEMSYNC_URL picks another server
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
		fmt.Fprintln(os.Stderr, "monitoring:", err)
		os.Exit(1)
	}
}

// Short times, so that the run takes a few seconds: a worker's heartbeat
// lives heartbeatTTL (whole seconds; the server's default is 30 s) and is
// renewed every beatInterval; the monitor polls every pollInterval and gives
// up after patience.
const (
	heartbeatTTL = time.Second
	beatInterval = 200 * time.Millisecond
	pollInterval = 100 * time.Millisecond
	patience     = 15 * time.Second
)

func run(ctx context.Context, baseURL string, out io.Writer) error {
	ns := "example-monitoring-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(out, "namespace %s\n", ns)
	monitor, err := client.New(baseURL, client.WithWorkerID("monitor"), client.WithNamespace(ns))
	if err != nil {
		return err
	}

	// The workers: worker-1 stays up to the end; worker-2 stops beating
	// after its task, as if it had crashed.
	tasks := map[string]string{"worker-1": "T1", "worker-2": "T2"}
	errs := make(chan error, len(tasks))
	for _, w := range []string{"worker-1", "worker-2"} {
		c, err := client.New(baseURL, client.WithWorkerID(w), client.WithNamespace(ns))
		if err != nil {
			return err
		}
		stopBeats := c.StartHeartbeat(ctx, beatInterval, client.HeartbeatTTL(heartbeatTTL))
		defer stopBeats()
		go func() {
			err := doTask(ctx, c, tasks[w])
			if w == "worker-2" {
				stopBeats() // the crash
			}
			errs <- err
		}()
	}

	// The monitor: print what changed, until both tasks are done and
	// worker-2 has dropped out.
	var lastActive []string
	lastProgress := map[string]float64{}
	deadline := time.Now().Add(patience)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for workersDone, sawW2 := 0, false; ; {
		select {
		case err := <-errs:
			if err != nil {
				return err
			}
			workersDone++
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %v: active %v, progress %v", patience, lastActive, lastProgress)
		}

		ws, err := monitor.ActiveWorkers(ctx)
		if err != nil {
			return err
		}
		var active []string
		for _, w := range ws {
			active = append(active, w.ID)
		}
		if !slices.Equal(active, lastActive) {
			fmt.Fprintf(out, "monitor: active workers [%s]\n", strings.Join(active, " "))
			for _, gone := range lastActive {
				if !slices.Contains(active, gone) {
					fmt.Fprintf(out, "monitor: %s is no longer active (its heartbeat expired)\n", gone)
				}
			}
			lastActive = active
		}
		sawW2 = sawW2 || slices.Contains(active, "worker-2")

		for _, task := range []string{"T1", "T2"} {
			e, err := monitor.TaskProgress(ctx, task)
			if errors.Is(err, client.ErrNotFound) {
				continue // not started
			}
			if err != nil {
				return err
			}
			var p client.Progress
			if err := e.Decode(&p); err != nil {
				return err
			}
			if last, ok := lastProgress[task]; !ok || p.Progress != last {
				fmt.Fprintf(out, "monitor: %s %g%% %s\n", task, p.Progress, p.Status)
				lastProgress[task] = p.Progress
			}
		}

		if workersDone == len(tasks) && lastProgress["T1"] == 100 && lastProgress["T2"] == 100 &&
			sawW2 && !slices.Contains(active, "worker-2") && slices.Contains(active, "worker-1") {
			fmt.Fprintln(out, "monitor: both tasks done; worker-1 active, worker-2 gone")
			return nil
		}
	}
}

// doTask stands for a worker's task: it reports its state and progress.
func doTask(ctx context.Context, c *client.Client, task string) error {
	if _, err := c.SyncWorkerStatus(ctx, c.WorkerID(), map[string]string{"state": "busy", "task": task}); err != nil {
		return err
	}
	if _, err := c.SyncTaskState(ctx, task, map[string]string{"status": "running"}); err != nil {
		return err
	}
	for _, pct := range []float64{20, 40, 60, 80, 100} {
		time.Sleep(120 * time.Millisecond) // the work
		if _, err := c.SyncTaskProgress(ctx, task, pct, fmt.Sprintf("step %g/100", pct)); err != nil {
			return err
		}
	}
	_, err := c.SyncTaskState(ctx, task, map[string]string{"status": "done"})
	return err
}
