// Command monitoring is the design document's sixth example, real-time
// monitoring: two workers heartbeat and report the state and progress of
// their tasks while a monitor follows it all as it happens; one worker then
// stops beating (as if it crashed) and the monitor sees it drop out when its
// heartbeat expires.
//
// The monitor polls nothing. It subscribes, as the design document's
//
//	memorySync.subscribe('task-sentinel/tasks/*/state', { onChange })
//
// does, with Watch (GET /v1/watch, Server-Sent Events): one watch of
// tasks/*/state, and one, by regular expression, of the tasks' progress and
// the workers' heartbeats, whose keys the server announces with an "expire"
// event when their TTL runs out. Had events been lost (a reset), the
// monitor would read the state it follows again.
//
//	make run                          # a server on 127.0.0.1:8080
//	go run ./examples/monitoring      # MEMSYNC_URL picks another server
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
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
// renewed every beatInterval; the monitor gives up after patience.
const (
	heartbeatTTL = time.Second
	beatInterval = 200 * time.Millisecond
	patience     = 15 * time.Second
)

var tasks = map[string]string{"worker-1": "T1", "worker-2": "T2"}

func run(ctx context.Context, baseURL string, out io.Writer) error {
	ns := "example-monitoring-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(out, "namespace %s\n", ns)
	c, err := client.New(baseURL, client.WithWorkerID("monitor"), client.WithNamespace(ns))
	if err != nil {
		return err
	}

	// Subscribe before anything happens: Watch returns once the server
	// streams, so no change made after it is missed.
	ctx, cancel := context.WithTimeout(ctx, patience)
	defer cancel()
	states, err := c.Watch(ctx, "tasks/*/state")
	if err != nil {
		return err
	}
	defer states.Close()
	others, err := c.Watch(ctx, "", client.Regex(`^(tasks/[^/]+/progress|workers/[^/]+/heartbeat)$`))
	if err != nil {
		return err
	}
	defer others.Close()

	// The workers: worker-1 stays up to the end; worker-2 stops beating
	// after its task, as if it had crashed.
	errs := make(chan error, len(tasks))
	for _, w := range slices.Sorted(maps.Keys(tasks)) {
		wc, err := client.New(baseURL, client.WithWorkerID(w), client.WithNamespace(ns))
		if err != nil {
			return err
		}
		stopBeats := wc.StartHeartbeat(ctx, beatInterval, client.HeartbeatTTL(heartbeatTTL))
		defer stopBeats()
		go func() {
			err := doTask(ctx, wc, tasks[w])
			if w == "worker-2" {
				stopBeats() // the crash
			}
			errs <- err
		}()
	}

	m := &monitor{c: c, out: out, state: map[string]string{}, progress: map[string]float64{}, active: map[string]bool{}}
	for workersDone := 0; !m.finished() || workersDone < len(tasks); {
		var ev client.Event
		var ok bool
		select {
		case ev, ok = <-states.Events():
		case ev, ok = <-others.Events():
		case err := <-errs:
			if err != nil {
				return err
			}
			workersDone++
			continue
		}
		if !ok { // a watch ended: the time is up, or the server refused it
			err := errors.Join(states.Err(), others.Err())
			return fmt.Errorf("watch ended: %w; state %v, progress %v, active %v", err, m.state, m.progress, m.active)
		}
		if err := m.onChange(ctx, ev); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "monitor: both tasks done; worker-1 active, worker-2 gone")

	// The list of active workers says the same.
	ws, err := c.ActiveWorkers(ctx)
	if err != nil {
		return err
	}
	var ids []string
	for _, w := range ws {
		ids = append(ids, w.ID)
	}
	if !slices.Equal(ids, []string{"worker-1"}) {
		return fmt.Errorf("ActiveWorkers = %v, want [worker-1]", ids)
	}
	fmt.Fprintf(out, "monitor: ActiveWorkers agrees: %v\n", ids)
	return nil
}

// monitor is what the monitor knows, built from the events.
type monitor struct {
	c        *client.Client
	out      io.Writer
	state    map[string]string  // task → status
	progress map[string]float64 // task → percent
	active   map[string]bool    // worker → beating
	sawW2    bool
}

// onChange is the design document's onChange callback, for every watched
// key.
func (m *monitor) onChange(ctx context.Context, ev client.Event) error {
	if ev.Type == client.EventReset {
		fmt.Fprintf(m.out, "monitor: events lost (%s); reading the state again\n", ev.Reason)
		return m.reread(ctx)
	}
	parts := strings.Split(ev.Key, "/")
	switch {
	case parts[0] == "tasks" && parts[2] == "state" && ev.Type == client.EventPut:
		var s struct{ Status string }
		if err := ev.Decode(&s); err != nil {
			return err
		}
		m.state[parts[1]] = s.Status
		fmt.Fprintf(m.out, "monitor: task state changed: %s → %s\n", ev.Key, s.Status)
	case parts[0] == "tasks" && parts[2] == "progress" && ev.Type == client.EventPut:
		var p client.Progress
		if err := ev.Decode(&p); err != nil {
			return err
		}
		m.setProgress(parts[1], p)
	case parts[0] == "workers" && ev.Type == client.EventPut: // a heartbeat
		m.setActive(parts[1], true, "")
	case parts[0] == "workers" && ev.Type == client.EventExpire:
		m.setActive(parts[1], false, " (its heartbeat expired)")
	}
	return nil
}

func (m *monitor) setProgress(task string, p client.Progress) {
	if last, ok := m.progress[task]; !ok || p.Progress != last {
		fmt.Fprintf(m.out, "monitor: %s %g%% %s\n", task, p.Progress, p.Status)
		m.progress[task] = p.Progress
	}
}

func (m *monitor) setActive(worker string, active bool, why string) {
	if m.active[worker] == active {
		return // one more heartbeat
	}
	if active {
		m.active[worker] = true
	} else {
		delete(m.active, worker)
		fmt.Fprintf(m.out, "monitor: %s is no longer active%s\n", worker, why)
	}
	m.sawW2 = m.sawW2 || m.active["worker-2"]
	fmt.Fprintf(m.out, "monitor: active workers [%s]\n", strings.Join(slices.Sorted(maps.Keys(m.active)), " "))
}

// reread replaces what the monitor knows with what the server holds now.
func (m *monitor) reread(ctx context.Context) error {
	ws, err := m.c.ActiveWorkers(ctx)
	if err != nil {
		return err
	}
	now := map[string]bool{}
	for _, w := range ws {
		now[w.ID] = true
		m.setActive(w.ID, true, "")
	}
	for w := range m.active {
		if !now[w] {
			m.setActive(w, false, "")
		}
	}
	for _, task := range tasks {
		e, err := m.c.TaskState(ctx, task)
		switch {
		case errors.Is(err, client.ErrNotFound):
		case err != nil:
			return err
		default:
			var s struct{ Status string }
			if err := e.Decode(&s); err != nil {
				return err
			}
			m.state[task] = s.Status
		}
		e, err = m.c.TaskProgress(ctx, task)
		switch {
		case errors.Is(err, client.ErrNotFound):
		case err != nil:
			return err
		default:
			var p client.Progress
			if err := e.Decode(&p); err != nil {
				return err
			}
			m.setProgress(task, p)
		}
	}
	return nil
}

// finished reports whether the monitor has seen everything happen.
func (m *monitor) finished() bool {
	return m.state["T1"] == "done" && m.state["T2"] == "done" && m.progress["T1"] == 100 && m.progress["T2"] == 100 &&
		m.sawW2 && !m.active["worker-2"] && m.active["worker-1"]
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
