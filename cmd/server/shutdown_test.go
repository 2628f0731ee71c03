package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A shutdown does not wait for requests that would otherwise wait on: a
// watch stream ends, a blocking read is answered with the key as it is
// (404 here), and a lock request waiting for a held lock, a claim
// waiting on an empty queue and an arrival waiting at a barrier are
// answered 503 (try another instance), all at
// once rather than at their clients' leisure or after wait_ms; run then
// returns.
func TestShutdownEndsWaitingRequests(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--addr", addr}, func(string) string { return "" }, logs) }()
	base := "http://" + addr
	waitHealthy(t, base, done, logs)

	type answer struct {
		what   string
		status int
		err    error
	}
	held, err := http.Post(base+"/v1/locks/jobs/L1", "application/json", strings.NewReader(`{"ttl_ms":60000}`))
	if err != nil || held.StatusCode != 200 {
		t.Fatalf("lock: %v %v", held, err)
	}
	held.Body.Close()
	posts := map[string][2]string{
		"waiting lock request": {"/v1/locks/jobs/L1", `{"ttl_ms":60000,"wait_ms":60000}`},
		"waiting claim":        {"/v1/queues/jobs/claim", `{"visibility_ms":60000,"wait_ms":60000}`},
		"waiting arrival":      {"/v1/barriers/jobs/B1", `{"parties":2,"wait_ms":60000,"party":"w1"}`},
	}
	answers := make(chan answer, 2+len(posts))
	for what, p := range posts {
		go func() {
			res, err := http.Post(base+p[0], "application/json", strings.NewReader(p[1]))
			if err != nil {
				answers <- answer{what, 0, err}
				return
			}
			res.Body.Close()
			answers <- answer{what, res.StatusCode, nil}
		}()
	}
	open := make(chan struct{}, 2)
	for what, path := range map[string]string{
		"watch stream":  "/v1/watch?pattern=jobs/**",
		"blocking read": "/v1/kv/jobs/J1/result?wait_ms=60000",
	} {
		go func() {
			res, err := http.Get(base + path)
			if err != nil {
				answers <- answer{what, 0, err}
				return
			}
			defer res.Body.Close()
			if what == "watch stream" {
				open <- struct{}{}
				_, err = io.Copy(io.Discard, res.Body) // until the stream ends
			}
			answers <- answer{what, res.StatusCode, err}
		}()
	}
	<-open
	time.Sleep(200 * time.Millisecond) // the blocking read waits by now
	stopped := time.Now()
	cancel()
	for range 2 + len(posts) {
		select {
		case a := <-answers:
			want := map[string]int{"watch stream": 200, "blocking read": 404, "waiting lock request": 503, "waiting claim": 503, "waiting arrival": 503}[a.what]
			if a.err != nil || a.status != want {
				t.Errorf("%s at shutdown: %d, %v; want %d", a.what, a.status, a.err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a waiting request still open 10 s after the shutdown began\n%s", logs)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10 s of the shutdown")
	}
	t.Logf("all ended, and run returned, %v after the shutdown began", time.Since(stopped).Round(time.Millisecond))
}
