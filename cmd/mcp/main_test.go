package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/memsync/memsync/client"
	"github.com/memsync/memsync/internal/testserver"
)

// run serves an MCP host over its stdin and stdout: the host's client
// initializes, calls a tool, and closing stdin ends the session (run
// returns nil, and the agent's lock is released). The agent beats as a
// worker meanwhile, named by MEMSYNC_WORKER_ID.
func TestRunServesAnMCPHostOnStdio(t *testing.T) {
	srv := testserver.Start(t)
	ctx := context.Background()
	hostOut, serverIn := io.Pipe() // what the host writes, the server reads
	serverOut, hostIn := io.Pipe()
	env := map[string]string{"MEMSYNC_URL": srv.URL, "MEMSYNC_WORKER_ID": "agent-9", "MEMSYNC_HEARTBEAT": "200ms"}
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, nil, hostOut, hostIn, &stderr, func(k string) string { return env[k] })
	}()
	session, err := mcp.NewClient(&mcp.Implementation{Name: "test-host"}, nil).Connect(ctx,
		&mcp.IOTransport{Reader: serverOut, Writer: serverIn}, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "lock_acquire", Arguments: map[string]any{"name": "jobs/nightly", "ttl_ms": 60000}})
	if err != nil || res.IsError {
		t.Fatalf("lock_acquire = %+v, %v", res, err)
	}
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ws, err := c.ActiveWorkers(ctx)
		if err == nil && len(ws) == 1 && ws[0].ID == "agent-9" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("active workers %v, %v; want agent-9 beating", ws, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if holder, err := c.LockHolder(ctx, "jobs/nightly"); err != nil || holder.Owner != "agent-9" {
		t.Fatalf("holder = %+v, %v", holder, err)
	}
	session.Close() // the host goes: stdin closes
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v (stderr %s)", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the host closed stdin")
	}
	if _, err := c.LockHolder(ctx, "jobs/nightly"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("lock after the session ended: %v, want released", err)
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"--heartbeat", "soon"}, io.NopCloser(strings.NewReader("")), nopWriter{}, &stderr,
		func(string) string { return "" })
	if err == nil || !strings.Contains(stderr.String(), "heartbeat") {
		t.Fatalf("run with a bad flag = %v (stderr %q)", err, stderr.String())
	}
}

type nopWriter struct{}

func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (nopWriter) Close() error                { return nil }
