package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/memsync/memsync/internal/keys"
	"github.com/memsync/memsync/internal/redistest"
	"github.com/memsync/memsync/internal/store"
)

// TestShutdownFlushesQueuedWrites streams async writes into a server on a
// real redis-server, cancels run's context (what SIGTERM does in main) in
// the middle of the stream, and then checks Redis itself: every write that
// was answered 202 is there. The queue never flushes on its own here
// (hour-long interval, huge size), so every write reaches Redis through the
// shutdown flush.
func TestShutdownFlushesQueuedWrites(t *testing.T) {
	b := redistest.Real(t) // outlives the server: the test reads it afterwards
	addr := freeAddr(t)
	env := map[string]string{"REDIS_URL": "redis://" + b.Real.Addr}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", addr, "--batch-interval", "1h", "--batch-size", "1000000"},
			func(k string) string { return env[k] }, logs)
	}()
	base := "http://" + addr
	waitHealthy(t, base, done, logs)

	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("stream/w%d/k%d", w, i)
				req, _ := http.NewRequest("PUT", base+"/v1/kv/"+key+"?async=true", strings.NewReader(fmt.Sprintf(`{"value":%d}`, i)))
				req.Header.Set("X-Worker-Id", fmt.Sprintf("w%d", w))
				res, err := client.Do(req)
				if err != nil {
					return // the server is gone: this write was never acknowledged
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				switch res.StatusCode {
				case http.StatusAccepted:
					mu.Lock()
					acked = append(acked, key)
					mu.Unlock()
				case http.StatusServiceUnavailable: // shutting down: not accepted
				default:
					t.Errorf("PUT %s = %d", key, res.StatusCode)
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	cancel() // SIGTERM, while the writers keep going
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not return within 30 s of cancellation\n%s", logs.String())
	}
	close(stop)
	wg.Wait()

	if len(acked) < 20 {
		t.Fatalf("only %d writes were acknowledged; the stream did not run", len(acked))
	}
	missing := 0
	for _, key := range acked {
		fields, err := b.Client.HGetAll(context.Background(), keys.Redis("task-sentinel", key)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if !hasValue(fields, key[strings.LastIndex(key, "/k")+2:]) {
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged write %s is not in Redis (fields %v)", key, fields)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged writes lost\n%s", missing, len(acked), logs.String())
	}
	if !strings.Contains(logs.String(), "flushed queued writes") {
		t.Errorf("the shutdown flush was not logged:\n%s", logs.String())
	}
	t.Logf("%d acknowledged async writes, all in Redis after shutdown", len(acked))
}

// hasValue reports whether a key's hash holds a sibling with value want.
func hasValue(fields map[string]string, want string) bool {
	sibs, _ := store.StoredSiblings(fields)
	for _, env := range sibs {
		if string(env.Value) == want {
			return true
		}
	}
	return false
}

// waitHealthy waits until /healthz answers, or run exits.
func waitHealthy(t *testing.T, base string, done <-chan error, logs *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get(base + "/healthz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		select {
		case err := <-done:
			t.Fatalf("run exited early: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not answer /healthz: %v\n%s", err, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseBatchFlags(t *testing.T) {
	c, err := parseConfig(nil, func(string) string { return "" }, io.Discard)
	if err != nil || c.BatchInterval != 100*time.Millisecond || c.BatchSize != 100 {
		t.Fatalf("defaults: %v %d, %v; want 100ms 100", c.BatchInterval, c.BatchSize, err)
	}
	env := map[string]string{"MEMSYNC_BATCH_INTERVAL": "250", "MEMSYNC_BATCH_SIZE": "7"}
	c, err = parseConfig(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil || c.BatchInterval != 250*time.Millisecond || c.BatchSize != 7 {
		t.Fatalf("environment: %v %d, %v; want 250ms 7", c.BatchInterval, c.BatchSize, err)
	}
	c, err = parseConfig([]string{"--batch-interval", "2s", "--batch-size", "9"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil || c.BatchInterval != 2*time.Second || c.BatchSize != 9 {
		t.Fatalf("flags: %v %d, %v; want 2s 9", c.BatchInterval, c.BatchSize, err)
	}
	for _, args := range [][]string{{"--batch-interval", "0"}, {"--batch-interval", "soon"}, {"--batch-size", "0"}} {
		if _, err := parseConfig(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
