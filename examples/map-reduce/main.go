// Command map-reduce shows a job done in two phases by a fleet of three
// workers that know nothing of each other but the service: they claim
// chunks of text from a work queue and count their words (the map),
// keeping each chunk's count under the job's keys and the number of chunks
// done in a counter; they meet at a barrier until every worker has
// finished mapping; one of them adds the counts up (the reduce), and all
// meet again before they read the result. One chunk always fails: after
// its two attempts it goes to the queue's dead letters, where an operator
// finds it, rather than being tried forever.
//
//	make run                        # a server on 127.0.0.1:8080
//	go run ./examples/map-reduce    # MEMSYNC_URL picks another server
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
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
		fmt.Fprintln(os.Stderr, "map-reduce:", err)
		os.Exit(1)
	}
}

// chunks is the job's input; the chunk "poison" fails every time.
var chunks = []string{
	"the quick brown fox", "jumps over", "the lazy dog", "poison",
	"a fleet of workers", "shares state", "over plain http", "and json", "backed by redis",
}

const workers = 3

type chunk struct {
	N    int    `json:"n"`
	Text string `json:"text"`
}

func run(ctx context.Context, baseURL string, out io.Writer) error {
	ns := "example-mr-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Fprintf(out, "namespace %s\n", ns)
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}
	fleet := make([]*client.Client, workers)
	for i := range fleet {
		c, err := client.New(baseURL, client.WithWorkerID(fmt.Sprintf("w%d", i+1)), client.WithNamespace(ns), client.WithRetries(2))
		if err != nil {
			return err
		}
		fleet[i] = c
	}
	// Each chunk gets two attempts; sent again under its idempotency key
	// (a lost answer), an enqueue adds nothing.
	for i, text := range chunks {
		if _, err := fleet[0].Enqueue(ctx, "chunks", chunk{N: i + 1, Text: text},
			client.EnqueueOptions{MaxAttempts: 2, IdempotencyKey: fmt.Sprint("chunk-", i+1)}); err != nil {
			return err
		}
	}

	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for _, c := range fleet {
		wg.Go(func() { errs <- work(ctx, c, say) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}

	done, err := fleet[0].Counter(ctx, "jobs/J1/done")
	if err != nil {
		return err
	}
	say("chunks done: %d (counter jobs/J1/done)", done.Value)
	dead, err := fleet[0].DeadLetters(ctx, "chunks", "", 10)
	if err != nil {
		return err
	}
	for _, m := range dead.Messages {
		var c chunk
		if err := m.Decode(&c); err != nil {
			return err
		}
		say("dead letter: chunk %d (%q) after %d attempts, the last by %s", c.N, c.Text, m.Attempts, m.Owner)
	}
	return nil
}

// work is one worker: map until the queue is empty, meet the others, and
// reduce if first in line.
func work(ctx context.Context, c *client.Client, say func(string, ...any)) error {
	me := c.WorkerID()
	for {
		msgs, err := c.Claim(ctx, "chunks", client.ClaimOptions{Visibility: 5 * time.Second, Wait: 300 * time.Millisecond})
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			break // every chunk is done, dead, or in another worker's hands
		}
		m := msgs[0]
		var ch chunk
		if err := m.Decode(&ch); err != nil {
			return err
		}
		if ch.Text == "poison" {
			say("%s: chunk %d fails (attempt %d of %d)", me, ch.N, m.Attempts, m.MaxAttempts)
			if err := m.Release(ctx, 0); err != nil {
				return err
			}
			continue
		}
		if _, err := c.Put(ctx, fmt.Sprintf("jobs/J1/partial/c%d", ch.N), len(strings.Fields(ch.Text))); err != nil {
			return err
		}
		// Keyed by chunk: a count sent again is not counted twice.
		if _, err := c.Increment(ctx, "jobs/J1/done", 1, client.IdempotencyKey(fmt.Sprint("chunk-", ch.N))); err != nil {
			return err
		}
		if err := m.Ack(ctx); err != nil && !errors.Is(err, client.ErrNotClaimed) {
			return err
		}
	}

	// The map is over for this worker; the reduce waits for all of them.
	mapped, err := c.Arrive(ctx, "jobs/J1/mapped", workers, client.BarrierOptions{Wait: 20 * time.Second})
	if err != nil {
		return err
	}
	if !mapped.Tripped {
		return fmt.Errorf("%s: the other workers did not finish mapping in time (%v arrived)", me, mapped.Arrived)
	}
	if me == mapped.Arrived[0] {
		say("all %d workers passed barrier jobs/J1/mapped, generation %d; %s reduces", len(mapped.Arrived), mapped.Generation, me)
		partials, err := c.Entries(ctx, "jobs/J1/partial/")
		if err != nil {
			return err
		}
		total := 0
		for _, e := range partials {
			var n int
			if err := json.Unmarshal(e.Value, &n); err != nil {
				return err
			}
			total += n
		}
		if _, err := c.Put(ctx, "jobs/J1/result", map[string]int{"chunks": len(partials), "words": total}); err != nil {
			return err
		}
	}
	if _, err := c.Arrive(ctx, "jobs/J1/reduced", workers, client.BarrierOptions{Wait: 20 * time.Second}); err != nil {
		return err
	}
	result, err := c.Get(ctx, "jobs/J1/result", client.Consistent())
	if err != nil {
		return err
	}
	say("%s reads the result: %s", me, result.Value)
	return nil
}
